//! Chaos while volumes come and go: for a bounded number of rounds, pods with Block and Filesystem
//! claims are created and deleted while the node-plugin container is killed with SIGKILL at a
//! random point of each round, and the API server is restarted once mid-way. Afterwards every
//! claim that should be is Bound, every pod that should run runs on its data, every deleted claim
//! is gone with its PersistentVolume, and once the rest are deleted too no loop device, mount,
//! backing file, record or temporary file of theirs is left on the host.
//!
//! The kill points come from a seed the test prints; `FASTVIRT_CHAOS_SEED=<seed>` replays a run.

use super::{POOL, TEST_NS, node_plugin_pod, pod, pod_phase, pvc, wait};
use fastvirt_e2e::cluster::kubectl::Kubectl;
use fastvirt_e2e::cluster::{self, State, host};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Rounds of churn; each kills the node plugin once.
const ROUNDS: usize = 4;
/// A round's claims and pods are deleted this many rounds later, so creations and deletions
/// are in flight together.
const KEEP_ROUNDS: usize = 2;
/// The latest point in a round at which the node plugin is killed.
const KILL_WINDOW: Duration = Duration::from_secs(8);
/// The round in which the API server is restarted.
const APISERVER_ROUND: usize = ROUNDS / 2;

pub fn node_plugin_kills_and_an_apiserver_restart_lose_nothing(kubectl: &Kubectl, state: &State) {
    let seed = std::env::var("FASTVIRT_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("chaos: seed {seed} (FASTVIRT_CHAOS_SEED={seed} replays these kill points)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let before = HostLeftovers::of(state);
    let restarts_before = plugin_restarts(kubectl);

    let mut kills = 0;
    for round in 0..ROUNDS {
        let kill_after = KILL_WINDOW.mul_f64(rng.f64());
        let apiserver_after = KILL_WINDOW.mul_f64(rng.f64());
        std::thread::scope(|scope| {
            let killer = scope.spawn(move || {
                std::thread::sleep(kill_after);
                kill_node_plugin()
            });
            let restarter = (round == APISERVER_ROUND).then(|| {
                scope.spawn(move || {
                    std::thread::sleep(apiserver_after);
                    cluster::restart_apiserver(&state.workdir)
                })
            });
            create_round(kubectl, round);
            if let Some(old) = round.checked_sub(KEEP_ROUNDS) {
                delete_round(kubectl, old);
            }
            let killed = killer.join().expect("the killer thread");
            eprintln!("chaos: round {round}: node plugin pid {killed} killed after {kill_after:?}");
            kills += 1;
            if let Some(restarter) = restarter {
                let away = restarter
                    .join()
                    .expect("the restarter thread")
                    .expect("the API server comes back");
                eprintln!(
                    "chaos: round {round}: API server restarted after {apiserver_after:?}, away {away:?}"
                );
            }
        });
        // The plugin is back before the next round, so each kill hits a running plugin.
        wait(kubectl, "the node plugin back after a kill", 180, || {
            node_plugin_pod(kubectl)
        });
    }

    let kept: Vec<usize> = (ROUNDS - KEEP_ROUNDS..ROUNDS).collect();
    for &round in &kept {
        for claim in Claim::of_round(round) {
            wait(kubectl, &format!("claim {} Bound", claim.name), 300, || {
                Ok((claim_phase(kubectl, &claim.name)? == "Bound").then_some(()))
            });
            let logs = wait(
                kubectl,
                &format!("pod {} running on its data", claim.pod),
                300,
                || {
                    if pod_phase(kubectl, &claim.pod)? != "Running" {
                        return Ok(None);
                    }
                    let logs = kubectl.run(&["logs", &claim.pod, "-n", TEST_NS])?;
                    Ok(logs.contains(&claim.marker()).then_some(logs))
                },
            );
            assert!(logs.contains(&claim.marker()), "{logs}");
        }
    }
    wait_claims_gone(kubectl, 0..ROUNDS - KEEP_ROUNDS);
    let restarts = plugin_restarts(kubectl) - restarts_before;
    assert!(
        restarts >= kills,
        "every kill restarted the node plugin container ({kills} kills, {restarts} restarts)"
    );

    for &round in &kept {
        delete_round(kubectl, round);
    }
    wait_claims_gone(kubectl, 0..ROUNDS);
    wait(
        kubectl,
        "the chaos claims' PersistentVolumes gone",
        300,
        || {
            let pvs = kubectl.get_json(&["pv"])?;
            let chaos: Vec<String> = pvs["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|pv| {
                    pv["spec"]["claimRef"]["name"]
                        .as_str()
                        .is_some_and(|name| name.starts_with("chaos-"))
                })
                .filter_map(|pv| pv["metadata"]["name"].as_str().map(str::to_owned))
                .collect();
            Ok(chaos.is_empty().then_some(()))
        },
    );
    // kubelet unstages when a pod goes and the provisioner deletes when its claim goes, in
    // either order, so the host is compared until both have finished. Only what is new counts:
    // the earlier steps' volumes may still be unstaging or deleting when the chaos starts, and
    // what they leave behind is the business of the checks after this one.
    wait(kubectl, "nothing of the chaos left on the host", 60, || {
        let left = HostLeftovers::of(state).not_in(&before);
        if left.is_empty() {
            Ok(Some(()))
        } else {
            Err(anyhow::anyhow!("left on the host: {left:?}"))
        }
    });
}

