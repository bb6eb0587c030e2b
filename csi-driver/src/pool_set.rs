//! The pools this node serves, kept in step with the configuration while the plugin runs.
//!
//! A pool that cannot be opened (its directory would not survive a restart, its filesystem is
//! read-only, another process holds it) is *unavailable*: it is reported and retried, and the
//! other pools go on serving. The plugin never stops because of one pool, and a changed pool file
//! needs no restart: [`PoolSet::sync`] opens new pools and closes those that left.

use crate::backend::Backend;
use crate::backend::file::FilePool;
use crate::config::PoolConfig;
use crate::ids::PoolName;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

/// Opens a pool's backend; the file backend in production, anything in unit tests.
pub type Opener = dyn Fn(&PoolConfig) -> Result<Arc<dyn Backend>, String> + Send + Sync;

#[derive(Debug, Clone)]
enum Slot {
    Served {
        path: PathBuf,
        backend: Arc<dyn Backend>,
        /// No longer configured, but it still holds volumes or snapshots: it stays served so they
        /// can be unpublished and deleted, and is closed once empty.
        leaving: bool,
    },
    Unavailable {
        path: PathBuf,
        reason: String,
    },
}

/// A pool's state as health checks report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolHealth {
    pub name: PoolName,
    pub path: PathBuf,
    /// `None` when the pool serves; otherwise why it does not.
    pub problem: Option<String>,
}

/// What a [`PoolSet::sync`] changed, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SyncReport {
    pub opened: Vec<PoolName>,
    pub closed: Vec<PoolName>,
    pub unavailable: Vec<PoolName>,
}

impl SyncReport {
    pub fn is_empty(&self) -> bool {
        self.opened.is_empty() && self.closed.is_empty() && self.unavailable.is_empty()
    }
}

pub struct PoolSet {
    slots: RwLock<BTreeMap<PoolName, Slot>>,
    opener: Box<Opener>,
    /// The overcommit percentage of pools whose configuration names none.
    default_overcommit_percent: u32,
}

impl std::fmt::Debug for PoolSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolSet")
            .field("slots", &self.slots)
            .finish_non_exhaustive()
    }
}

impl PoolSet {
    /// An empty set that opens pools with `opener`.
    pub fn new(opener: Box<Opener>) -> Self {
        Self {
            slots: RwLock::new(BTreeMap::new()),
            opener,
            default_overcommit_percent: crate::backend::overcommit::DEFAULT_PERCENT,
        }
    }

