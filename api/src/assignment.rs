//! Which `NodeTuningProfile` applies to a node. The operator (for status and conflicts) and the
//! node agent (for what to apply) must decide alike, so both call this one function.

use crate::NodeTuningProfile;
use std::borrow::Borrow;
use std::collections::BTreeMap;

/// The outcome of matching the profiles against one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assignment {
    None,
    Profile(String),
    /// Several profiles select the node with the same, highest priority: none applies there.
    Conflict(Vec<String>),
}

/// Whether a node with `labels` matches an equality-based `selector` (empty selects every node).
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The profile for a node with `labels`: the selecting profile of highest priority.
pub fn assign<P: Borrow<NodeTuningProfile>>(
    profiles: &[P],
    labels: &BTreeMap<String, String>,
) -> Assignment {
    let selecting: Vec<&NodeTuningProfile> = profiles
        .iter()
        .map(Borrow::borrow)
        .filter(|p| selects(&p.spec.node_selector, labels))
        .collect();
    let Some(top) = selecting.iter().map(|p| p.spec.priority).max() else {
        return Assignment::None;
    };
    let mut winners: Vec<String> = selecting
        .iter()
        .filter(|p| p.spec.priority == top)
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    winners.sort();
    match winners.len() {
        0 => Assignment::None,
        1 => Assignment::Profile(winners.remove(0)),
        _ => Assignment::Conflict(winners),
    }
}
