//! One operation at a time per volume. A second, concurrent call for the same volume is answered with
//! ABORTED right away, as the CSI spec asks, instead of queueing behind the first.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

#[derive(Debug, Default, Clone)]
pub struct OperationLocks {
    held: Arc<Mutex<HashSet<String>>>,
}

/// Releases the volume when dropped.
#[derive(Debug)]
pub struct OperationGuard {
    held: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl OperationLocks {
    /// Takes the volume `key`, or `None` when another operation holds it.
    pub fn try_lock(&self, key: &str) -> Option<OperationGuard> {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        held.insert(key.to_owned()).then(|| OperationGuard {
            held: Arc::clone(&self.held),
            key: key.to_owned(),
        })
    }
}

impl Drop for OperationGuard {
    fn drop(&mut self) {
        let mut held = self
            .held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        held.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_until_release() {
        let locks = OperationLocks::default();
        let first = locks.try_lock("v1").unwrap();
        assert!(locks.try_lock("v1").is_none());
        assert!(locks.try_lock("v2").is_some());
        drop(first);
        assert!(locks.try_lock("v1").is_some());
    }
}
