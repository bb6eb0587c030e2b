//! fastvirt in a real Kubernetes: `fastvirt-cluster up` builds a one-node cluster from the
//! reference components (etcd, kube-apiserver with RBAC + Node authorization and Pod Security
//! `baseline` enforced, controller-manager, scheduler, containerd, kubelet, the CSI sidecars and
//! snapshot-controller), installs the chart with the real helm, and these tests use it as a
//! platform team and its developers would: the CRDs at the API server, BlockPools, PVCs of both
//! modes mounted into pods by kubelet, expansion, snapshots, a node-plugin restart, uninstall,
//! and `down` leaving the host as it was.
//!
//! One cluster serves every step (starting one takes about a minute), so the steps run in order
//! in one test. Needs root and the reference components (`FASTVIRT_KUBE_BIN`, which
//! scripts/test.sh sets); skips with the reason otherwise.

mod common;

use fastvirt_e2e::cluster::kubectl::Kubectl;
use fastvirt_e2e::cluster::{self, State};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[path = "cluster/chaos.rs"]
mod chaos;
#[path = "cluster/disk_image.rs"]
mod disk_image;
#[path = "cluster/kubelet_drop_in.rs"]
mod kubelet_drop_in;
#[path = "cluster/kubevirt.rs"]
mod kubevirt;
#[path = "cluster/node_facts.rs"]
mod node_facts;
#[path = "cluster/plugin_metrics.rs"]
mod plugin_metrics;
#[path = "cluster/pool_following.rs"]
mod pool_following;
#[path = "cluster/qos.rs"]
mod qos;

const POOL: &str = "local";

/// The workspace's debug binaries of the three images, built if `cargo test` has not yet.
fn fastvirt_binaries() -> PathBuf {
    cluster::build_fastvirt_binaries(&cluster::default_repo(), false).expect("binaries build")
}

use common::{
    Down, TEST_NS, cluster_binary, cluster_skip_reason as skip_reason, delete_snapshots_and_claims,
    placed_pod, pod, pod_phase, pvc, volume_files, wait,
};

fn apply(kubectl: &Kubectl, manifest: &str) {
    kubectl
        .apply(manifest)
        .unwrap_or_else(|e| panic!("applying:\n{manifest}\n{e:#}"));
}

/// Waits until the pod has run to completion successfully, then returns its output.
fn run_to_completion(kubectl: &Kubectl, name: &str) -> String {
    let phase = wait(kubectl, &format!("pod {name} finished"), 180, || {
        let phase = pod_phase(kubectl, name)?;
        Ok(matches!(phase.as_str(), "Succeeded" | "Failed").then_some(phase))
    });
    let logs = kubectl
        .run(&["logs", name, "-n", TEST_NS])
        .unwrap_or_else(|e| format!("(no logs: {e:#})"));
    assert_eq!(
        phase,
        "Succeeded",
        "pod {name} failed; logs:\n{logs}\n{}",
        describe(kubectl, name)
    );
    logs
}

fn describe(kubectl: &Kubectl, pod: &str) -> String {
    kubectl
        .run(&["describe", "pod", pod, "-n", TEST_NS])
        .unwrap_or_default()
}

/// The PersistentVolume bound to a claim of the test namespace.
fn claim_volume(kubectl: &Kubectl, claim: &str) -> String {
    kubectl
        .run(&[
            "get",
            "pvc",
            claim,
            "-n",
            TEST_NS,
            "-o",
            "jsonpath={.spec.volumeName}",
        ])
        .unwrap_or_else(|e| panic!("the volume of claim {claim}: {e:#}"))
}

/// A merge patch of a claim in the test namespace.
fn patch_claim(kubectl: &Kubectl, claim: &str, patch: &str) {
    kubectl
        .run(&[
            "patch",
            "pvc",
            claim,
            "-n",
            TEST_NS,
            "--type=merge",
            "-p",
            patch,
        ])
        .unwrap_or_else(|e| panic!("patching claim {claim} with {patch}: {e:#}"));
}

fn delete(kubectl: &Kubectl, kind: &str, name: &str) {
    kubectl
        .run(&[
            "delete",
            kind,
            name,
            "-n",
            TEST_NS,
            "--wait=true",
            "--timeout=120s",
        ])
        .unwrap_or_else(|e| panic!("deleting {kind} {name}: {e:#}"));
}

/// Sets or removes the node label the tuning steps' profiles select (`fastvirt.io/vm-host`).
fn mark_vm_host(kubectl: &Kubectl, state: &State, on: bool) {
    let label = if on {
        "fastvirt.io/vm-host=true"
    } else {
        "fastvirt.io/vm-host-"
    };
    kubectl
        .run(&["label", "node", &state.node_name, label, "--overwrite"])
        .expect("node label changed");
}