/// A claim of the churn and the pod that uses it.
struct Claim {
    name: String,
    pod: String,
    block: bool,
    round: usize,
}

impl Claim {
    fn of_round(round: usize) -> [Claim; 2] {
        [true, false].map(|block| {
            let mode = if block { "block" } else { "fs" };
            Claim {
                name: format!("chaos-{round}-{mode}"),
                pod: format!("chaos-{round}-{mode}-pod"),
                block,
                round,
            }
        })
    }

    /// What the pod writes to its volume, reads back and prints.
    fn marker(&self) -> String {
        format!("chaos-marker-{}-{}", self.round, self.block)
    }

    /// Writes the marker, reads it back from the volume
    /// and prints it, then keeps running with the volume in use.
    fn script(&self) -> String {
        let marker = self.marker();
        if self.block {
            format!(
                "printf '{marker}' > /tmp/m && dd if=/tmp/m of=/dev/xvda bs=4096 conv=sync,fsync 2>/dev/null && dd if=/dev/xvda bs=4096 count=1 2>/dev/null | head -c {len}; echo; sleep 3600",
                len = marker.len()
            )
        } else {
            format!("echo {marker} > /data/m && sync && cat /data/m; sleep 3600")
        }
    }
}

/// Creates a round's claims and pods, retrying while the API server is away.
fn create_round(kubectl: &Kubectl, round: usize) {
    for claim in Claim::of_round(round) {
        // The class formats xfs, which needs 300 MiB.
        let size = if claim.block { "64Mi" } else { "320Mi" };
        let claim_manifest = pvc(&claim.name, POOL, claim.block, size, None);
        let pod_manifest = pod(&claim.pod, &claim.name, claim.block, &claim.script());
        for manifest in [claim_manifest, pod_manifest] {
            wait(kubectl, &format!("creating {}", claim.name), 180, || {
                Ok(kubectl.apply(&manifest).ok())
            });
        }
    }
}

/// Asks for a round's pods and claims to be deleted, without waiting for them to go.
fn delete_round(kubectl: &Kubectl, round: usize) {
    for claim in Claim::of_round(round) {
        for (kind, name) in [("pod", &claim.pod), ("pvc", &claim.name)] {
            wait(kubectl, &format!("deleting {kind} {name}"), 180, || {
                Ok(kubectl
                    .run(&[
                        "delete",
                        kind,
                        name,
                        "-n",
                        TEST_NS,
                        "--wait=false",
                        "--ignore-not-found",
                    ])
                    .ok())
            });
        }
    }
}

fn wait_claims_gone(kubectl: &Kubectl, rounds: std::ops::Range<usize>) {
    for round in rounds {
        for claim in Claim::of_round(round) {
            wait(
                kubectl,
                &format!("claim {} deleted", claim.name),
                300,
                || Ok(gone(kubectl, "pvc", &claim.name)?.then_some(())),
            );
        }
    }
}

