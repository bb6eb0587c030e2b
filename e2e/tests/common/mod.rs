//! Shared by the end-to-end tests: host checks and the driver binary.
#![allow(dead_code)]

use fastvirt_e2e::cluster::{self, kubectl::Kubectl};
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
    kubectl: &Kubectl,
    what: &str,
    secs: u64,
    check: impl FnMut() -> anyhow::Result<Option<T>>,
) -> T {
    kubectl
        .wait_for(what, std::time::Duration::from_secs(secs), check)
        .unwrap_or_else(|e| panic!("{e:#}"))
}

/// The namespace the cluster tests' claims and pods live in.
pub const TEST_NS: &str = "fastvirt-test";

/// Why this machine cannot run a cluster test, if it cannot.
pub fn cluster_skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root (network namespace, mounts, loop devices)".into());
    }
    let Some(dir) = std::env::var_os("FASTVIRT_KUBE_BIN") else {
        return Some("FASTVIRT_KUBE_BIN is not set: run scripts/install-kube.sh and set it to the directory it prints (scripts/test.sh does both)".into());
    };
    if !Path::new(&dir).join("kube-apiserver").is_file() {
        return Some(format!(
            "{} has no kube-apiserver",
            Path::new(&dir).display()
        ));
    }
    skip_reason(&["containerd", "runc", "iptables", "nsenter"])
}

/// A pod in the test namespace running `script` in the toolbox image with the claim at
/// /data (Filesystem) or /dev/xvda (Block).
pub fn pod(name: &str, claim: &str, block: bool, script: &str) -> String {
    placed_pod(name, claim, block, script, "")
}

/// [`pod`] with more lines of pod spec (`placement`: tolerations, affinity), two-space indented.
pub fn placed_pod(name: &str, claim: &str, block: bool, script: &str, placement: &str) -> String {
    let attach = if block {
        "      volumeDevices:\n        - name: data\n          devicePath: /dev/xvda\n"
    } else {
        "      volumeMounts:\n        - name: data\n          mountPath: /data\n"
    };
    let script = serde_json::to_string(script).unwrap();
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {TEST_NS}
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
{placement}  containers:
    - name: main
      image: {toolbox}
      imagePullPolicy: Never
      command: [sh, -c, {script}]
{attach}  volumes:
    - name: data
      persistentVolumeClaim:
        claimName: {claim}
",
        toolbox = cluster::TOOLBOX_IMAGE
    )
}

pub fn pvc(name: &str, class: &str, block: bool, size: &str, source: Option<&str>) -> String {
    let mode = if block { "Block" } else { "Filesystem" };
    let source = source
        .map(|s| {
            format!("  dataSource:\n    apiGroup: snapshot.storage.k8s.io\n    kind: VolumeSnapshot\n    name: {s}\n")
        })
        .unwrap_or_default();
    format!(
        "apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {name}
  namespace: {TEST_NS}
spec:
  storageClassName: {class}
  volumeMode: {mode}
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: {size}
{source}"
    )
}

pub fn pod_phase(kubectl: &Kubectl, name: &str) -> anyhow::Result<String> {
    let pod = kubectl.get_json(&["pod", name, "-n", TEST_NS])?;
    Ok(pod["status"]["phase"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// Deletes every VolumeSnapshot and claim of the test namespace and waits until every
/// PersistentVolume is gone: their volumes are deleted.
pub fn delete_snapshots_and_claims(kubectl: &Kubectl) {
    kubectl
        .run(&[
            "delete",
            "volumesnapshot",
            "--all",
            "-n",
            TEST_NS,
            "--wait=true",
        ])
        .expect("snapshots deleted");
    kubectl
        .run(&["delete", "pvc", "--all", "-n", TEST_NS, "--wait=true"])
        .expect("claims deleted");
    wait(kubectl, "every PV gone", 180, || {
        let pvs = kubectl.get_json(&["pv"])?;
        Ok(pvs["items"]
            .as_array()
            .is_some_and(|i| i.is_empty())
            .then_some(()))
    });
}

/// The volume images (`*.img`) in a pool directory.
pub fn volume_files(pool_dir: &Path) -> usize {
    std::fs::read_dir(pool_dir)
        .map(|dir| {
            dir.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "img"))
                .count()
        })
        .unwrap_or(0)
}