fn condition_true(object: &Value, kind: &str) -> bool {
    object["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == kind && c["status"] == "True")
}

#[test]
fn fastvirt_in_a_real_cluster() {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIP fastvirt_in_a_real_cluster: {reason}");
        return;
    }
    let workdir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cluster");
    let workdir_arg = workdir.to_string_lossy().into_owned();
    // A cluster left by a killed run goes first.
    let _ = cluster_binary(&["down", "--workdir", &workdir_arg]);
    let binaries = fastvirt_binaries();
    let _down = Down(workdir.clone());
    let out = cluster_binary(&[
        "up",
        "--workdir",
        &workdir_arg,
        "--binaries",
        &binaries.to_string_lossy(),
        "--nodes",
        "3",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "fastvirt-cluster up failed:\n{}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let state = State::load(&workdir.canonicalize().unwrap())
        .unwrap()
        .expect("state file");
    let kubeconfig = state.layout().admin_kubeconfig();
    assert_eq!(
        stdout.lines().last().unwrap_or_default(),
        format!("export KUBECONFIG={}", kubeconfig.display()),
        "the last line tells the user how to reach the cluster"
    );
    let kubectl = state.kubectl();

    crds_are_served_and_validated(&kubectl);
    let pool_dir = pool_creates_classes(&kubectl, &state);
    pool_following::nodes_joining_and_pool_changes_restart_nothing(&kubectl, &state);
    volumes_keep_their_data(&kubectl);
    pool_on_a_hostname_selected_node(&kubectl, &state);
    unknown_class_parameters_are_refused(&kubectl, &state);
    tuning_profile_is_applied_and_restored(&kubectl, &state);
    kubelet_drop_in::the_kubelet_runs_the_profiles_drop_in(&kubectl, &state);
    capacity_decides_the_node(&kubectl, &state);
    filesystem_grows_in_a_running_pod(&kubectl);
    plugin_metrics::the_plugin_reports_a_volumes_io(&kubectl);
    qos::a_class_change_changes_a_running_pods_cap(&kubectl);
    snapshot_restores_the_data(&kubectl);
    disk_image::a_disk_image_claim_is_one_preallocated_image(&kubectl, &state);
    node_plugin_restart_keeps_a_mounted_volume(&kubectl, &state);
    chaos::node_plugin_kills_and_an_apiserver_restart_lose_nothing(&kubectl, &state);
    deleting_claims_removes_their_files(&kubectl, &pool_dir);
    uninstall_leaves_only_the_crds(&kubectl, &state);

    // As saved: the API server and the kubelet were restarted, under new pids.
    let state = State::load(&state.workdir).unwrap().expect("state file");
    drop(_down);
    host_is_clean_after_down(&state);
}

fn crds_are_served_and_validated(kubectl: &Kubectl) {
    for crd in [
        "blockpools.fastvirt.io",
        "nodetuningprofiles.fastvirt.io",
        "tunednodes.fastvirt.io",
    ] {
        let object = kubectl.get_json(&["crd", crd]).unwrap();
        assert!(
            condition_true(&object, "Established"),
            "{crd} is not Established"
        );
    }
    // Every example is accepted server-side (schema, defaults, CEL).
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    kubectl
        .run(&[
            "apply",
            "--server-side",
            "--dry-run=server",
            "-f",
            &examples.to_string_lossy(),
        ])
        .unwrap_or_else(|e| panic!("the examples are refused: {e:#}"));
    // Each CEL rule refuses its bad input at the API server, with its own message.
    for (manifest, message) in [
        (
            "apiVersion: fastvirt.io/v1alpha1\nkind: BlockPool\nmetadata:\n  name: dotted.name\nspec:\n  backend:\n    file:\n      path: /var/lib/fastvirt/pools/x\n",
            "a pool name is a DNS label",
        ),
        (
            "apiVersion: fastvirt.io/v1alpha1\nkind: BlockPool\nmetadata:\n  name: relative\nspec:\n  backend:\n    file:\n      path: pools/x\n",
            "path must be absolute",
        ),
        (
            "apiVersion: fastvirt.io/v1alpha1\nkind: BlockPool\nmetadata:\n  name: both\nspec:\n  backend:\n    file:\n      path: /var/lib/fastvirt/pools/x\n  storageClass:\n    blockOnly: true\n    fsType: xfs\n",
            "blockOnly and fsType exclude each other",
        ),
        (
            "apiVersion: fastvirt.io/v1alpha1\nkind: BlockPool\nmetadata:\n  name: image-block\nspec:\n  backend:\n    file:\n      path: /var/lib/fastvirt/pools/x\n  storageClass:\n    layout: disk-image\n    blockOnly: true\n",
            "the disk-image layout makes Filesystem volumes only",
        ),
    ] {
        let error = kubectl
            .run_with_input(
                &["apply", "--server-side", "--dry-run=server", "-f", "-"],
                manifest,
            )
            .expect_err("the API server refuses it");
        assert!(format!("{error:#}").contains(message), "{error:#}");
    }
}

/// A BlockPool on the cluster's pool directory: the operator makes its StorageClass, its
/// VolumeSnapshotClass and the pool file, and the node plugin serves it.
fn pool_creates_classes(kubectl: &Kubectl, state: &State) -> PathBuf {
    let pool_dir = state.layout().pool_host_dir().join(POOL);
    let plugin = pool_following::plugin_incarnation(kubectl);
    apply(
        kubectl,
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
    allowVolumeExpansion: true
    fsType: xfs
  snapshotClass:
    deletionPolicy: Delete
",
            dir = pool_dir.display()
        ),
    );
    let class = wait(kubectl, "the pool's StorageClass", 120, || {
        Ok(kubectl.get_json(&["storageclass", POOL]).ok())
    });
    assert_eq!(class["provisioner"], fastvirt_csi::DRIVER_NAME);
    wait(kubectl, "the pool's VolumeSnapshotClass", 60, || {
        Ok(kubectl.get_json(&["volumesnapshotclass", POOL]).ok())
    });
    let pools = wait(kubectl, "the pool file", 60, || {
        Ok(kubectl
            .get_json(&["configmap", "fastvirt-pools", "-n", cluster::NAMESPACE])
            .ok())
    });
    assert!(
        pools["data"]["pools.yaml"]
            .as_str()
            .unwrap_or_default()
            .contains(POOL),
        "{pools}"
    );
    wait(kubectl, "the BlockPool Ready", 180, || {
        let pool = kubectl.get_json(&["blockpool", POOL])?;
        Ok(condition_true(&pool, "Ready").then_some(()))
    });
    // The node plugin serves the pool once kubelet has updated its mounted pool file.
    wait(kubectl, "CSIStorageCapacity for the pool", 180, || {
        let list = kubectl.get_json(&["csistoragecapacity", "-n", cluster::NAMESPACE])?;
        Ok(list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["storageClassName"] == POOL && c["capacity"].is_string())
            .then_some(()))
    });
    assert_eq!(
        pool_following::plugin_incarnation(kubectl),
        plugin,
        "the new pool reached the running plugin: no restart"
    );
    kubectl
        .run(&["create", "namespace", TEST_NS])
        .expect("test namespace");
    pool_dir
}

