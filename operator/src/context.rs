//! What every reconcile shares: the client, settings, which optional APIs the cluster serves, the
//! event recorder, metrics, the informer caches (in the binary) and per-object failure backoff.

use crate::metrics::Metrics;
use crate::pool_config::NodeMeta;

use fastvirt_api::lenient::{self, Lenient};
use fastvirt_api::{BlockPool, NodeTuningProfile, TunedNode};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::PersistentVolume;
use k8s_openapi::api::storage::v1::CSIStorageCapacity;
use kube::api::ListParams;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where the operator writes its namespaced objects.
#[derive(Debug, Clone)]
pub struct Settings {
    pub namespace: String,
    pub pool_config_map: String,
    /// The CSI node DaemonSet, owner of the pool ConfigMap.
    pub node_daemonset: Option<String>,
    /// Directories the node plugins mount from the host; pools outside them are refused. Empty:
    /// not checked.
    pub pool_host_dirs: Vec<String>,
}

/// Optional APIs, found by discovery and refreshed while the operator runs: installing the
/// snapshot CRDs or CDI later must not need an operator restart.
#[derive(Debug, Default)]
pub struct OptionalApis {
    snapshots: AtomicBool,
    cdi: AtomicBool,
    instancetypes: AtomicBool,
}

impl OptionalApis {
    pub fn new(snapshots: bool, cdi: bool) -> Self {
        let apis = OptionalApis::default();
        apis.set(snapshots, cdi);
        apis
    }

    pub fn set(&self, snapshots: bool, cdi: bool) {
        self.snapshots.store(snapshots, Ordering::Relaxed);
        self.cdi.store(cdi, Ordering::Relaxed);
    }

    pub fn snapshots(&self) -> bool {
        self.snapshots.load(Ordering::Relaxed)
    }

    pub fn cdi(&self) -> bool {
        self.cdi.load(Ordering::Relaxed)
    }

    /// KubeVirt's `instancetype.kubevirt.io/v1beta1` cluster instancetypes and preferences.
    pub fn instancetypes(&self) -> bool {
        self.instancetypes.load(Ordering::Relaxed)
    }

    pub fn set_instancetypes(&self, served: bool) {
        self.instancetypes.store(served, Ordering::Relaxed);
    }
}

/// Informer caches: reconciles read these instead of listing, so 1,000 nodes cost one watch.
pub struct Caches {
    pub pools: Store<BlockPool>,
    pub profiles: Store<NodeTuningProfile>,
    pub nodes: Store<NodeMeta>,
    pub tuned_nodes: Store<TunedNode>,
    pub capacities: Store<CSIStorageCapacity>,
    pub volumes: Store<PersistentVolume>,
}

pub struct Context {
    pub client: Client,
    pub settings: Settings,
    pub apis: OptionalApis,
    pub metrics: Arc<Metrics>,
    /// The instancetype families last written (`kubevirt::applied`).
    pub applied_families: Arc<crate::kubevirt::applied::AppliedFamilies>,
    recorder: Recorder,
    caches: Option<Caches>,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    /// A context that reads through the API on every reconcile (tests, and before caches exist).
    pub fn new(client: Client, settings: Settings, apis: OptionalApis, instance: String) -> Self {
        let reporter = Reporter {
            controller: crate::MANAGER.into(),
            instance: Some(instance),
        };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
            apis,
            metrics: Arc::new(Metrics::default()),
            applied_families: Arc::default(),
            caches: None,
            failures: Mutex::new(HashMap::new()),
        }
    }

    pub fn with_caches(mut self, caches: Caches) -> Self {
        self.caches = Some(caches);
        self
    }

    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Every object of kind `K`: from its cache in the binary, listed through the API otherwise
    /// (without the objects that cannot be read; the binary's watches report those).
    async fn read<K>(&self, cache: impl FnOnce(&Caches) -> &Store<K>) -> kube::Result<Vec<Arc<K>>>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        match &self.caches {
            Some(caches) => Ok(cache(caches).state()),
            None => {
                let list = Api::<Lenient<K>>::all(self.client.clone())
                    .list(&ListParams::default())
                    .await?;
                Ok(lenient::split(list.items)
                    .0
                    .into_iter()
                    .map(Arc::new)
                    .collect())
            }
        }
    }

    pub async fn pools(&self) -> kube::Result<Vec<Arc<BlockPool>>> {
        // Permission: rbac::BLOCK_POOLS.
        self.read(|c| &c.pools).await
    }

    pub async fn profiles(&self) -> kube::Result<Vec<Arc<NodeTuningProfile>>> {
        // Permission: rbac::PROFILES.
        self.read(|c| &c.profiles).await
    }

    pub async fn tuned_nodes(&self) -> kube::Result<Vec<Arc<TunedNode>>> {
        // Permission: rbac::TUNED_NODES.
        self.read(|c| &c.tuned_nodes).await
    }

    /// Every node's metadata (`Api<PartialObjectMeta<Node>>` lists metadata only).
    pub async fn nodes(&self) -> kube::Result<Vec<Arc<NodeMeta>>> {
        // Permission: rbac::NODES.
        self.read(|c| &c.nodes).await
    }

    pub async fn capacities(&self) -> kube::Result<Vec<Arc<CSIStorageCapacity>>> {
        // Permission: rbac::STORAGE_CAPACITIES.
        self.read(|c| &c.capacities).await
    }

    /// The driver's persistent volumes whose handles name `pool`.
    pub async fn pool_volumes(&self, pool: &str) -> kube::Result<Vec<String>> {
        // Permission: rbac::PERSISTENT_VOLUMES.
        let volumes: Vec<Arc<PersistentVolume>> = self.read(|c| &c.volumes).await?;
        let prefix = format!("fv.{pool}.");
        let mut names: Vec<String> = volumes
            .into_iter()
            .filter(|pv| {
                pv.spec
                    .as_ref()
                    .and_then(|s| s.csi.as_ref())
                    .is_some_and(|csi| {
                        csi.driver == crate::PROVISIONER && csi.volume_handle.starts_with(&prefix)
                    })
            })
            .filter_map(|pv| pv.metadata.name.clone())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Records an Event on `object`. A failed Event is logged, not returned: telling the user is
    /// best effort, and must not fail the change it reports.
    pub async fn event(
        &self,
        object: &ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        // Permission: rbac::EVENTS.
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, object).await {
            tracing::warn!(%error, reason, "could not record an event");
        }
    }

    /// How long to wait before retrying `key` after another failure: 5 s doubling to 5 min.
    pub fn next_backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().expect("backoff table lock");
        let count = failures.entry(key.to_owned()).or_insert(0);
        *count = count.saturating_add(1);
        let seconds = 5u64.saturating_mul(1 << (*count - 1).min(6));
        Duration::from_secs(seconds.min(300))
    }

    /// Forgets `key`'s failures after a success.
    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .expect("backoff table lock")
            .remove(key);
    }
}
