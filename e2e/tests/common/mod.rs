//! Shared by the end-to-end tests: host checks and the driver binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// Why this machine cannot run the test, if it cannot.
pub fn skip_reason(tools: &[&str]) -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root for loop devices and mounts".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no /dev/loop-control on this machine".into());
    }
    for tool in tools {
        if Command::new(tool).arg("--version").output().is_err() {
            return Some(format!(
                "{tool} is not installed (scripts/install-deps.sh installs it)"
            ));
        }
    }
    None
}

/// The driver binary of this workspace, built if `cargo test` did not build it already.
pub fn driver_binary() -> PathBuf {
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "-p",
            "fastvirt-csi",
            "--bin",
            "fastvirt-csi",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success());
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_fastvirt-bench"));
    bench.parent().unwrap().join("fastvirt-csi")
}

/// Runs the `fastvirt-cluster` binary of this build.
pub fn cluster_binary(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fastvirt-cluster"))
        .args(args)
        .output()
        .expect("fastvirt-cluster runs")
}

/// Takes the cluster in this work directory down however the test ends.
pub struct Down(pub PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let out = cluster_binary(&["down", "--workdir", &self.0.to_string_lossy()]);
        if !out.status.success() {
            eprintln!(
                "fastvirt-cluster down failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Waits for `check` to return `Some`, at most `secs`; panics with what was awaited.
pub fn wait<T>(
    kubectl: &fastvirt_e2e::cluster::kubectl::Kubectl,
    what: &str,
    secs: u64,
    check: impl FnMut() -> anyhow::Result<Option<T>>,
) -> T {
    kubectl
        .wait_for(what, std::time::Duration::from_secs(secs), check)
        .unwrap_or_else(|e| panic!("{e:#}"))
}