fn volumes_keep_their_data(kubectl: &Kubectl) {
    for (block, claim, data) in [
        (true, "block-claim", "fastvirt-block-data"),
        (false, "fs-claim", "fastvirt-fs-data"),
    ] {
        apply(kubectl, &pvc(claim, POOL, block, "1Gi", None));
        let (write, read) = if block {
            (
                format!(
                    "printf '{data}' > /tmp/d && dd if=/tmp/d of=/dev/xvda bs=4096 conv=sync,fsync 2>/dev/null"
                ),
                format!(
                    "dd if=/dev/xvda bs=4096 count=1 2>/dev/null | head -c {}",
                    data.len()
                ),
            )
        } else {
            (
                format!("echo {data} > /data/f && sync"),
                "cat /data/f".to_owned(),
            )
        };
        let writer = format!("{claim}-writer");
        apply(kubectl, &pod(&writer, claim, block, &write));
        run_to_completion(kubectl, &writer);
        delete(kubectl, "pod", &writer);
        let reader = format!("{claim}-reader");
        apply(kubectl, &pod(&reader, claim, block, &read));
        let logs = run_to_completion(kubectl, &reader);
        assert_eq!(logs.trim(), data, "{claim}: the data came back");
        delete(kubectl, "pod", &reader);
    }
}