    /// An empty set of file pools keeping `reserve_percent` of each filesystem free, each
    /// promising `overcommit_percent` of its size unless its configuration says otherwise.
    pub fn files(reserve_percent: u8, overcommit_percent: u32) -> Self {
        let mut set = Self::new(Box::new(move |pool: &PoolConfig| {
            let backend = FilePool::open(pool.name.clone(), &pool.path, reserve_percent)
                .map_err(|e| e.to_string())?;
            Ok(Arc::new(backend) as Arc<dyn Backend>)
        }));
        set.default_overcommit_percent = overcommit_percent;
        set
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<PoolName, Slot>> {
        self.slots
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<PoolName, Slot>> {
        self.slots
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The backend of a served pool.
    pub fn get(&self, name: &PoolName) -> Option<Arc<dyn Backend>> {
        match self.read().get(name) {
            Some(Slot::Served { backend, .. }) => Some(Arc::clone(backend)),
            _ => None,
        }
    }

    /// The backend of a served pool that is still configured for this node: only those take new
    /// volumes.
    pub fn get_configured(&self, name: &PoolName) -> Option<Arc<dyn Backend>> {
        match self.read().get(name) {
            Some(Slot::Served {
                backend,
                leaving: false,
                ..
            }) => Some(Arc::clone(backend)),
            _ => None,
        }
    }

    /// Why a configured pool does not serve, if it does not.
    pub fn unavailable_reason(&self, name: &PoolName) -> Option<String> {
        match self.read().get(name) {
            Some(Slot::Unavailable { reason, .. }) => Some(reason.clone()),
            _ => None,
        }
    }

    /// Every served pool, by name.
    pub fn served(&self) -> Vec<(PoolName, Arc<dyn Backend>)> {
        self.read()
            .iter()
            .filter_map(|(name, slot)| match slot {
                Slot::Served { backend, .. } => Some((name.clone(), Arc::clone(backend))),
                Slot::Unavailable { .. } => None,
            })
            .collect()
    }

    /// Names of the pools that are configured or still serve, available or not.
    pub fn names(&self) -> Vec<PoolName> {
        self.read().keys().cloned().collect()
    }

    /// Each pool's health: served pools are asked (a filesystem may turn read-only at any time),
    /// unavailable ones say why they could not be opened.
    pub fn health(&self) -> Vec<PoolHealth> {
        let slots: Vec<(PoolName, Slot)> = self
            .read()
            .iter()
            .map(|(n, s)| (n.clone(), s.clone()))
            .collect();
        slots
            .into_iter()
            .map(|(name, slot)| match slot {
                Slot::Served { path, backend, .. } => PoolHealth {
                    name,
                    path,
                    problem: backend.check_ready().err().map(|e| e.to_string()),
                },
                Slot::Unavailable { path, reason } => PoolHealth {
                    name,
                    path,
                    problem: Some(reason),
                },
            })
            .collect()
    }

    /// Makes the served pools match `wanted`: opens new ones, retries unavailable ones, closes
    /// those no longer wanted once they hold nothing. A pool whose path changed is reopened at the
    /// new path only when empty: its volumes' files are at the old one.
    pub fn sync(&self, wanted: &[PoolConfig]) -> SyncReport {
        let mut report = SyncReport::default();
        let mut current: BTreeMap<PoolName, Slot> = self.read().clone();
        let mut next = BTreeMap::new();
        for pool in wanted {
            match current.remove(&pool.name) {
                Some(Slot::Served { path, backend, .. }) if path == pool.path => {
                    backend.set_overcommit_percent(self.overcommit_of(pool));
                    next.insert(pool.name.clone(), served(path, &backend, false));
                }
                Some(Slot::Served { path, backend, .. }) if !is_empty(backend.as_ref()) => {
                    tracing::error!(pool = %pool.name, served = %path.display(), configured = %pool.path.display(), "the pool's directory changed while it holds volumes; it keeps serving the old directory until they are deleted");
                    next.insert(pool.name.clone(), served(path, &backend, false));
                }
                previous => {
                    let old_reason = match &previous {
                        Some(Slot::Unavailable { reason, .. }) => Some(reason.clone()),
                        _ => None,
                    };
                    if matches!(previous, Some(Slot::Served { .. })) {
                        // An empty pool moving to another directory: its old backend holds the
                        // pool's lock, so it goes before the new one opens.
                        self.write().remove(&pool.name);
                    }
                    drop(previous);
                    match (self.opener)(pool) {
                        Ok(backend) => {
                            backend.set_overcommit_percent(self.overcommit_of(pool));
                            tracing::info!(pool = %pool.name, dir = %pool.path.display(), "pool ready");
                            report.opened.push(pool.name.clone());
                            next.insert(
                                pool.name.clone(),
                                served(pool.path.clone(), &backend, false),
                            );
                        }
                        Err(reason) => {
                            if old_reason.as_deref() != Some(reason.as_str()) {
                                tracing::error!(pool = %pool.name, dir = %pool.path.display(), %reason, "pool unavailable; the other pools keep serving, and this one is retried");
                                report.unavailable.push(pool.name.clone());
                            }
                            next.insert(
                                pool.name.clone(),
                                Slot::Unavailable {
                                    path: pool.path.clone(),
                                    reason,
                                },
                            );
                        }
                    }
                }
            }
        }
        for (name, slot) in current {
            let Slot::Served {
                path,
                backend,
                leaving,
            } = slot
            else {
                continue;
            };
            if !is_empty(backend.as_ref()) {
                if !leaving {
                    tracing::warn!(pool = %name, "pool no longer configured for this node but still holds volumes or snapshots; it serves them until they are deleted");
                }
                next.insert(name, served(path, &backend, true));
                continue;
            }
            tracing::info!(pool = %name, "pool no longer configured for this node; closed");
            report.closed.push(name);
        }
        *self.write() = next;
        report
    }

    /// The overcommit percentage `pool` asks for, or the default.
    fn overcommit_of(&self, pool: &PoolConfig) -> u32 {
        pool.overcommit_percent
            .unwrap_or(self.default_overcommit_percent)
    }

    /// Whether any configured pool is unavailable (and worth another try).
    pub fn has_unavailable(&self) -> bool {
        self.read()
            .values()
            .any(|s| matches!(s, Slot::Unavailable { .. }))
    }

    /// Whether a sync could change something even with the same configuration: an unavailable
    /// pool to retry, or a pool that left and closes once empty.
    pub fn has_pending(&self) -> bool {
        self.read().values().any(|s| {
            matches!(
                s,
                Slot::Unavailable { .. } | Slot::Served { leaving: true, .. }
            )
        })
    }
}

fn served(path: PathBuf, backend: &Arc<dyn Backend>, leaving: bool) -> Slot {
    Slot::Served {
        path,
        backend: Arc::clone(backend),
        leaving,
    }
}

/// Whether a pool holds nothing a user could still need; an unreadable pool counts as not empty.
fn is_empty(backend: &dyn Backend) -> bool {
    backend.list().is_ok_and(|v| v.is_empty())
        && backend.list_snapshots().is_ok_and(|s| s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CreateSpec;
    use crate::ids::VolumeId;

    fn pool(name: &str, path: PathBuf) -> PoolConfig {
        PoolConfig {
            name: PoolName::new(name).unwrap(),
            path,
            overcommit_percent: None,
        }
    }

    fn served_names(set: &PoolSet) -> Vec<String> {
        set.served().iter().map(|(n, _)| n.to_string()).collect()
    }

    #[test]
    fn one_pool_that_cannot_open_does_not_keep_the_others_from_serving() {
        let base = tempfile::tempdir().unwrap();
        // A file where a parent directory should be: the pool cannot be created.
        let blocker = base.path().join("blocker");
        std::fs::write(&blocker, b"").unwrap();
        let set = PoolSet::files(0, 100);
        let wanted = [
            pool("good", base.path().join("good")),
            pool("bad", blocker.join("pool")),
        ];
        let report = set.sync(&wanted);
        assert_eq!(served_names(&set), ["good"]);
        assert_eq!(report.unavailable.len(), 1);
        let bad = PoolName::new("bad").unwrap();
        assert!(set.unavailable_reason(&bad).is_some());
        let health = set.health();
        assert!(health.iter().any(|h| h.name == bad && h.problem.is_some()));
        assert!(
            health
                .iter()
                .any(|h| h.name.as_str() == "good" && h.problem.is_none())
        );

        // Once the obstacle is gone, the next sync brings it into service.
        assert!(set.has_unavailable());
        std::fs::remove_file(&blocker).unwrap();
        let report = set.sync(&wanted);
        assert_eq!(report.opened, std::slice::from_ref(&bad));
        assert_eq!(served_names(&set), ["bad", "good"]);
        assert!(!set.has_unavailable());
        assert!(
            set.sync(&wanted).is_empty(),
            "an unchanged configuration changes nothing"
        );
    }

    #[test]
    fn a_removed_pool_closes_when_empty_and_serves_its_volumes_until_then() {
        let base = tempfile::tempdir().unwrap();
        let set = PoolSet::files(0, 100);
        let a = pool("a", base.path().join("a"));
        let b = pool("b", base.path().join("b"));
        set.sync(&[a.clone(), b.clone()]);
        let backend = set.get(&b.name).unwrap();
        let id = VolumeId::for_name(&b.name, "pvc-1").unwrap();
        backend
            .create(&CreateSpec {
                id: id.clone(),
                name: "pvc-1".into(),
                capacity_bytes: 1 << 20,
                thin: true,
                source: None,
                qos: Default::default(),
                layout: Default::default(),
            })
            .unwrap();
        drop(backend);

        let report = set.sync(std::slice::from_ref(&a));
        assert!(report.closed.is_empty(), "b still holds a volume");
        assert_eq!(served_names(&set), ["a", "b"]);
        assert!(
            set.get_configured(&b.name).is_none(),
            "a leaving pool takes no new volumes"
        );
        set.get(&b.name).unwrap().delete(&id).unwrap();
        let report = set.sync(std::slice::from_ref(&a));
        assert_eq!(report.closed, std::slice::from_ref(&b.name));
        assert_eq!(served_names(&set), ["a"]);
        // Closed means its lock is released: the pool can be opened again at once.
        assert_eq!(set.sync(&[a, b.clone()]).opened, [b.name]);
    }

    #[test]
    fn an_empty_pool_moves_to_its_new_directory() {
        let base = tempfile::tempdir().unwrap();
        let set = PoolSet::files(0, 100);
        set.sync(&[pool("p", base.path().join("old"))]);
        let report = set.sync(&[pool("p", base.path().join("new"))]);
        assert_eq!(report.opened.len(), 1);
        let health = set.health();
        assert_eq!(health[0].path, base.path().join("new"));
    }
}
