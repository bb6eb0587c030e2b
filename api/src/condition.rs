//! Status conditions, shaped like Kubernetes' `metav1.Condition`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One aspect of an object's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type in CamelCase, e.g. `Ready`, `Applied`, `Degraded`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Machine-readable reason in CamelCase, e.g. `ProfileConflict`.
    pub reason: String,
    /// What happened, for people.
    #[serde(default)]
    pub message: String,
    /// When the status last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// The `.metadata.generation` this condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
}

impl Condition {
    /// A condition computed for `generation`; its transition time is set when it is recorded.
    pub fn new(
        type_: &str,
        status: bool,
        reason: &str,
        message: impl Into<String>,
        generation: Option<i64>,
    ) -> Self {
        Condition {
            type_: type_.into(),
            status: if status { "True" } else { "False" }.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: None,
            observed_generation: generation,
        }
    }

    pub fn is_true(&self) -> bool {
        self.status == "True"
    }
}

/// Whether `conditions` holds a `True` condition of `type_`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.is_true())
}

/// `desired` with each condition's transition time carried over from `previous` when its status
/// did not change, and `now` where it did: the time says when the state began, not when it was
/// last computed (which would also make every status write a change).
pub fn carry_transition_times(
    previous: &[Condition],
    desired: Vec<Condition>,
    now: &str,
) -> Vec<Condition> {
    desired
        .into_iter()
        .map(|mut condition| {
            let before = previous.iter().find(|p| p.type_ == condition.type_);
            condition.last_transition_time = match before {
                Some(p) if p.status == condition.status => p
                    .last_transition_time
                    .clone()
                    .or_else(|| Some(now.to_owned())),
                _ => Some(now.to_owned()),
            };
            condition
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let mut old = Condition::new("Ready", true, "Fine", "", Some(1));
        old.last_transition_time = Some("2026-01-01T00:00:00Z".into());
        let kept = carry_transition_times(
            std::slice::from_ref(&old),
            vec![Condition::new("Ready", true, "StillFine", "", Some(2))],
            "2026-02-02T00:00:00Z",
        );
        assert_eq!(
            kept[0].last_transition_time.as_deref(),
            Some("2026-01-01T00:00:00Z")
        );
        let flipped = carry_transition_times(
            &[old],
            vec![Condition::new("Ready", false, "Broken", "", Some(2))],
            "2026-02-02T00:00:00Z",
        );
        assert_eq!(
            flipped[0].last_transition_time.as_deref(),
            Some("2026-02-02T00:00:00Z")
        );
    }
}