/// Expansion reaches a running pod's filesystem.
fn filesystem_grows_in_a_running_pod(kubectl: &Kubectl) {
    let claim = "fs-claim";
    apply(
        kubectl,
        &pod(
            "grower",
            claim,
            false,
            "while true; do df -k /data | tail -n 1; sleep 1; done",
        ),
    );
    wait(kubectl, "pod grower running", 180, || {
        Ok((pod_phase(kubectl, "grower")? == "Running").then_some(()))
    });
    let size_kib = || -> anyhow::Result<u64> {
        let logs = kubectl.run(&["logs", "grower", "-n", TEST_NS, "--tail=1"])?;
        let size = logs
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("no df line yet: {logs:?}"))?;
        Ok(size)
    };
    let before = wait(kubectl, "df in the pod", 60, || Ok(size_kib().ok()));
    patch_claim(
        kubectl,
        claim,
        r#"{"spec":{"resources":{"requests":{"storage":"2Gi"}}}}"#,
    );
    let after = wait(
        kubectl,
        "the filesystem grown in the running pod",
        180,
        || {
            let size = size_kib()?;
            Ok((size > before + 512 * 1024).then_some(size))
        },
    );
    eprintln!("filesystem in the running pod grew from {before} KiB to {after} KiB");
    delete(kubectl, "pod", "grower");
}

fn snapshot_restores_the_data(kubectl: &Kubectl) {
    apply(
        kubectl,
        &format!(
            "apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata:
  name: fs-snap
  namespace: {TEST_NS}
spec:
  volumeSnapshotClassName: {POOL}
  source:
    persistentVolumeClaimName: fs-claim
"
        ),
    );
    wait(kubectl, "the VolumeSnapshot ready", 180, || {
        let snap = kubectl.get_json(&["volumesnapshot", "fs-snap", "-n", TEST_NS])?;
        Ok((snap["status"]["readyToUse"] == true).then_some(()))
    });
    apply(
        kubectl,
        &pvc("restored", POOL, false, "2Gi", Some("fs-snap")),
    );
    apply(
        kubectl,
        &pod("restored-reader", "restored", false, "cat /data/f"),
    );
    let logs = run_to_completion(kubectl, "restored-reader");
    assert_eq!(logs.trim(), "fastvirt-fs-data");
    delete(kubectl, "pod", "restored-reader");
}

fn node_plugin_pod(kubectl: &Kubectl) -> anyhow::Result<Option<String>> {
    let pods = kubectl.get_json(&[
        "pods",
        "-n",
        cluster::NAMESPACE,
        "-l",
        "app.kubernetes.io/component=node",
    ])?;
    Ok(pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| {
            p["metadata"]["deletionTimestamp"].is_null()
                && p["status"]["containerStatuses"]
                    .as_array()
                    .is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c["ready"] == true))
        })
        .and_then(|p| p["metadata"]["name"].as_str().map(str::to_owned)))
}

/// The node plugin restarts while a pod has a volume mounted: the volume keeps working, and the
/// pod's volume is unpublished cleanly afterwards.
fn node_plugin_restart_keeps_a_mounted_volume(kubectl: &Kubectl, state: &State) {
    apply(
        kubectl,
        &pod(
            "steady",
            "fs-claim",
            false,
            "i=0; while true; do i=$((i+1)); echo $i > /data/counter && sync && cat /data/counter; sleep 1; done",
        ),
    );
    wait(kubectl, "pod steady running", 180, || {
        Ok((pod_phase(kubectl, "steady")? == "Running").then_some(()))
    });
    let old = wait(kubectl, "a ready node plugin", 120, || {
        node_plugin_pod(kubectl)
    });
    kubectl
        .run(&[
            "delete",
            "pod",
            &old,
            "-n",
            cluster::NAMESPACE,
            "--wait=true",
        ])
        .expect("node plugin pod deleted");
    let new = wait(kubectl, "the node plugin back", 180, || {
        Ok(node_plugin_pod(kubectl)?.filter(|p| *p != old))
    });
    cluster::wait_plugin_registered(state).expect("registered again");
    let counter = || -> anyhow::Result<u64> {
        let logs = kubectl.run(&["logs", "steady", "-n", TEST_NS, "--tail=1"])?;
        Ok(logs.trim().parse()?)
    };
    let before = wait(kubectl, "the counter", 30, || Ok(counter().ok()));
    let after = wait(
        kubectl,
        "the volume still written after the restart",
        60,
        || Ok(counter().ok().filter(|c| *c > before + 2)),
    );
    eprintln!("node plugin {old} replaced by {new}; the pod kept writing ({before} -> {after})");
    delete(kubectl, "pod", "steady");
    // Unpublished: no mount of the claim's volume under the pods directory any more.
    let pods_dir = state.kubelet_dir.join("pods");
    let leftover: Vec<String> = fastvirt_csi::mountinfo::read()
        .unwrap()
        .into_iter()
        .filter(|m| {
            m.mount_point.starts_with(&pods_dir)
                && m.mount_point
                    .to_string_lossy()
                    .contains("kubernetes.io~csi")
        })
        .map(|m| m.mount_point.display().to_string())
        .collect();
    assert!(
        leftover.is_empty(),
        "mounts left after the pods went: {leftover:?}"
    );
}

