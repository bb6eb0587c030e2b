//! The binary's one-shot commands on a fixture host tree: plan writes nothing, apply journals and
//! applies, restore puts everything back; errors exit non-zero with the reason.

use fastvirt_agent::fixture::{self, FixtureSpec};
use std::path::Path;
use std::process::{Command, Output};

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fastvirt-agent"))
        .args(args)
        .env_remove("FASTVIRT_HOST_ROOT")
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("the agent binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const PROFILE: &str = "apiVersion: fastvirt.io/v1alpha1
kind: NodeTuningProfile
metadata: {name: cli}
spec:
  cpu: {reserved: '0,32', isolated: '1-31,33-63'}
  ksm: {enabled: true}
  sysctls: {vm.swappiness: '10'}
  kernelArgs: [nohz_full=1-31]
";

fn setup() -> (tempfile::TempDir, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("host");
    fixture::write_host(&root, &FixtureSpec::two_socket_64_cpus()).unwrap();
    // The binary writes the tree as plain files: no managed IRQs and no kernel choice files (THP)
    // here; FixtureFs models those for the library tests.
    let profile = dir.path().join("profile.yaml");
    std::fs::write(&profile, PROFILE).unwrap();
    let root = root.to_string_lossy().into_owned();
    let profile = profile.to_string_lossy().into_owned();
    (dir, root, profile)
}

fn swappiness(root: &str) -> String {
    std::fs::read_to_string(Path::new(root).join("proc/sys/vm/swappiness"))
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn plan_prints_changes_and_reboot_needs_without_writing() {
    let (_dir, root, profile) = setup();
    let out = agent(&["plan", "--profile", &profile, "--host-root", &root]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.contains("sysctl vm.swappiness"), "{table}");
    assert!(
        table.contains(
            "Reboot required: kernel arguments missing from /proc/cmdline:\n  - nohz_full=1-31"
        ),
        "{table}"
    );
    assert!(
        table.contains("/etc/sysctl.d/99-local.conf sets 30"),
        "{table}"
    );
    assert_eq!(swappiness(&root), "60");

    let json = agent(&[
        "plan",
        "--profile",
        &profile,
        "--host-root",
        &root,
        "--output",
        "json",
    ]);
    let plan: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON plan");
    assert!(
        plan["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["setting"] == "ksm run" && c["desired"] == "1")
    );
    assert_eq!(plan["missingKernelArgs"][0], "nohz_full=1-31");
}

#[test]
fn apply_then_restore_round_trips() {
    let (_dir, root, profile) = setup();
    let out = agent(&["apply", "--profile", &profile, "--host-root", &root]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("Applied and verified"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(swappiness(&root), "10", "{}", text(&out.stdout));
    assert!(
        Path::new(&root)
            .join("var/lib/fastvirt/agent/journal.json")
            .exists()
    );
    let out = agent(&["restore", "--host-root", &root]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(swappiness(&root), "60");
    assert!(
        !Path::new(&root)
            .join("var/lib/fastvirt/agent/journal.json")
            .exists(),
        "an empty journal is removed"
    );
}

#[test]
fn refusals_exit_non_zero_with_the_reason() {
    let (dir, root, _) = setup();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "cpu: {reserved: '0', isolated: '64-65'}\n").unwrap();
    let out = agent(&[
        "apply",
        "--profile",
        &bad.to_string_lossy(),
        "--host-root",
        &root,
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("cpu.isolated names CPUs 64-65 that are not online"),
        "{}",
        text(&out.stderr)
    );
    let out = agent(&["run"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--node-name"),
        "the node name is required: {}",
        text(&out.stderr)
    );
}

#[test]
fn a_misspelt_profile_field_is_refused_with_the_closest_name() {
    let (dir, root, _) = setup();
    // A manifest: the path starts at the document (`spec.`).
    let manifest = dir.path().join("thp.yaml");
    std::fs::write(
        &manifest,
        "apiVersion: fastvirt.io/v1alpha1\nkind: NodeTuningProfile\nmetadata: {name: thp}\nspec:\n  transparentHugepage: never\n",
    )
    .unwrap();
    let out = agent(&[
        "plan",
        "--profile",
        &manifest.to_string_lossy(),
        "--host-root",
        &root,
    ]);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains(
            "unknown field `spec.transparentHugepage`; did you mean `transparentHugepages`?"
        ),
        "{}",
        text(&out.stderr)
    );
    // A bare spec, given to apply: refused before anything is written.
    let spec = dir.path().join("spec.yaml");
    std::fs::write(
        &spec,
        "sysctls: {vm.swappiness: '10'}\nksm: {enabld: true}\n",
    )
    .unwrap();
    let out = agent(&[
        "apply",
        "--profile",
        &spec.to_string_lossy(),
        "--host-root",
        &root,
    ]);
    assert!(!out.status.success(), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("unknown field `ksm.enabld`; did you mean `enabled`?"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(swappiness(&root), "60");
}
