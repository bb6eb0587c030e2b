//! The node plugin follows its pool file: new pools, nodes that join and labels that change
//! restart no plugin, and a pool the plugins could not keep is refused with a reason.

use super::{POOL, apply, blockpool, condition_true, node_plugin_pod, wait};
use fastvirt_e2e::cluster::kubectl::Kubectl;
use fastvirt_e2e::cluster::{self, State};
use serde_json::Value;
use std::path::Path;

/// What changes when the node plugins restart: the DaemonSet's generation (a template change),
/// the plugin pod (a rollout) and its containers' restart counts (a crash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginIncarnation {
    daemonset_generation: i64,
    pod_uid: String,
    restarts: i64,
}

pub fn plugin_incarnation(kubectl: &Kubectl) -> PluginIncarnation {
    let name = wait(kubectl, "a ready node plugin", 180, || {
        node_plugin_pod(kubectl)
    });
    let pod = kubectl
        .get_json(&["pod", &name, "-n", cluster::NAMESPACE])
        .expect("the node plugin pod");
    let daemonset = kubectl
        .get_json(&[
            "daemonset",
            "-n",
            cluster::NAMESPACE,
            "-l",
            "app.kubernetes.io/component=node",
        ])
        .expect("the node DaemonSet");
    PluginIncarnation {
        daemonset_generation: daemonset["items"][0]["metadata"]["generation"]
            .as_i64()
            .unwrap_or_default(),
        pod_uid: pod["metadata"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        restarts: pod["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["restartCount"].as_i64().unwrap_or_default())
            .sum(),
    }
}

fn pool_file(kubectl: &Kubectl) -> String {
    kubectl
        .get_json(&["configmap", "fastvirt-pools", "-n", cluster::NAMESPACE])
        .map(|c: Value| {
            c["data"]["pools.yaml"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_default()
}

/// A node joins, a label changes, pools come and go: the pool file follows each, no plugin
/// restarts. A pool outside the plugins' host directories is refused and never created.
pub fn nodes_joining_and_pool_changes_restart_nothing(kubectl: &Kubectl, state: &State) {
    let before = plugin_incarnation(kubectl);
    apply(
        kubectl,
        "apiVersion: v1
kind: Node
metadata:
  name: fastvirt-joiner
  labels:
    fastvirt.io/test-rack: a
spec:
  # No kubelet runs it: no DaemonSet pod should wait for it.
  taints:
  - key: fastvirt.io/kubelet-less
    effect: NoSchedule
",
    );
    let rack_dir = state.layout().pool_host_dir().join("rack-a");
    apply(
        kubectl,
        &blockpool(
            "rack-a",
            &rack_dir,
            "  nodeSelector:\n    fastvirt.io/test-rack: a\n",
        ),
    );
    wait(kubectl, "the joined node in the pool file", 120, || {
        let file = pool_file(kubectl);
        Ok((file.contains("rack-a") && file.contains("fastvirt-joiner")).then_some(()))
    });
    kubectl
        .run(&[
            "label",
            "node",
            "fastvirt-joiner",
            "fastvirt.io/test-rack=b",
            "--overwrite",
        ])
        .expect("relabel");
    wait(
        kubectl,
        "the relabelled node out of the pool file",
        120,
        || {
            let file = pool_file(kubectl);
            Ok((file.contains("rack-a") && !file.contains("fastvirt-joiner")).then_some(()))
        },
    );

    // Outside `node.poolHostDirs`: the plugin container would keep it in its own writable layer.
    let outside = Path::new("/srv/fastvirt-outside-the-host-dirs");
    apply(kubectl, &blockpool("outside", outside, ""));
    let refused = wait(kubectl, "the outside pool refused", 120, || {
        let pool = kubectl.get_json(&["blockpool", "outside"])?;
        let ready = pool["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready")
            .cloned();
        Ok(ready.filter(|c| c["status"] == "False" && c["reason"] == "PathOutsideHostDirs"))
    });
    let message = refused["message"].as_str().unwrap_or_default();
    assert!(message.contains("node.poolHostDirs"), "{refused}");
    assert!(
        !pool_file(kubectl).contains("outside"),
        "never handed to the plugins"
    );
    assert!(
        kubectl.get_json(&["storageclass", "outside"]).is_err(),
        "no StorageClass offers it"
    );

    for pool in ["rack-a", "outside"] {
        kubectl
            .run(&["delete", "blockpool", pool, "--wait=true", "--timeout=120s"])
            .expect("pool deleted");
    }
    kubectl
        .run(&["delete", "node", "fastvirt-joiner", "--wait=true"])
        .expect("node deleted");
    wait(kubectl, "the pool file without the test pools", 120, || {
        let file = pool_file(kubectl);
        Ok((file.contains(POOL) && !file.contains("rack-a")).then_some(()))
    });
    assert!(
        !outside.exists(),
        "nothing created outside the host directories"
    );
    assert_eq!(
        plugin_incarnation(kubectl),
        before,
        "no node plugin restarted while nodes joined, labels changed and pools came and went"
    );
    // The BlockPool the test started with is still served.
    let pool = kubectl.get_json(&["blockpool", POOL]).expect("the pool");
    assert!(condition_true(&pool, "Ready"), "{pool}");
}
