//! Keeps every attached volume's limits in force in the cgroups of the pods that use it.
//!
//! A pass finds the volumes that have limits (or had them: those get theirs removed), the pods
//! that use each ([`super::consumers`]), and makes each pod cgroup's throttle files say what the
//! volume's record says, writing only what differs. Passes run every second while a volume with
//! limits is attached, so a container that starts later (on cgroup v1 each container's cgroup
//! needs its own copy) has them within a second; a ControllerModifyVolume or
//! a NodePublishVolume wakes the loop at once. Records are re-read on a wake and every 30
//! seconds, not every second: they only change through this process.

use super::cgroup::{self, CgroupVersion, DeviceNumber};
use super::consumers::{self, Held, Hierarchies};
use super::limits::QosLimits;
use crate::backend::{ThrottleTarget, VolumeRecord};
use crate::pool_set::PoolSet;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the limits are checked while some attached volume has them.
pub const PASS_INTERVAL: Duration = Duration::from_secs(1);
/// How often records are re-read without a wake.
const RECORD_INTERVAL: Duration = Duration::from_secs(30);

/// Where the enforcer looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QosPaths {
    /// kubelet's root directory (`/var/lib/kubelet`).
    pub kubelet_dir: PathBuf,
    /// Where the cgroup hierarchies are mounted (`/sys/fs/cgroup`).
    pub cgroup_root: PathBuf,
    /// `/proc`.
    pub proc_dir: PathBuf,
}

/// One volume's limits as the last pass left them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InForce {
    pub pool: String,
    pub volume_id: String,
    pub persistent_volume: String,
    pub limits: QosLimits,
    /// Cgroups whose throttle files carry the limits.
    pub cgroups: usize,
}

/// A volume a pass looks at.
#[derive(Debug, Clone)]
struct Candidate {
    pool: String,
    record: VolumeRecord,
    target: ThrottleTarget,
}

#[derive(Debug, Default)]
struct State {
    /// False until the first pass, which also clears limits a previous run may have left on
    /// volumes that have none any more.
    started: bool,
    /// The volumes with limits, from the last reading of the records.
    candidates: Vec<Candidate>,
    records_read: Option<Instant>,
    in_force: BTreeMap<String, InForce>,
    /// The last failure per volume, so a failure that repeats every pass is logged once.
    failures: BTreeMap<String, String>,
}

#[derive(Debug)]
pub struct QosEnforcer {
    pools: Arc<PoolSet>,
    paths: QosPaths,
    state: Mutex<State>,
    wake: tokio::sync::Notify,
}

