//! Reconciles a NodeTuningProfile's status: which nodes it selects, where another profile of the
//! same priority makes it a conflict, and what the nodes' agents report. The operator never
//! applies tuning, reboots or drains anything; the node agents do the applying.

use crate::context::Context;
use crate::pool_config::{NodeMeta, labels};
use crate::profile_status::aggregate;
use fastvirt_api::assignment::{Assignment, assign, selects};
use fastvirt_api::condition::carry_transition_times;
use fastvirt_api::{Condition, NodeTuningProfile, NodeTuningProfileStatus, TunedNode};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use std::borrow::Borrow;
use std::sync::Arc;
use std::time::Duration;

const CONTROLLER: &str = "nodetuningprofile";
const RESYNC: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

impl ProfileError {
    pub fn reason(&self) -> &'static str {
        match self {
            ProfileError::Kube(_) => "KubeApi",
        }
    }
}

/// The nodes `profile` selects, and those of them where it conflicts with another profile, with
/// the names of the profiles it conflicts with.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub matched: u32,
    pub conflicting_nodes: Vec<String>,
    pub rivals: Vec<String>,
}

/// Matches `profile` against every node, given all profiles (pure).
pub fn select(
    profile: &NodeTuningProfile,
    profiles: &[impl Borrow<NodeTuningProfile>],
    nodes: &[Arc<NodeMeta>],
) -> Selection {
    let name = profile.name_any();
    let mut selection = Selection::default();
    for node in nodes {
        let labels = labels(node);
        if !selects(&profile.spec.node_selector, labels) {
            continue;
        }
        selection.matched += 1;
        if let Assignment::Conflict(names) = assign(profiles, labels)
            && names.contains(&name)
        {
            selection
                .conflicting_nodes
                .push(node.metadata.name.clone().unwrap_or_default());
            for rival in names.into_iter().filter(|n| *n != name) {
                if !selection.rivals.contains(&rival) {
                    selection.rivals.push(rival);
                }
            }
        }
    }
    selection.conflicting_nodes.sort();
    selection.rivals.sort();
    selection
}

/// The status of `profile` (pure): validation first, then selection and the nodes' reports.
pub fn desired_status(
    profile: &NodeTuningProfile,
    profiles: &[impl Borrow<NodeTuningProfile>],
    nodes: &[Arc<NodeMeta>],
    tuned: &[impl Borrow<TunedNode>],
) -> (NodeTuningProfileStatus, Selection) {
    let selection = select(profile, profiles, nodes);
    let conflicts = u32::try_from(selection.conflicting_nodes.len()).unwrap_or(u32::MAX);
    let mut status = aggregate(profile, selection.matched, conflicts, tuned);
    if let Err(error) = profile.spec.validate() {
        let generation = profile.metadata.generation;
        status.conditions = vec![
            Condition::new(
                "Available",
                false,
                "InvalidProfile",
                error.to_string(),
                generation,
            ),
            Condition::new("Progressing", false, "InvalidProfile", "", generation),
            Condition::new(
                "Degraded",
                true,
                "InvalidProfile",
                error.to_string(),
                generation,
            ),
        ];
    }
    (status, selection)
}

pub async fn reconcile(
    profile: Arc<NodeTuningProfile>,
    ctx: Arc<Context>,
) -> Result<Action, ProfileError> {
    let started = std::time::Instant::now();
    let result = reconcile_inner(&profile, &ctx).await;
    ctx.metrics.reconciled(CONTROLLER, started.elapsed());
    if result.is_ok() {
        ctx.succeeded(&profile.name_any());
    }
    result
}

