//! What the nodes' reports add up to for each NodeTuningProfile.

use fastvirt_api::condition::is_true;
use fastvirt_api::{Condition, NodeTuningProfile, NodeTuningProfileStatus, TunedNode};
use std::borrow::Borrow;

/// The status of `profile` from the reports of the nodes it applies to (`tuned` may hold every
/// node's report; only those naming the profile count) and the number of nodes it selects.
pub fn aggregate(
    profile: &NodeTuningProfile,
    matched_nodes: u32,
    conflicts: u32,
    tuned: &[impl Borrow<TunedNode>],
) -> NodeTuningProfileStatus {
    let name = profile.metadata.name.as_deref().unwrap_or_default();
    let generation = profile.metadata.generation;
    let (mut applied, mut degraded, mut reboot) = (0u32, 0u32, 0u32);
    for node in tuned {
        let Some(status) = node
            .borrow()
            .status
            .as_ref()
            .filter(|s| s.profile.as_deref() == Some(name))
        else {
            continue;
        };
        if is_true(&status.conditions, "Applied") && status.profile_generation == generation {
            applied += 1;
        }
        if is_true(&status.conditions, "Degraded") {
            degraded += 1;
        }
        if status.reboot_required {
            reboot += 1;
        }
    }
    let mut conditions = Vec::new();
    let progressing = applied + conflicts < matched_nodes;
    conditions.push(Condition::new(
        "Available",
        applied > 0 && degraded == 0 && conflicts == 0,
        if applied == matched_nodes {
            "AllNodesApplied"
        } else {
            "NotAllNodesApplied"
        },
        format!(
            "{applied} of {matched_nodes} selected nodes run generation {}",
            generation.unwrap_or(0)
        ),
        generation,
    ));
    conditions.push(Condition::new(
        "Progressing",
        progressing,
        if progressing { "Applying" } else { "Settled" },
        format!(
            "{} nodes still applying",
            matched_nodes.saturating_sub(applied + conflicts)
        ),
        generation,
    ));
    let (reason, message) = if conflicts > 0 {
        (
            "ProfileConflict",
            format!(
                "{conflicts} nodes are selected by another profile of the same priority; neither applies there"
            ),
        )
    } else if degraded > 0 {
        ("ApplyFailed", format!("{degraded} nodes report Degraded"))
    } else if reboot > 0 {
        (
            "RebootRequired",
            format!("{reboot} nodes lack kernel arguments until they reboot"),
        )
    } else {
        ("AsExpected", String::new())
    };
    conditions.push(Condition::new(
        "Degraded",
        conflicts > 0 || degraded > 0 || reboot > 0,
        reason,
        message,
        generation,
    ));
    NodeTuningProfileStatus {
        matched_nodes,
        applied_nodes: applied,
        degraded_nodes: degraded,
        reboot_required_nodes: reboot,
        conditions,
        observed_generation: generation,
    }
}