impl QosEnforcer {
    pub fn new(pools: Arc<PoolSet>, paths: QosPaths) -> Self {
        Self {
            pools,
            paths,
            state: Mutex::new(State::default()),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Asks for a pass now that re-reads the records (after a change of limits or attachments).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// What the last pass left in force, by volume ID.
    pub fn in_force(&self) -> Vec<InForce> {
        self.lock().in_force.values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The attached volumes a pass must look at: those with limits, those that had them, and on
    /// the first pass every attached volume.
    fn read_candidates(&self, state: &State) -> Vec<Candidate> {
        let mut candidates = Vec::new();
        for (pool, backend) in self.pools.served() {
            let Ok(records) = backend.list() else {
                continue;
            };
            let targets = backend.throttle_targets(&records);
            for record in records {
                let Some(target) = targets.get(&record.id) else {
                    continue;
                };
                let limited = record.qos.is_some_and(|q| !q.is_unlimited());
                if limited || !state.started || state.in_force.contains_key(&record.id) {
                    candidates.push(Candidate {
                        pool: pool.to_string(),
                        target: *target,
                        record,
                    });
                }
            }
        }
        candidates
    }

    /// One pass; `reread` reads the records again. Blocking (files under /proc, /sys and kubelet's
    /// directory).
    pub fn pass(&self, reread: bool) {
        let mut state = self.lock();
        let stale = state
            .records_read
            .is_none_or(|read| read.elapsed() >= RECORD_INTERVAL);
        if reread || stale || !state.started {
            state.candidates = self.read_candidates(&state);
            state.records_read = Some(Instant::now());
        }
        let candidates = std::mem::take(&mut state.candidates);
        let mut in_force = BTreeMap::new();
        if !candidates.is_empty() {
            let published = consumers::published_volumes(&self.paths.kubelet_dir);
            let wanted: BTreeSet<Held> = candidates.iter().map(|c| c.target.held).collect();
            let held = consumers::holders(&self.paths.proc_dir, &wanted);
            let pod_cgroups = Hierarchies::discover(&self.paths.cgroup_root).pod_cgroups();
            // Every volume's throttle lines, by cgroup and device. Disk-image volumes of one pool
            // share their pool's disk, so one line may have to keep the limits of several: it
            // gets the tighter of each, written once a pass, never one after the other.
            let mut lines: BTreeMap<(PathBuf, DeviceNumber), (CgroupVersion, QosLimits)> =
                BTreeMap::new();
            let mut volume_lines = Vec::with_capacity(candidates.len());
            for candidate in &candidates {
                let limits = candidate.record.qos.unwrap_or_default();
                let mut pods = published
                    .get(&candidate.record.name)
                    .cloned()
                    .unwrap_or_default();
                pods.extend(
                    held.get(&candidate.target.held)
                        .into_iter()
                        .flatten()
                        .cloned(),
                );
                let device = DeviceNumber::from_rdev(candidate.target.device);
                let mut keys = Vec::new();
                for (version, pod_dir) in
                    pods.iter().filter_map(|uid| pod_cgroups.get(uid)).flatten()
                {
                    for target in consumers::limit_targets(*version, pod_dir) {
                        let key = (target, device);
                        lines
                            .entry(key.clone())
                            .and_modify(|(_, merged)| *merged = merged.tighter(limits))
                            .or_insert((*version, limits));
                        keys.push(key);
                    }
                }
                volume_lines.push(keys);
            }
            let mut written: BTreeMap<(PathBuf, DeviceNumber), Result<(), String>> =
                BTreeMap::new();
            for ((target, device), (version, limits)) in &lines {
                let outcome = match cgroup::ensure(target, *version, *device, limits) {
                    Ok(changed) => {
                        if changed {
                            tracing::info!(cgroup = %target.display(), %device, %limits, "I/O limits set");
                        }
                        Ok(())
                    }
                    // The container or pod went away during the pass.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => Err(format!("{}: {e}", target.display())),
                };
                written.insert((target.clone(), *device), outcome);
            }
            for (candidate, keys) in candidates.iter().zip(volume_lines) {
                let limits = candidate.record.qos.unwrap_or_default();
                let outcomes: Vec<&Result<(), String>> =
                    keys.iter().filter_map(|key| written.get(key)).collect();
                let cgroups = outcomes.iter().filter(|o| o.is_ok()).count();
                let failure = outcomes.iter().find_map(|o| o.as_ref().err().cloned());
                self.note_failure(&mut state, &candidate.record.id, failure);
                if !limits.is_unlimited() {
                    in_force.insert(
                        candidate.record.id.clone(),
                        InForce {
                            pool: candidate.pool.clone(),
                            volume_id: candidate.record.id.clone(),
                            persistent_volume: candidate.record.name.clone(),
                            limits,
                            cgroups,
                        },
                    );
                }
            }
        }
        // Volumes whose limits were removed are looked at once more, then no longer.
        state.candidates = candidates
            .into_iter()
            .filter(|c| c.record.qos.is_some_and(|q| !q.is_unlimited()))
            .collect();
        state.in_force = in_force;
        state.started = true;
    }

    fn note_failure(&self, state: &mut State, volume: &str, failure: Option<String>) {
        match failure {
            Some(message) => {
                if state.failures.get(volume) != Some(&message) {
                    tracing::warn!(volume, error = %message, "cannot set I/O limits");
                    state.failures.insert(volume.to_owned(), message);
                }
            }
            None => {
                state.failures.remove(volume);
            }
        }
    }

    /// Runs passes until `shutdown`: every [`PASS_INTERVAL`] while there is something to keep in
    /// force, and at once when woken.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut reread = true;
        loop {
            let enforcer = Arc::clone(&self);
            let _ = tokio::task::spawn_blocking(move || enforcer.pass(reread)).await;
            reread = tokio::select! {
                () = &mut shutdown => return,
                () = self.wake.notified() => true,
                () = tokio::time::sleep(PASS_INTERVAL) => false,
            };
        }
    }
}
