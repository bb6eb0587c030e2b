//! `fastvirt-cluster down`: stops what `up` started, in reverse, then sweeps what the pods and
//! the node plugin left (mounts, loop devices, sandboxes' network namespaces, cgroups) and takes
//! back the host changes `up` recorded.

use super::host;
use super::process::{self, stop};
use super::{NAMESPACE, State};
use anyhow::Result;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

/// Takes down the cluster in `workdir`; nothing to do when none was started there.
pub fn down(workdir: &Path) -> Result<()> {
    let workdir = workdir
        .canonicalize()
        .unwrap_or_else(|_| workdir.to_owned());
    let Some(state) = State::load(&workdir)? else {
        return Ok(());
    };
    let api_up = state.component("kube-apiserver").is_some_and(|c| c.alive());
    let kubelet_up = state.component("kubelet").is_some_and(|c| c.alive());
    if api_up && kubelet_up {
        drain(&state);
    }
    for component in state.components.iter().rev() {
        stop(component.pid, Duration::from_secs(10));
    }
    // containerd's shims and anything else still in the cluster's namespace, then the pods.
    for pid in host::processes_in_netns(&state.network.netns) {
        stop(pid, Duration::from_secs(2));
    }
    host::remove_cgroup(&state.cgroup_root);
    let started = UNIX_EPOCH + Duration::from_secs(state.started_at.saturating_sub(1));
    for netns in host::leftover_pod_netns(started) {
        let _ = process::run("ip", &["netns", "delete", &netns]);
    }
    host::unmount_under(&[&state.kubelet_dir, &state.workdir, &state.run_dir]);
    host::detach_loops_under(&state.workdir);
    state.network.delete()?;
    if state.made_root_shared {
        host::make_root_private()?;
    }
    let _ = std::fs::remove_dir_all(&state.run_dir);
    // Kept: logs and the PKI, for a look after the fact. A mount that would not go keeps the
    // data and the state file, so a second `down` can try again.
    host::remove_dirs_without_mounts(&state.layout().data_dirs())?;
    // The state file goes last: nothing runs.
    std::fs::remove_file(State::path(&workdir))?;
    Ok(())
}

/// Lets kubelet and the node plugin undo their own work first: workloads' pods go, so their
/// volumes are unpublished and unstaged through CSI, then fastvirt's own pods.
fn drain(state: &State) {
    let kubectl = state.kubectl();
    // Pods on kubelet-less nodes never confirm a graceful deletion: they go at once.
    if let Ok(pods) = kubectl.get_json(&["pods", "-A"]) {
        for pod in pods["items"].as_array().into_iter().flatten() {
            let node = pod["spec"]["nodeName"].as_str().unwrap_or_default();
            if !node.is_empty() && node != state.node_name {
                let (Some(name), Some(namespace)) = (
                    pod["metadata"]["name"].as_str(),
                    pod["metadata"]["namespace"].as_str(),
                ) else {
                    continue;
                };
                let _ = kubectl.run(&[
                    "delete",
                    "pod",
                    name,
                    "-n",
                    namespace,
                    "--grace-period=0",
                    "--force",
                ]);
            }
        }
    }
    let namespaces = kubectl
        .get_json(&["namespaces"])
        .ok()
        .and_then(|list| {
            list["items"].as_array().map(|items| {
                items
                    .iter()
                    .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_owned))
                    .collect::<Vec<_>>()
            })
        })
        .unwrap_or_default();
    let workloads: Vec<&String> = namespaces.iter().filter(|n| *n != NAMESPACE).collect();
    for namespace in &workloads {
        let _ = kubectl.run(&[
            "delete",
            "deployments,statefulsets,daemonsets,replicasets,jobs,pods",
            "--all",
            "-n",
            namespace,
            "--wait=true",
            "--timeout=60s",
        ]);
    }
    let _ = kubectl.run(&[
        "delete",
        "deployments,daemonsets,pods",
        "--all",
        "-n",
        NAMESPACE,
        "--wait=true",
        "--timeout=60s",
    ]);
}
