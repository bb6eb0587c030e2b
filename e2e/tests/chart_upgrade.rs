//! An upgrade of the chart and every image in a real cluster, as docs/install.md tells a platform
//! team to do it. The cluster starts with the previous release (the commit in
//! `scripts/previous-release.env`: its chart, CRDs and binaries, built from git history by
//! `scripts/build-previous-release.sh`, found through `FASTVIRT_PREVIOUS_RELEASE`). With it: a
//! BlockPool, a Block and a Filesystem claim, each used by a pod that keeps writing, and a
//! VolumeSnapshot. Then `fastvirt-cluster upgrade` imports this build's images under a new tag,
//! applies the new CRDs and runs `helm upgrade` with this checkout's chart.
//!
//! Afterwards every fastvirt pod runs the new images, the writing pods were never restarted and
//! keep writing, the pool is Ready under the new operator, the old snapshot restores with its data,
//! a new claim works, and deleting everything leaves no volume file in the pool. Needs root, the
//! reference components and the previous release; skips with the reason otherwise.

mod common;

use common::{
    Down, TEST_NS, cluster_binary, cluster_skip_reason, delete_snapshots_and_claims, pod,
    pod_phase, pvc, volume_files, wait,
};
use fastvirt_e2e::cluster::kubectl::Kubectl;
use fastvirt_e2e::cluster::{self, State};
use serde_json::Value;
use std::path::{Path, PathBuf};

const POOL: &str = "upgrade";
const PREVIOUS_TAG: &str = "previous";
const NEW_TAG: &str = "upgraded";

fn previous_release() -> Result<PathBuf, String> {
    let dir = std::env::var_os("FASTVIRT_PREVIOUS_RELEASE")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .ok_or("FASTVIRT_PREVIOUS_RELEASE is not set or empty: run scripts/build-previous-release.sh and set it to the directory it prints (scripts/test.sh does both; it prints nothing when this clone's history lacks the release)")?;
    for needed in [
        "fastvirt-csi",
        "fastvirt-operator",
        "fastvirt-agent",
        "repo/charts/fastvirt/Chart.yaml",
    ] {
        if !dir.join(needed).is_file() {
            return Err(format!(
                "{} has no {needed}: run scripts/build-previous-release.sh",
                dir.display()
            ));
        }
    }
    Ok(dir)
}

fn apply(kubectl: &Kubectl, manifest: &str) {
    kubectl
        .apply(manifest)
        .unwrap_or_else(|e| panic!("applying:\n{manifest}\n{e:#}"));
}

/// A pod that writes an increasing counter to its claim every second and prints each value.
fn writer(name: &str, claim: &str, block: bool) -> String {
    let write = if block {
        "echo $i > /tmp/c && dd if=/tmp/c of=/dev/xvda bs=4096 conv=sync,fsync 2>/dev/null && dd if=/dev/xvda bs=4096 count=1 2>/dev/null | head -n 1"
    } else {
        "echo $i > /data/counter && sync && cat /data/counter"
    };
    pod(
        name,
        claim,
        block,
        &format!("i=0; while true; do i=$((i+1)); {write}; sleep 1; done"),
    )
}

/// The last counter value a writer pod printed.
fn counter(kubectl: &Kubectl, pod: &str) -> anyhow::Result<u64> {
    let logs = kubectl.run(&["logs", pod, "-n", TEST_NS, "--tail=1"])?;
    Ok(logs.trim().trim_matches('\0').parse()?)
}