fn claim_phase(kubectl: &Kubectl, name: &str) -> anyhow::Result<String> {
    let claim = kubectl.get_json(&["pvc", name, "-n", TEST_NS])?;
    Ok(claim["status"]["phase"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

fn gone(kubectl: &Kubectl, kind: &str, name: &str) -> anyhow::Result<bool> {
    let out = kubectl.run(&[
        "get",
        kind,
        name,
        "-n",
        TEST_NS,
        "--ignore-not-found",
        "-o",
        "name",
    ])?;
    Ok(out.trim().is_empty())
}

/// The node plugin containers' restart count on the kubelet's node.
fn plugin_restarts(kubectl: &Kubectl) -> usize {
    let name = wait(kubectl, "a ready node plugin", 180, || {
        node_plugin_pod(kubectl)
    });
    let pod = kubectl
        .get_json(&["pod", &name, "-n", cluster::NAMESPACE])
        .expect("the node plugin pod");
    pod["status"]["containerStatuses"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["name"] == "fastvirt-csi")
        .map(|c| c["restartCount"].as_u64().unwrap_or_default() as usize)
        .sum()
}

/// SIGKILLs the node plugin running in a container (not the extra nodes' plugins, which run on
/// the host, nor the controller's pool-less one), found on the host so that it works while the API server is away. Waits for one to
/// be running first: the previous kill's replacement may still be starting.
fn kill_node_plugin() -> i32 {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(pid) = containerized_plugin() {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .expect("SIGKILL the node plugin");
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "no node plugin container came up within 2 min"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn containerized_plugin() -> Option<i32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            // The controller Deployment runs a fastvirt-csi too, in `--mode=controller`.
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let node_plugin = cmdline.split(|b| *b == 0).any(|arg| arg == b"--mode=all");
            comm.trim() == "fastvirt-csi"
                && node_plugin
                && cgroup.contains("kubepods")
                && cluster::process::pid_alive(*pid)
        })
}

/// What volumes leave on the host: CSI mounts under the kubelet directory, loop devices of the
/// cluster, and the files in the pool and the plugin's state directory.
#[derive(Debug)]
struct HostLeftovers {
    csi_mounts: BTreeSet<PathBuf>,
    loop_backing_files: BTreeSet<PathBuf>,
    pool_files: BTreeSet<PathBuf>,
    state_files: BTreeSet<PathBuf>,
}

impl HostLeftovers {
    fn of(state: &State) -> Self {
        let layout = state.layout();
        Self {
            csi_mounts: host::mounts_under(&[&state.kubelet_dir])
                .into_iter()
                .filter(|m| {
                    let text = m.to_string_lossy();
                    text.contains("kubernetes.io~csi") || text.contains("kubernetes.io/csi")
                })
                .collect(),
            loop_backing_files: host::loops_under(&state.workdir)
                .iter()
                .filter_map(|device| device.backing_file())
                .map(|file| file.path)
                .collect(),
            pool_files: files_under(&layout.pool_host_dir()),
            state_files: files_under(&layout.csi_state_dir()),
        }
    }
}

impl HostLeftovers {
    /// What is here and was not in `earlier`.
    fn not_in(&self, earlier: &Self) -> Self {
        let new = |now: &BTreeSet<PathBuf>, then: &BTreeSet<PathBuf>| -> BTreeSet<PathBuf> {
            now.difference(then).cloned().collect()
        };
        Self {
            csi_mounts: new(&self.csi_mounts, &earlier.csi_mounts),
            loop_backing_files: new(&self.loop_backing_files, &earlier.loop_backing_files),
            pool_files: new(&self.pool_files, &earlier.pool_files),
            state_files: new(&self.state_files, &earlier.state_files),
        }
    }

    fn is_empty(&self) -> bool {
        self.csi_mounts.is_empty()
            && self.loop_backing_files.is_empty()
            && self.pool_files.is_empty()
            && self.state_files.is_empty()
    }
}

fn files_under(root: &Path) -> BTreeSet<PathBuf> {
    let mut files = BTreeSet::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                pending.push(path.clone());
            }
            files.insert(path);
        }
    }
    files
}
