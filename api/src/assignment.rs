//! Which `NodeTuningProfile` applies to a node. The operator (for status and conflicts) and the
//! node agent (for what to apply) must decide alike, so both call this one function.

use crate::NodeTuningProfile;
use crate::lenient::Unreadable;
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

/// Whether a profile that cannot be read may select a node with `labels`: by its selector when
/// that much can be read, and yes when not even that can (its priority, unread, may be the
/// highest).
pub fn may_select(profile: &Unreadable, labels: &BTreeMap<String, String>) -> bool {
    match profile.object.pointer("/spec/nodeSelector") {
        None | Some(serde_json::Value::Null) => true,
        Some(selector) => serde_json::from_value::<BTreeMap<String, String>>(selector.clone())
            .map_or(true, |selector| selects(&selector, labels)),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lenient::Lenient;
    use serde_json::json;

    fn unreadable(spec: serde_json::Value) -> Box<Unreadable> {
        let value = json!({"metadata": {"name": "bad"}, "spec": spec});
        Lenient::<NodeTuningProfile>::from_value(value)
            .unwrap()
            .into_result()
            .unwrap_err()
    }

    #[test]
    fn an_unreadable_profile_may_select_by_what_can_be_read_of_its_selector() {
        let labels = BTreeMap::from([("role".to_owned(), "vm".to_owned())]);
        let big = json!(3_000_000_000_u64);
        assert!(may_select(
            &unreadable(json!({"priority": big, "nodeSelector": {"role": "vm"}})),
            &labels
        ));
        assert!(!may_select(
            &unreadable(json!({"priority": big, "nodeSelector": {"role": "db"}})),
            &labels
        ));
        assert!(
            may_select(&unreadable(json!({"priority": big})), &labels),
            "no selector selects every node"
        );
        assert!(
            may_select(&unreadable(json!({"nodeSelector": {"role": 7}})), &labels),
            "an unreadable selector may select any node"
        );
    }
}