/// `(uid, restarts)` of a pod: both stay the same while it keeps running.
fn incarnation(kubectl: &Kubectl, pod: &str) -> (String, u64) {
    let object = kubectl.get_json(&["pod", pod, "-n", TEST_NS]).unwrap();
    let restarts = object["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| c["restartCount"].as_u64().unwrap_or_default())
        .sum();
    (
        object["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        restarts,
    )
}

fn condition_true(object: &Value, kind: &str) -> bool {
    object["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == kind && c["status"] == "True")
}

/// The fastvirt images every container of the chart's pods runs, once all are ready.
fn fastvirt_images(kubectl: &Kubectl) -> anyhow::Result<Option<Vec<String>>> {
    let pods = kubectl.get_json(&["pods", "-n", cluster::NAMESPACE])?;
    let mut images = Vec::new();
    for pod in pods["items"].as_array().into_iter().flatten() {
        if !pod["metadata"]["deletionTimestamp"].is_null() {
            return Ok(None);
        }
        for status in pod["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if status["ready"] != true {
                return Ok(None);
            }
        }
        for container in pod["spec"]["containers"].as_array().into_iter().flatten() {
            let image = container["image"].as_str().unwrap_or_default();
            if image.starts_with("localhost/fastvirt/fastvirt-") {
                images.push(image.to_owned());
            }
        }
    }
    Ok(Some(images))
}

#[test]
fn a_chart_upgrade_keeps_every_volume_and_workload() {
    if let Some(reason) = cluster_skip_reason() {
        eprintln!("SKIP a_chart_upgrade_keeps_every_volume_and_workload: {reason}");
        return;
    }
    let previous = match previous_release() {
        Ok(dir) => dir,
        Err(reason) => {
            eprintln!("SKIP a_chart_upgrade_keeps_every_volume_and_workload: {reason}");
            return;
        }
    };
    let binaries = cluster::build_fastvirt_binaries(&cluster::default_repo(), false)
        .expect("this build's binaries");
    let workdir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("chart-upgrade");
    let workdir_arg = workdir.to_string_lossy().into_owned();
    let _ = cluster_binary(&["down", "--workdir", &workdir_arg]);
    let _down = Down(workdir.clone());
    let out = cluster_binary(&[
        "up",
        "--workdir",
        &workdir_arg,
        "--binaries",
        &previous.to_string_lossy(),
        "--repo",
        &previous.join("repo").to_string_lossy(),
        "--image-tag",
        PREVIOUS_TAG,
    ]);
    assert!(
        out.status.success(),
        "fastvirt-cluster up with the previous release failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let state = State::load(&workdir.canonicalize().unwrap())
        .unwrap()
        .expect("state file");
    let kubectl = state.kubectl();
    let pool_dir = state.layout().pool_host_dir().join(POOL);

    // What the previous release serves.
    kubectl
        .run(&["create", "namespace", TEST_NS])
        .expect("test namespace");
    apply(
        &kubectl,
        &format!(
            "apiVersion: fastvirt.io/v1alpha1
kind: BlockPool
metadata:
  name: {POOL}
spec:
  backend:
    file:
      path: {dir}
  storageClass:
    volumeBindingMode: WaitForFirstConsumer
    fsType: ext4
  snapshotClass:
    deletionPolicy: Delete
",
            dir = pool_dir.display()
        ),
    );
    wait(&kubectl, "the BlockPool Ready", 180, || {
        let pool = kubectl.get_json(&["blockpool", POOL])?;
        Ok(condition_true(&pool, "Ready").then_some(()))
    });
    let writers = [
        ("block-writer", "block-claim", true),
        ("fs-writer", "fs-claim", false),
    ];
    for (pod_name, claim, block) in writers {
        apply(&kubectl, &pvc(claim, POOL, block, "64Mi", None));
        apply(&kubectl, &writer(pod_name, claim, block));
    }
    for (pod_name, _, _) in writers {
        wait(&kubectl, &format!("{pod_name} writing"), 240, || {
            Ok(counter(&kubectl, pod_name).ok().filter(|c| *c > 2))
        });
    }
    apply(
        &kubectl,
        &format!(
            "apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata:
  name: old-snap
  namespace: {TEST_NS}
spec:
  volumeSnapshotClassName: {POOL}
  source:
    persistentVolumeClaimName: fs-claim
"
        ),
    );
    wait(&kubectl, "the VolumeSnapshot ready", 180, || {
        let snap = kubectl.get_json(&["volumesnapshot", "old-snap", "-n", TEST_NS])?;
        Ok((snap["status"]["readyToUse"] == true).then_some(()))
    });
    let before: Vec<(String, u64)> = writers
        .iter()
        .map(|(pod_name, _, _)| incarnation(&kubectl, pod_name))
        .collect();

    // The upgrade.
    let out = cluster_binary(&[
        "upgrade",
        "--workdir",
        &workdir_arg,
        "--binaries",
        &binaries.to_string_lossy(),
        "--image-tag",
        NEW_TAG,
    ]);
    assert!(
        out.status.success(),
        "fastvirt-cluster upgrade failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let images = wait(
        &kubectl,
        "every fastvirt pod on the new images",
        300,
        || {
            Ok(fastvirt_images(&kubectl)?
                .filter(|images| !images.is_empty() && images.iter().all(|i| i.ends_with(NEW_TAG))))
        },
    );
    eprintln!("upgraded: {images:?}");
    cluster::wait_plugin_registered(&state).expect("the new plugin registered");

    // The workloads never noticed.
    for ((pod_name, _, _), old) in writers.iter().zip(&before) {
        assert_eq!(
            &incarnation(&kubectl, pod_name),
            old,
            "{pod_name} kept running, never restarted"
        );
        let now = counter(&kubectl, pod_name).expect("a counter");
        wait(&kubectl, &format!("{pod_name} still writing"), 60, || {
            Ok(counter(&kubectl, pod_name).ok().filter(|c| *c > now + 2))
        });
    }
    wait(
        &kubectl,
        "the BlockPool Ready under the new operator",
        180,
        || {
            let pool = kubectl.get_json(&["blockpool", POOL])?;
            let observed = pool["status"]["observedGeneration"] == pool["metadata"]["generation"];
            Ok((observed && condition_true(&pool, "Ready")).then_some(()))
        },
    );

    // The old snapshot restores with its data, and a new claim works.
    apply(
        &kubectl,
        &pvc("restored", POOL, false, "64Mi", Some("old-snap")),
    );
    apply(
        &kubectl,
        &pod(
            "restored-reader",
            "restored",
            false,
            "cat /data/counter && sleep 3600",
        ),
    );
    apply(&kubectl, &pvc("new-claim", POOL, true, "64Mi", None));
    apply(&kubectl, &writer("new-writer", "new-claim", true));
    let restored: u64 = wait(&kubectl, "the restored claim read", 240, || {
        if pod_phase(&kubectl, "restored-reader")? != "Running" {
            return Ok(None);
        }
        Ok(counter(&kubectl, "restored-reader").ok())
    });
    assert!(restored >= 3, "the snapshot held the counter ({restored})");
    wait(&kubectl, "new-writer writing", 240, || {
        Ok(counter(&kubectl, "new-writer").ok().filter(|c| *c > 2))
    });

    // Everything deletes, and the pool is left empty.
    for pod_name in ["block-writer", "fs-writer", "restored-reader", "new-writer"] {
        kubectl
            .run(&[
                "delete",
                "pod",
                pod_name,
                "-n",
                TEST_NS,
                "--wait=true",
                "--timeout=120s",
            ])
            .unwrap_or_else(|e| panic!("deleting {pod_name}: {e:#}"));
    }
    delete_snapshots_and_claims(&kubectl);
    assert_eq!(
        volume_files(&pool_dir),
        0,
        "no volume file left in the pool"
    );
}
