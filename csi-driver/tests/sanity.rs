//! The peer conformance suite, csi-sanity (the release `scripts/install-kube.sh` builds), against
//! the real `fastvirt-csi` in both access types: zero failures, and only specs for capabilities the
//! driver does not advertise may be skipped. The mount-mode suite runs on xfs volumes (a StorageClass
//! `fsType` parameter): growing ext4 online needs CAP_SYS_RESOURCE, which some sandboxes remove, and
//! `conformance.rs` covers that refusal on its own.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Specs csi-sanity may skip, and why: each needs a capability fastvirt does not advertise.
const NOT_OFFERED: &[(&str, &str)] = &[
    (
        "GroupController",
        "GROUP_CONTROLLER_SERVICE (volume group snapshots)",
    ),
    ("GetSnapshot", "GET_SNAPSHOT"),
    (
        "VolumeHealth",
        "GET_VOLUME / VOLUME_CONDITION on the controller",
    ),
    ("StorageHealth", "node storage health"),
    (
        "ControllerPublishVolume",
        "PUBLISH_UNPUBLISH_VOLUME: node-local volumes need no attach",
    ),
    ("ControllerUnpublishVolume", "PUBLISH_UNPUBLISH_VOLUME"),
    ("volume lifecycle", "PUBLISH_UNPUBLISH_VOLUME"),
    (
        "with accessibility requirements",
        "SNAPSHOT_ACCESSIBILITY_CONSTRAINTS",
    ),
    // Marked pending (XIt) upstream as fragile, so never run.
    (
        "should detect volumes added between pages",
        "pending upstream",
    ),
];

/// The csi-sanity binary, from `FASTVIRT_KUBE_BIN` (scripts/test.sh sets it).
fn csi_sanity() -> Option<PathBuf> {
    let dir = std::env::var_os("FASTVIRT_KUBE_BIN")?;
    let binary = Path::new(&dir).join("csi-sanity");
    binary.is_file().then_some(binary)
}

/// Spec names ginkgo reports as skipped, from its JUnit report.
fn skipped_specs(junit: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(junit).unwrap_or_default();
    text.split("<testcase ")
        .skip(1)
        .filter(|case| {
            let end = case.find("</testcase>").unwrap_or(case.len());
            case[..end].contains("<skipped")
        })
        .filter_map(|case| {
            let start = case.find("name=\"")? + 6;
            let end = case[start..].find('"')? + start;
            Some(case[start..end].to_owned())
        })
        .collect()
}

async fn run_suite(name: &str, access_type: &str, parameters: &str) {
    require_host!();
    let Some(sanity) = csi_sanity() else {
        eprintln!(
            "SKIP {name}: csi-sanity is not built; run scripts/install-kube.sh and set FASTVIRT_KUBE_BIN to the directory it prints (scripts/test.sh does both)"
        );
        return;
    };
    let env = TestEnv::start(name).await;
    let params = env.path("parameters.yaml");
    std::fs::write(&params, parameters).unwrap();
    // What a VolumeAttributesClass gives: I/O limits, the driver's mutable parameters.
    let mutable = env.path("mutable-parameters.yaml");
    std::fs::write(&mutable, "readIOPS: \"2000\"\nwriteBPS: \"104857600\"\n").unwrap();
    let junit = env.path("junit.xml");
    let output = Command::new(&sanity)
        .arg(format!(
            "-csi.endpoint=unix://{}",
            env.driver.args().socket.display()
        ))
        .arg(format!("-csi.stagingdir={}", env.path("staging").display()))
        .arg(format!("-csi.mountdir={}", env.path("mount").display()))
        .arg(format!("-csi.testvolumeparameters={}", params.display()))
        .arg(format!("-csi.testvolumeaccesstype={access_type}"))
        .arg(format!(
            "-csi.testvolumemutableparameters={}",
            mutable.display()
        ))
        // xfs refuses devices under 300 MiB.
        .arg("-csi.testvolumesize=536870912")
        .arg("-csi.testvolumeexpandsize=1073741824")
        .arg(format!("-ginkgo.junit-report={}", junit.display()))
        .arg("-ginkgo.timeout=20m")
        .arg("-ginkgo.no-color")
        .output()
        .expect("csi-sanity runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let summary: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("Passed") && l.contains("Failed") || l.starts_with("Ran "))
        .collect();
    eprintln!("csi-sanity {access_type}: {}", summary.join(" | "));
    let skipped = skipped_specs(&junit);
    for spec in &skipped {
        eprintln!("  skipped: {spec}");
    }
    assert!(
        output.status.success() && summary.iter().any(|l| l.contains(" 0 Failed")),
        "csi-sanity ({access_type}) failed:\n{}\n{}\ndriver log:\n{}",
        stdout,
        String::from_utf8_lossy(&output.stderr),
        env.log()
    );
    // What the driver does not offer may be skipped; everything it offers must run.
    let unexplained: Vec<&String> = skipped
        .iter()
        .filter(|spec| !NOT_OFFERED.iter().any(|(marker, _)| spec.contains(marker)))
        .collect();
    assert!(
        unexplained.is_empty(),
        "specs skipped although the driver offers what they test: {unexplained:?}"
    );
}

#[tokio::test]
async fn csi_sanity_mount_volumes_on_xfs() {
    run_suite("sanity-mount", "mount", "fsType: xfs\nthin: \"true\"\n").await;
}

#[tokio::test]
async fn csi_sanity_block_volumes() {
    run_suite("sanity-block", "block", "thin: \"true\"\n").await;
}