fn blockpool(name: &str, dir: &Path, extra_spec: &str) -> String {
    format!(
        "apiVersion: fastvirt.io/v1alpha1
kind: BlockPool
metadata:
  name: {name}
spec:
  backend:
    file:
      path: {dir}
{extra_spec}",
        dir = dir.display()
    )
}

/// Merges `storage_class` (JSON) into a BlockPool's `spec.storageClass`.
fn patch_pool_class(kubectl: &Kubectl, pool: &str, storage_class: &str) {
    let patch = format!(r#"{{"spec":{{"storageClass":{storage_class}}}}}"#);
    kubectl
        .run(&["patch", "blockpool", pool, "--type=merge", "-p", &patch])
        .unwrap_or_else(|e| panic!("patching {pool}: {e:#}"));
}

fn class_of(kubectl: &Kubectl, name: &str) -> anyhow::Result<Option<Value>> {
    Ok(kubectl
        .get_json(&["storageclass", name, "--show-managed-fields"])
        .ok())
}

/// A pool pinned to one node by its `kubernetes.io/hostname` label, on a cluster whose node name
/// differs from that label (as where kubelet runs with --hostname-override): claims of its class
/// bind and mount. Then an immutable change replaces the class, and the replacement is owned by
/// the operator's field manager alone, so later edits of mutable fields still land.
fn pool_on_a_hostname_selected_node(kubectl: &Kubectl, state: &State) {
    assert_ne!(state.node_name, state.hostname_label);
    let dir = state.layout().pool_host_dir().join("pinned");
    apply(
        kubectl,
        &blockpool(
            "pinned",
            &dir,
            &format!(
                "  nodeSelector:\n    kubernetes.io/hostname: {}\n  storageClass:\n    volumeBindingMode: WaitForFirstConsumer\n",
                state.hostname_label
            ),
        ),
    );
    wait(kubectl, "the pinned pool's class", 120, || {
        class_of(kubectl, "pinned")
    });
    apply(kubectl, &pvc("pinned-claim", "pinned", false, "64Mi", None));
    apply(
        kubectl,
        &pod(
            "pinned-writer",
            "pinned-claim",
            false,
            "echo pinned > /data/f && cat /data/f",
        ),
    );
    assert_eq!(run_to_completion(kubectl, "pinned-writer").trim(), "pinned");
    delete(kubectl, "pod", "pinned-writer");

    let uid = |class: &Value| {
        class["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let before = uid(&class_of(kubectl, "pinned").unwrap().unwrap());
    patch_pool_class(kubectl, "pinned", r#"{"reclaimPolicy":"Retain"}"#);
    let replaced = wait(
        kubectl,
        "the class replaced with reclaimPolicy Retain",
        120,
        || {
            Ok(class_of(kubectl, "pinned")?
                .filter(|c| c["reclaimPolicy"] == "Retain" && uid(c) != before))
        },
    );
    let managers: Vec<&str> = replaced["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["manager"].as_str())
        .collect();
    assert_eq!(
        managers,
        [fastvirt_operator::MANAGER],
        "one owner of the replaced class"
    );
    for (default, expected) in [(true, Some("true")), (false, None)] {
        patch_pool_class(
            kubectl,
            "pinned",
            &format!(r#"{{"defaultClass":{default}}}"#),
        );
        wait(
            kubectl,
            &format!("defaultClass {default} reaching the class"),
            120,
            || {
                let class = class_of(kubectl, "pinned")?;
                let annotation = class.as_ref().and_then(|c| {
                    c["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"]
                        .as_str()
                        .map(str::to_owned)
                });
                Ok((annotation.as_deref() == expected).then_some(()))
            },
        );
    }
    // A renamed class: the new one appears, the old one goes.
    patch_pool_class(kubectl, "pinned", r#"{"name":"pinned-renamed"}"#);
    wait(
        kubectl,
        "the renamed class, and the old name gone",
        120,
        || {
            Ok((class_of(kubectl, "pinned-renamed")?.is_some()
                && class_of(kubectl, "pinned")?.is_none())
            .then_some(()))
        },
    );
    // Deleting the pool waits (finalizer) while a volume of it exists, and completes after.
    kubectl
        .run(&["delete", "blockpool", "pinned", "--wait=false"])
        .expect("pool deletion requested");
    std::thread::sleep(Duration::from_secs(5));
    let pool = kubectl
        .get_json(&["blockpool", "pinned"])
        .expect("the pool waits for its volume");
    assert!(pool["metadata"]["deletionTimestamp"].is_string(), "{pool}");
    delete(kubectl, "pvc", "pinned-claim");
    wait(kubectl, "the pool gone once its volume is", 180, || {
        Ok(kubectl
            .get_json(&["blockpool", "pinned"])
            .is_err()
            .then_some(()))
    });
}

/// A pool whose class would carry a parameter the driver refuses is not Ready, says why, and
/// gets no StorageClass (whose claims would stay Pending without a word).
fn unknown_class_parameters_are_refused(kubectl: &Kubectl, state: &State) {
    let dir = state.layout().pool_host_dir().join("extra");
    apply(
        kubectl,
        &blockpool(
            "extra",
            &dir,
            "  storageClass:\n    parameters:\n      replicas: \"3\"\n",
        ),
    );
    let message = wait(kubectl, "the pool refused with a reason", 120, || {
        let pool = kubectl.get_json(&["blockpool", "extra"])?;
        Ok(pool["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready" && c["status"] == "False")
            .and_then(|c| c["message"].as_str().map(str::to_owned)))
    });
    assert!(
        message.contains("replicas is not a parameter fastvirt-csi accepts"),
        "{message}"
    );
    assert!(class_of(kubectl, "extra").unwrap().is_none());
    kubectl
        .run(&[
            "delete",
            "blockpool",
            "extra",
            "--wait=true",
            "--timeout=60s",
        ])
        .expect("pool deleted");
}

fn read_host(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("reading {path}: {e}"))
        .trim()
        .to_owned()
}

/// A NodeTuningProfile reaches the host through the agent's DaemonSet pod: hugepages and THP are
/// set, the node's TunedNode reports it, the profile aggregates it; deleting the profile puts
/// the host back as it was.
fn tuning_profile_is_applied_and_restored(kubectl: &Kubectl, state: &State) {
    const HUGEPAGES: &str =
        "/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages";
    const THP: &str = "/sys/kernel/mm/transparent_hugepage/enabled";
    if !Path::new(HUGEPAGES).exists() || !Path::new(THP).exists() {
        eprintln!(
            "SKIP tuning step: this kernel has no 2 MiB hugepages on node 0 or no THP control"
        );
        return;
    }
    let hugepages_before = read_host(HUGEPAGES);
    let thp_before = read_host(THP);
    let thp_selected = |text: &str| {
        text.split_whitespace()
            .find(|w| w.starts_with('['))
            .map(|w| w.trim_matches(['[', ']']).to_owned())
            .unwrap_or_default()
    };
    let thp_target = if thp_selected(&thp_before) == "never" {
        "madvise"
    } else {
        "never"
    };
    let pages: u64 = hugepages_before.parse::<u64>().unwrap_or(0) + 8;
    mark_vm_host(kubectl, state, true);
    apply(
        kubectl,
        &format!(
            "apiVersion: fastvirt.io/v1alpha1
kind: NodeTuningProfile
metadata:
  name: test-host
spec:
  nodeSelector:
    fastvirt.io/vm-host: \"true\"
  hugepages:
    - size: 2Mi
      count: {pages}
      numaNode: 0
  transparentHugepages: {thp_target}
"
        ),
    );
    let tuned = wait(kubectl, "the TunedNode applied", 180, || {
        let tuned = kubectl.get_json(&["tunednode", &state.node_name])?;
        Ok(condition_true(&tuned, "Applied").then_some(tuned))
    });
    assert_eq!(tuned["status"]["profile"], "test-host", "{tuned}");
    assert_eq!(read_host(HUGEPAGES), pages.to_string());
    assert_eq!(thp_selected(&read_host(THP)), thp_target);
    node_facts::labels_show_the_applied_profile(kubectl, state, "test-host");
    node_facts::the_agent_may_change_only_its_own_labels(kubectl, state);
    wait(
        kubectl,
        "the profile's status counting the node",
        120,
        || {
            let profile = kubectl.get_json(&["nodetuningprofile", "test-host"])?;
            Ok((profile["status"]["appliedNodes"].as_u64() == Some(1)).then_some(()))
        },
    );
    kubectl
        .run(&[
            "delete",
            "nodetuningprofile",
            "test-host",
            "--wait=true",
            "--timeout=60s",
        ])
        .expect("profile deleted");
    wait(kubectl, "the host restored", 180, || {
        Ok(
            (read_host(HUGEPAGES) == hugepages_before && read_host(THP) == thp_before)
                .then_some(()),
        )
    });
    node_facts::labels_are_gone(kubectl, state);
    mark_vm_host(kubectl, state, false);
}

/// Capacity-aware scheduling across nodes: every node publishes CSIStorageCapacity for the class,
/// and a claim too large for the nearly full node 2 is provisioned on node 3, which fits; a small
/// claim still fits node 2. (Nodes 2 and 3 have no kubelet: their pods never run, their claims
/// are provisioned where the scheduler put them.)
fn capacity_decides_the_node(kubectl: &Kubectl, state: &State) {
    use fastvirt_e2e::cluster::extra_nodes::{self, TAINT_KEY};
    let extra = extra_nodes::extra_nodes(state, state.nodes);
    assert_eq!(extra.len(), 2, "the cluster runs with --nodes 3");
    let dir = state.layout().pool_host_dir().join(extra_nodes::POOL);
    apply(
        kubectl,
        &blockpool(
            extra_nodes::POOL,
            &dir,
            "  storageClass:\n    volumeBindingMode: WaitForFirstConsumer\n",
        ),
    );
    let capacity_of = |node: &str| -> anyhow::Result<Option<i64>> {
        let list = kubectl.get_json(&["csistoragecapacity", "-n", cluster::NAMESPACE])?;
        Ok(list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find_map(|c| {
                let on_node =
                    c["nodeTopology"]["matchLabels"][fastvirt_csi::TOPOLOGY_NODE_KEY] == node;
                (c["storageClassName"] == extra_nodes::POOL && on_node)
                    .then(|| c["capacity"].as_str().and_then(parse_quantity))
                    .flatten()
            }))
    };
    let mut capacities = Vec::new();
    for node in
        std::iter::once(state.node_name.as_str()).chain(extra.iter().map(|n| n.name.as_str()))
    {
        let bytes = wait(
            kubectl,
            &format!("CSIStorageCapacity of {node}"),
            120,
            || capacity_of(node),
        );
        capacities.push((node.to_owned(), bytes));
    }
    eprintln!(
        "capacity per node for class {}: {capacities:?}",
        extra_nodes::POOL
    );
    let (nearly_full, roomy) = (&extra[0], &extra[1]);
    assert!(
        capacities[1].1 < 512 << 20 && capacities[2].1 > 1 << 30,
        "{capacities:?}"
    );

    let consumer = |name: &str, claim: &str, hosts: &[&str]| {
        let hosts = serde_json::to_string(hosts).unwrap();
        let placement = format!(
            "  tolerations:
    - key: {TAINT_KEY}
      operator: Exists
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
          - matchExpressions:
              - key: kubernetes.io/hostname
                operator: In
                values: {hosts}
"
        );
        placed_pod(name, claim, true, "sleep 3600", &placement)
    };
    let both = [
        nearly_full.hostname_label.as_str(),
        roomy.hostname_label.as_str(),
    ];
    apply(kubectl, &pvc("big", extra_nodes::POOL, true, "1Gi", None));
    apply(kubectl, &consumer("big-consumer", "big", &both));
    apply(
        kubectl,
        &pvc("small", extra_nodes::POOL, true, "64Mi", None),
    );
    apply(
        kubectl,
        &consumer("small-consumer", "small", &[&nearly_full.hostname_label]),
    );
    let node_of_claim = |claim: &str| -> anyhow::Result<Option<String>> {
        let pvc = kubectl.get_json(&["pvc", claim, "-n", TEST_NS])?;
        let Some(pv) = pvc["spec"]["volumeName"].as_str().filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let pv = kubectl.get_json(&["pv", pv])?;
        Ok(pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"][0]
            .as_str()
            .map(str::to_owned))
    };
    let big_node = wait(kubectl, "the big claim provisioned", 180, || {
        node_of_claim("big")
    });
    assert_eq!(
        big_node, roomy.name,
        "a claim too large for {} goes to a node that fits",
        nearly_full.name
    );
    let small_node = wait(kubectl, "the small claim provisioned", 180, || {
        node_of_claim("small")
    });
    assert_eq!(small_node, nearly_full.name);
    // The scheduler binds the pod once its claim is bound.
    let scheduled = wait(kubectl, "the big consumer bound to a node", 120, || {
        let pod = kubectl.get_json(&["pod", "big-consumer", "-n", TEST_NS])?;
        Ok(pod["spec"]["nodeName"].as_str().map(str::to_owned))
    });
    assert_eq!(scheduled, roomy.name);
    // Their pods never run (no kubelet), so nothing would confirm a graceful deletion.
    kubectl
        .run(&[
            "delete",
            "pod",
            "big-consumer",
            "small-consumer",
            "-n",
            TEST_NS,
            "--grace-period=0",
            "--force",
        ])
        .expect("consumers deleted");
    kubectl
        .run(&[
            "delete",
            "pvc",
            "big",
            "small",
            "-n",
            TEST_NS,
            "--wait=true",
        ])
        .expect("claims deleted");
    for node in [nearly_full, roomy] {
        let pool = node.pool_dir();
        wait(
            kubectl,
            &format!("the volume files on {} gone", node.name),
            120,
            || {
                let images = std::fs::read_dir(&pool)?
                    .flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "img"))
                    .count();
                Ok((images == 0).then_some(()))
            },
        );
    }
}

/// Bytes of a Kubernetes quantity as CSIStorageCapacity writes it (`123456`, `300Mi`, `2Gi`).
fn parse_quantity(text: &str) -> Option<i64> {
    fastvirt_api::quantity::bytes(text)
        .ok()
        .and_then(|b| i64::try_from(b).ok())
}

fn deleting_claims_removes_their_files(kubectl: &Kubectl, pool_dir: &Path) {
    let files_before = volume_files(pool_dir);
    assert!(
        files_before >= 3,
        "three claims have volume files in {}",
        pool_dir.display()
    );
    delete_snapshots_and_claims(kubectl);
    assert_eq!(
        volume_files(pool_dir),
        0,
        "the volume files are gone from {}",
        pool_dir.display()
    );
}

fn uninstall_leaves_only_the_crds(kubectl: &Kubectl, state: &State) {
    kubectl
        .run(&[
            "delete",
            "blockpool",
            "--all",
            "--wait=true",
            "--timeout=120s",
        ])
        .expect("the pools are deleted once they have no volumes");
    kubevirt::preferences_go_with_their_pools(kubectl);
    kubectl
        .helm(&[
            "uninstall",
            cluster::RELEASE,
            "--namespace",
            cluster::NAMESPACE,
            "--wait",
        ])
        .expect("helm uninstall");
    let selector = format!("app.kubernetes.io/instance={}", cluster::RELEASE);
    let kinds = "all,configmaps,secrets,serviceaccounts,roles,rolebindings,clusterroles,clusterrolebindings,storageclasses,volumesnapshotclasses,csidrivers,csistoragecapacities,leases";
    wait(kubectl, "no fastvirt object left", 120, || {
        let left = kubectl.run(&["get", kinds, "-A", "-l", &selector, "-o", "name"])?;
        Ok(left.trim().is_empty().then_some(()))
    });
    // What the operator made (pool file, classes) goes with its owner; CRDs stay, as Helm documents.
    let left = kubectl
        .run(&[
            "get",
            "configmap,storageclass,volumesnapshotclass",
            "-A",
            "-o",
            "name",
        ])
        .unwrap();
    assert!(
        !left.contains("fastvirt-pools") && !left.contains(&format!("/{POOL}")),
        "{left}"
    );
    assert!(kubectl.get_json(&["crd", "blockpools.fastvirt.io"]).is_ok());
    let _ = state;
}

fn host_is_clean_after_down(state: &State) {
    use fastvirt_e2e::cluster::host;
    assert!(!state.network.exists(), "the network namespace is gone");
    assert!(
        !Path::new(&format!("/sys/class/net/{}", state.network.host_link)).exists(),
        "the veth is gone"
    );
    let alive: Vec<String> = state
        .components
        .iter()
        .filter(|c| c.alive())
        .map(|c| c.name.clone())
        .collect();
    assert!(alive.is_empty(), "still running: {alive:?}");
    let mounts = host::mounts_under(&[&state.kubelet_dir, &state.workdir, &state.run_dir]);
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    let loops = host::loops_under(&state.workdir);
    assert!(loops.is_empty(), "loop devices left: {}", loops.len());
    for hierarchy in host::cgroup_hierarchies() {
        assert!(
            !hierarchy.join(&state.cgroup_root).exists(),
            "cgroup left in {}",
            hierarchy.display()
        );
    }
    if state.made_root_shared {
        assert!(
            !host::root_is_shared().unwrap(),
            "/ is private again, as before up"
        );
    }
    let layout = state.layout();
    let data_left: Vec<_> = layout
        .data_dirs()
        .into_iter()
        .filter(|d| d.exists())
        .collect();
    assert!(data_left.is_empty(), "cluster data left: {data_left:?}");
    assert!(layout.logs().is_dir(), "the logs stay after down");
}
