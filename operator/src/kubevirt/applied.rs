//! Which instancetype family was last written for each profile. A profile is reconciled on every
//! report of every node it tunes (each agent writes its TunedNode every re-check), so writing its
//! family each time would be six patches per node every half minute; the family is written only
//! when what it should be differs from what was written. A change to one of the instancetypes
//! (an edit, a deletion) forgets the profile's entry, so the next reconcile writes them again.

use super::types::ClusterInstancetype;
use std::collections::HashMap;
use std::sync::Mutex;

/// The last family written, per profile.
#[derive(Debug, Default)]
pub struct AppliedFamilies {
    written: Mutex<HashMap<String, String>>,
}

fn fingerprint(family: &[ClusterInstancetype]) -> String {
    serde_json::to_string(family).expect("instancetypes serialize")
}

impl AppliedFamilies {
    /// Whether `family` differs from what was last written for `profile`.
    pub fn differs(&self, profile: &str, family: &[ClusterInstancetype]) -> bool {
        let written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        written.get(profile) != Some(&fingerprint(family))
    }

    /// Records that `family` was written for `profile`.
    pub fn written(&self, profile: &str, family: &[ClusterInstancetype]) {
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(profile.to_owned(), fingerprint(family));
    }

    /// Forgets what was written for `profile`, so the next reconcile writes it again.
    pub fn forget(&self, profile: &str) {
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(profile);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family(guest: u32) -> Vec<ClusterInstancetype> {
        let mut t = ClusterInstancetype::default();
        t.metadata.name = Some("fastvirt.vm.medium".into());
        t.spec.cpu.guest = guest;
        vec![t]
    }

    #[test]
    fn written_once_until_it_changes_or_is_forgotten() {
        let applied = AppliedFamilies::default();
        assert!(applied.differs("vm", &family(1)), "nothing written yet");
        applied.written("vm", &family(1));
        assert!(!applied.differs("vm", &family(1)));
        assert!(
            applied.differs("vm", &family(2)),
            "a changed family is written"
        );
        assert!(applied.differs("other", &family(1)), "per profile");
        applied.forget("vm");
        assert!(
            applied.differs("vm", &family(1)),
            "forgotten: written again"
        );
    }
}
