//! The DaemonSet's reconcile step: find the profile that selects this node, apply it (or restore
//! when none does; or change nothing while a profile that cannot be read may select it), count
//! drift, measure congestion and write the node's `TunedNode`. The loop around it lives in
//! [`crate::runner`]; this step is what the tests drive against a fake API. What the TunedNode
//! says is put together in [`status`].

mod status;

use crate::apply::{self, ApplyError, ApplyReport};
use crate::congestion::Sample;
use crate::host;
use crate::hostfs::HostFs;
use crate::journal::{Journal, JournalError};
use crate::kubelet_drop_in::{self, DropInFile, KubeletDirs};
use crate::metrics::Metrics;
use crate::node_labels::{self, NodeFacts};
use crate::plan::{self, KSM_HANDLER_ANNOTATION, Plan, PlanOptions};
use crate::status_lines;
use fastvirt_api::assignment::{Assignment, assign, may_select};
use fastvirt_api::cpuset::CpuSet;
use fastvirt_api::lenient::{self, Lenient, Unreadable};
use fastvirt_api::{Condition, NodeTuningProfile, TunedNode, TunedNodeStatus};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Field manager of everything the agent writes.
pub const MANAGER: &str = "fastvirt-agent";

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("reading the host: {0}")]
    Host(#[from] host::HostError),
}

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub node_name: String,
    pub max_hugepage_percent: u32,
    /// Where the kubelet keeps its CPU manager state and reads its drop-ins.
    pub kubelet_dirs: KubeletDirs,
}

#[derive(Debug, Default)]
struct AgentState {
    /// The profile name and generation last applied without error.
    applied: Option<(String, Option<i64>)>,
    /// Hugepage pools the kernel filled only partly: path → pages it gave. Finding that value
    /// again is the known shortfall, not drift.
    shortfalls: BTreeMap<String, String>,
    drift_corrections: u64,
    congestion: Option<Sample>,
    previous_conditions: Vec<Condition>,
    /// Versions of profiles that cannot be read, as reported (each once).
    unreadable: BTreeSet<(String, String, String)>,
}