pub fn error_policy(
    profile: Arc<NodeTuningProfile>,
    error: &ProfileError,
    ctx: Arc<Context>,
) -> Action {
    ctx.metrics.failed(CONTROLLER, error.reason());
    let delay = ctx.next_backoff(&profile.name_any());
    tracing::warn!(profile = %profile.name_any(), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

async fn reconcile_inner(
    profile: &NodeTuningProfile,
    ctx: &Context,
) -> Result<Action, ProfileError> {
    let profiles = ctx.profiles().await?;
    let nodes = ctx.nodes().await?;
    let tuned = ctx.tuned_nodes().await?;
    let (desired, selection) = desired_status(profile, &profiles, &nodes, &tuned);
    // The status is written whatever KubeVirt's API answers; a failure retries with backoff.
    let instancetypes = crate::kubevirt::apply_instancetypes(profile, &nodes, ctx).await;
    if let Err(error) = &instancetypes {
        ctx.event(
            &profile.object_ref(&()),
            true,
            "InstancetypesFailed",
            "Apply",
            format!("writing the profile's KubeVirt instancetypes: {error}"),
        )
        .await;
    }
    let previous = profile.status.clone().unwrap_or_default();
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = NodeTuningProfileStatus {
        conditions: carry_transition_times(&previous.conditions, desired.conditions, &now),
        ..desired
    };
    if profile.status.as_ref() == Some(&status) {
        instancetypes?;
        return Ok(Action::requeue(RESYNC));
    }
    announce_changes(profile, ctx, &previous, &status, &selection).await;
    // Permission: rbac::PROFILE_STATUS.
    let body = serde_json::json!({
        "apiVersion": "fastvirt.io/v1alpha1",
        "kind": "NodeTuningProfile",
        "status": status,
    });
    Api::<NodeTuningProfile>::all(ctx.client.clone())
        .patch_status(
            &profile.name_any(),
            &PatchParams::apply(crate::MANAGER).force(),
            &Patch::Apply(body),
        )
        .await?;
    instancetypes?;
    Ok(Action::requeue(RESYNC))
}

fn reason_of<'a>(status: &'a NodeTuningProfileStatus, type_: &str) -> Option<&'a str> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.reason.as_str())
}

/// Events for what a user must act on, once per change rather than once per reconcile.
async fn announce_changes(
    profile: &NodeTuningProfile,
    ctx: &Context,
    previous: &NodeTuningProfileStatus,
    status: &NodeTuningProfileStatus,
    selection: &Selection,
) {
    let reference = profile.object_ref(&());
    let degraded_reason = reason_of(status, "Degraded");
    if degraded_reason == reason_of(previous, "Degraded") {
        return;
    }
    match degraded_reason {
        Some("ProfileConflict") => {
            let shown: Vec<&str> = selection
                .conflicting_nodes
                .iter()
                .take(5)
                .map(String::as_str)
                .collect();
            let note = format!(
                "profiles {} select the same {} nodes ({}{}) with equal priority; neither applies there. Set spec.priority to decide",
                selection.rivals.join(", "),
                selection.conflicting_nodes.len(),
                shown.join(", "),
                if selection.conflicting_nodes.len() > shown.len() {
                    ", …"
                } else {
                    ""
                }
            );
            ctx.event(&reference, true, "ProfileConflict", "Assign", note)
                .await;
        }
        Some("InvalidProfile") | Some("ApplyFailed") | Some("RebootRequired") => {
            let message = status
                .conditions
                .iter()
                .find(|c| c.type_ == "Degraded")
                .map(|c| c.message.clone())
                .unwrap_or_default();
            let reason = degraded_reason.unwrap_or_default();
            ctx.event(&reference, true, reason, "Aggregate", message)
                .await;
        }
        _ => {
            ctx.event(
                &reference,
                false,
                "AsExpected",
                "Aggregate",
                format!(
                    "{} of {} selected nodes applied generation {}",
                    status.applied_nodes,
                    status.matched_nodes,
                    profile.metadata.generation.unwrap_or(0)
                ),
            )
            .await;
        }
    }
}

/// Profiles whose status may change when `tuned` changes: the one it names.
pub fn profiles_for_tuned_node(tuned: &TunedNode) -> Option<String> {
    tuned.status.as_ref().and_then(|s| s.profile.clone())
}