pub struct Agent {
    client: kube::Client,
    config: AgentConfig,
    fs: Arc<dyn HostFs>,
    metrics: Arc<Metrics>,
    recorder: Recorder,
    state: Mutex<AgentState>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// What the host step decided and did, before it becomes status.
#[derive(Debug, Default)]
struct HostOutcome {
    profile: Option<String>,
    generation: Option<i64>,
    plan: Option<Plan>,
    report: Option<ApplyReport>,
    /// (status, reason, message) of the Applied and Degraded conditions.
    applied: (bool, &'static str, String),
    degraded: (bool, &'static str, String),
    events: Vec<(EventType, &'static str, String)>,
    isolated: CpuSet,
    /// Whether the IRQs are off the isolated CPUs after this pass (`None`: nothing isolated, or
    /// not known because nothing was applied).
    irqs_isolated: Option<bool>,
    /// The applied profile has the agent write the kubelet drop-in.
    manages_kubelet_drop_in: bool,
    /// That drop-in turns on the static memory manager.
    drop_in_static_memory: bool,
}

/// What the agent reads off its Node besides the labels.
#[derive(Debug, Clone, Default)]
struct NodeReadings {
    /// KubeVirt's KSM handler owns KSM here (`kubevirt.io/ksm-handler-managed`).
    ksm_handled: bool,
    /// The memory the kubelet reserves ([`kubelet_drop_in::reserved_memory`]).
    kubelet_reserved_memory: Option<u64>,
}

impl Agent {
    pub fn new(
        client: kube::Client,
        config: AgentConfig,
        fs: Arc<dyn HostFs>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.to_owned(),
                instance: Some(config.node_name.clone()),
            },
        );
        Self {
            client,
            config,
            fs,
            metrics,
            recorder,
            state: Mutex::new(AgentState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, AgentState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One pass: read the cluster, tune or restore the host, write status. Returns the status
    /// written.
    pub async fn reconcile_once(&self) -> Result<TunedNodeStatus, ReconcileError> {
        let started = Instant::now();
        let name = &self.config.node_name;
        // rbac::NODES
        let node = Api::<Node>::all(self.client.clone()).get(name).await?;
        // rbac::PROFILES. Leniently: one profile that cannot be read must not stop the others.
        let listed = Api::<Lenient<NodeTuningProfile>>::all(self.client.clone())
            .list(&ListParams::default())
            .await?
            .items;
        let (profiles, unreadable) = lenient::split(listed);
        let first_seen = self.note_unreadable(&unreadable);
        let facts = NodeReadings {
            ksm_handled: node
                .annotations()
                .get(KSM_HANDLER_ANNOTATION)
                .is_some_and(|v| v == "true"),
            kubelet_reserved_memory: kubelet_drop_in::reserved_memory(&node),
        };
        let holding = unreadable.iter().find(|p| may_select(p, node.labels()));
        let outcome = match holding {
            Some(profile) => self.hold(profile, first_seen.contains(&profile.version_key())),
            None => self.assigned(&profiles, node.labels(), &facts)?,
        };
        let mut status = self.status(&outcome, &node)?;
        self.metrics.rechecks.inc();
        self.metrics
            .recheck_seconds
            .set(started.elapsed().as_secs_f64());
        self.write_status(&node, &mut status).await?;
        self.write_labels(&node, &outcome).await?;
        for (type_, reason, note) in outcome.events {
            self.publish(type_, reason, note).await;
        }
        Ok(status)
    }

    /// Logs and counts each version of an unreadable profile once (the operator records the Event
    /// on the profile; one per agent would be one per node); returns the versions new this pass.
    fn note_unreadable(&self, unreadable: &[Unreadable]) -> Vec<(String, String, String)> {
        let mut state = self.state();
        let present: BTreeSet<_> = unreadable.iter().map(Unreadable::version_key).collect();
        state.unreadable.retain(|key| present.contains(key));
        let mut first_seen = Vec::new();
        for profile in unreadable {
            if state.unreadable.insert(profile.version_key()) {
                tracing::warn!(
                    profile = profile.name(),
                    error = %profile.error,
                    "skipping a NodeTuningProfile that cannot be read"
                );
                self.metrics.unreadable_profiles.inc();
                first_seen.push(profile.version_key());
            }
        }
        first_seen
    }

    /// A profile that cannot be read may select this node, and may outrank the others: the host
    /// stays as it is (neither another profile nor a restore) until the profile is fixed.
    fn hold(&self, profile: &Unreadable, first_seen: bool) -> HostOutcome {
        let message = format!(
            "profile {} may select this node but cannot be read ({}); the host stays as it is until it is fixed",
            profile.name(),
            profile.error
        );
        let applied = self.state().applied.clone();
        let mut outcome = HostOutcome {
            profile: applied.as_ref().map(|(name, _)| name.clone()),
            generation: applied.and_then(|(_, generation)| generation),
            applied: (false, "UnreadableProfile", message.clone()),
            degraded: (true, "UnreadableProfile", message.clone()),
            ..HostOutcome::default()
        };
        if first_seen {
            outcome
                .events
                .push((EventType::Warning, "UnreadableProfile", message));
        }
        outcome
    }

    /// Tunes for the profile the readable ones assign to this node, or restores.
    fn assigned(
        &self,
        profiles: &[NodeTuningProfile],
        labels: &BTreeMap<String, String>,
        facts: &NodeReadings,
    ) -> Result<HostOutcome, ReconcileError> {
        let ksm_handled = facts.ksm_handled;
        Ok(match assign(profiles, labels) {
            Assignment::Profile(profile_name) => {
                match profiles.iter().find(|p| p.name_any() == profile_name) {
                    Some(profile) => self.tune(profile, facts)?,
                    None => self.release(
                        ksm_handled,
                        false,
                        "NoProfile",
                        format!("profile {profile_name} disappeared while reading"),
                    )?,
                }
            }
            Assignment::None => self.release(
                ksm_handled,
                false,
                "NoProfile",
                "no NodeTuningProfile selects this node".to_owned(),
            )?,
            Assignment::Conflict(names) => self.release(
                ksm_handled,
                true,
                "ProfileConflict",
                format!(
                    "profiles {} select this node with the same priority; none is applied",
                    names.join(", ")
                ),
            )?,
        })
    }

    fn plan_options(&self, facts: &NodeReadings) -> Result<PlanOptions, ReconcileError> {
        Ok(PlanOptions {
            max_hugepage_percent: self.config.max_hugepage_percent,
            ksm_handled_by_kubevirt: facts.ksm_handled,
            kubelet_reserved_memory: facts.kubelet_reserved_memory,
            known_managed_irqs: Journal::load(self.fs.as_ref())?.managed_irqs,
            kubelet_drop_in: Some(DropInFile::read(
                self.fs.as_ref(),
                &self.config.kubelet_dirs,
            )),
        })
    }

    /// Plans and applies `profile`; on a re-check of the same generation, every change is drift.
    fn tune(
        &self,
        profile: &NodeTuningProfile,
        facts: &NodeReadings,
    ) -> Result<HostOutcome, ReconcileError> {
        let name = profile.name_any();
        let generation = profile.metadata.generation;
        let mut outcome = HostOutcome {
            profile: Some(name.clone()),
            generation,
            ..HostOutcome::default()
        };
        if let Ok(cpus) = profile.spec.validate() {
            outcome.isolated = cpus.isolated;
        }
        let managed = profile
            .spec
            .kubelet
            .as_ref()
            .filter(|kubelet| kubelet.manage_drop_in);
        outcome.manages_kubelet_drop_in = managed.is_some();
        outcome.drop_in_static_memory = managed.is_some_and(kubelet_drop_in::aligns_memory)
            && facts.kubelet_reserved_memory.is_some();
        if profile.spec.paused {
            outcome.applied = (
                false,
                "Paused",
                format!("profile {name} is paused; settings stay as they are"),
            );
            return Ok(outcome);
        }
        let host = host::read(self.fs.as_ref())?;
        let mut plan = match plan::plan(&host, &profile.spec, &self.plan_options(facts)?) {
            Ok(plan) => plan,
            Err(error) => {
                let message = format!("profile {name} cannot apply here: {error}");
                outcome.applied = (false, "ProfileRefused", message.clone());
                outcome.degraded = (true, "ProfileRefused", message.clone());
                outcome
                    .events
                    .push((EventType::Warning, "ProfileRefused", message));
                return Ok(outcome);
            }
        };
        let mut state = self.state();
        let same_generation = state.applied == Some((name.clone(), generation));
        if !same_generation {
            state.shortfalls.clear();
        }
        plan.changes
            .retain(|change| state.shortfalls.get(&change.path) != Some(&change.current));
        if same_generation && !plan.changes.is_empty() {
            state.drift_corrections += plan.changes.len() as u64;
            self.metrics
                .drift_corrections
                .inc_by(plan.changes.len() as u64);
            let settings: Vec<&str> = plan.changes.iter().map(|c| c.setting.as_str()).collect();
            outcome.events.push((
                EventType::Warning,
                "DriftCorrected",
                format!(
                    "{} setting(s) had been changed on the host and were set back: {}",
                    settings.len(),
                    status_lines::fold(settings.iter().map(|s| (*s, "reset"))).join("; ")
                ),
            ));
        }
        match apply::apply(self.fs.as_ref(), &plan) {
            Ok(report) => {
                for shortfall in &report.shortfalls {
                    state
                        .shortfalls
                        .insert(shortfall.path.clone(), shortfall.got.to_string());
                }
                state.applied = Some((name.clone(), generation));
                let short = !report.shortfalls.is_empty();
                outcome.applied = (true, "Applied", format!("profile {name} applied"));
                outcome.degraded = if short {
                    let message = report
                        .shortfalls
                        .iter()
                        .map(|s| s.message.clone())
                        .collect::<Vec<_>>()
                        .join("; ");
                    (true, "HugepageShortfall", message)
                } else {
                    (false, "AsExpected", String::new())
                };
                if !same_generation && !plan.changes.is_empty() {
                    outcome.events.push((
                        EventType::Normal,
                        "Applied",
                        format!(
                            "profile {name}: {} setting(s) changed",
                            report.applied.len()
                        ),
                    ));
                }
                outcome.report = Some(report);
                outcome.irqs_isolated = node_labels::irqs_isolated(
                    &host,
                    &plan.changes,
                    &outcome.isolated,
                    &Journal::load(self.fs.as_ref())?.managed_irqs,
                );
            }
            Err(error) => {
                state.applied = None;
                let message = error.to_string();
                let reason = match error {
                    ApplyError::Journal(_) => "JournalFailed",
                    _ => "ApplyFailed",
                };
                outcome.applied = (false, reason, message.clone());
                outcome.degraded = (true, reason, message.clone());
                outcome.events.push((EventType::Warning, reason, message));
            }
        }
        outcome.plan = Some(plan);
        Ok(outcome)
    }

    /// No profile (or a conflict): put back everything the journal holds.
    fn release(
        &self,
        ksm_handled: bool,
        degraded: bool,
        reason: &'static str,
        message: String,
    ) -> Result<HostOutcome, ReconcileError> {
        let mut state = self.state();
        state.applied = None;
        state.shortfalls.clear();
        drop(state);
        let mut outcome = HostOutcome {
            applied: (false, reason, message.clone()),
            degraded: (
                degraded,
                if degraded { reason } else { "AsExpected" },
                if degraded { message } else { String::new() },
            ),
            ..HostOutcome::default()
        };
        let mut journal = Journal::load(self.fs.as_ref())?;
        if ksm_handled {
            // KubeVirt's handler owns KSM now: putting our original back would fight it.
            let before = journal.originals.len();
            journal
                .originals
                .retain(|path, _| !path.starts_with(host::KSM_DIR));
            if journal.originals.len() != before {
                journal.save(self.fs.as_ref())?;
            }
        }
        if journal.originals.is_empty() {
            return Ok(outcome);
        }
        let report = apply::restore(self.fs.as_ref())?;
        let mut note = format!(
            "restored {} setting(s) to their original values",
            report.restored.len()
        );
        if !report.failed.is_empty() {
            note.push_str(&format!(
                "; could not restore: {}",
                report.failed.join("; ")
            ));
            outcome.degraded = (true, "RestoreFailed", note.clone());
        }
        outcome.events.push((
            if report.failed.is_empty() {
                EventType::Normal
            } else {
                EventType::Warning
            },
            "Restored",
            note,
        ));
        Ok(outcome)
    }

    async fn write_status(
        &self,
        node: &Node,
        status: &mut TunedNodeStatus,
    ) -> Result<(), ReconcileError> {
        let name = &self.config.node_name;
        let api = Api::<TunedNode>::all(self.client.clone());
        let params = PatchParams::apply(MANAGER).force();
        let owner = node.controller_owner_ref(&()).map(|mut owner| {
            owner.controller = Some(false);
            owner
        });
        let object = json!({
            "apiVersion": TunedNode::api_version(&()),
            "kind": TunedNode::kind(&()),
            "metadata": { "name": name, "ownerReferences": owner.into_iter().collect::<Vec<_>>() },
            "spec": { "nodeName": name },
        });
        // rbac::TUNED_NODES
        api.patch(name, &params, &Patch::Apply(&object)).await?;
        let status_patch = json!({
            "apiVersion": TunedNode::api_version(&()),
            "kind": TunedNode::kind(&()),
            "status": status,
        });
        // rbac::TUNED_NODE_STATUS
        api.patch_status(name, &params, &Patch::Apply(&status_patch))
            .await?;
        Ok(())
    }

    /// The node's facts as labels, written only when they differ from the node's.
    async fn write_labels(&self, node: &Node, outcome: &HostOutcome) -> Result<(), ReconcileError> {
        let facts = NodeFacts {
            profile: outcome.profile.clone(),
            fully_applied: outcome.applied.0 && !outcome.degraded.0,
            hugepages_free: node_labels::hugepages_free(self.fs.as_ref()),
            isolated_cpus: outcome.isolated.len() as u32,
            cpu_manager_policy: kubelet_drop_in::cpu_manager_policy(
                self.fs.as_ref(),
                &self.config.kubelet_dirs,
            ),
            irqs_isolated: outcome.irqs_isolated,
        };
        let desired = node_labels::desired(&facts);
        let current = node_labels::current(node.labels());
        if current != desired {
            node_labels::apply(
                self.client.clone(),
                &self.config.node_name,
                &current,
                &desired,
            )
            .await?;
        }
        Ok(())
    }

    async fn publish(&self, type_: EventType, reason: &str, note: String) {
        let reference = TunedNode::new(&self.config.node_name, Default::default()).object_ref(&());
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note.chars().take(1000).collect()),
            action: reason.to_owned(),
            secondary: None,
        };
        // rbac::EVENTS
        if let Err(error) = self.recorder.publish(&event, &reference).await {
            tracing::warn!(%error, reason, "could not publish event");
        }
    }
}
