//! The CSI services. Each RPC validates its request, takes the volume's operation lock, and runs the
//! blocking work (files, ioctls, mounts) on tokio's blocking pool.

pub mod controller;
pub mod identity;
pub mod node;
pub mod parameters;
mod request;

use crate::backend::{Backend, BackendError, VolumeRecord};
use crate::config::Config;
use crate::ids::{PoolName, VolumeId};
use crate::locks::{OperationGuard, OperationLocks};
use crate::pool_set::PoolSet;
use crate::proto::Topology;
use crate::qos::QosEnforcer;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tonic::{Response, Status};

pub use controller::ControllerService;
pub use identity::IdentityService;
pub use node::NodeService;

/// State shared by the three services.
#[derive(Debug, Clone)]
pub struct Driver {
    pub node_id: String,
    pub pools: Arc<PoolSet>,
    pub locks: OperationLocks,
    pub max_volumes_per_node: i64,
    pub serves_controller: bool,
    pub expansion: crate::config::Expansion,
    /// Keeps volumes' I/O limits in force; woken when limits or attachments change.
    pub qos: Arc<QosEnforcer>,
    /// The Kubernetes API, with `--kube-api`: I/O limits of volumes on other nodes.
    pub kube: Option<KubeApi>,
}

/// A Kubernetes client (kube's own has no `Debug`).
#[derive(Clone)]
pub struct KubeApi(pub kube::Client);

impl std::fmt::Debug for KubeApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KubeApi")
    }
}

impl Driver {
    pub fn new(config: &Config, pools: PoolSet) -> Self {
        let pools = Arc::new(pools);
        Self {
            qos: Arc::new(QosEnforcer::new(Arc::clone(&pools), config.qos_paths())),
            kube: None,
            node_id: config.node_id.clone(),
            pools,
            locks: OperationLocks::default(),
            max_volumes_per_node: config.max_volumes_per_node,
            serves_controller: config.mode.serves_controller(),
            expansion: config.expansion,
        }
    }

    /// The topology segment of every volume on this node.
    pub fn topology(&self) -> Topology {
        Topology {
            segments: HashMap::from([(crate::TOPOLOGY_NODE_KEY.to_owned(), self.node_id.clone())]),
        }
    }

    pub fn backend(&self, pool: &PoolName) -> Option<Arc<dyn Backend>> {
        self.pools.get(pool)
    }

    /// A served pool that can take new volumes now; RESOURCE_EXHAUSTED otherwise, which makes
    /// external-provisioner try another node.
    pub fn usable_backend(&self, pool: &PoolName) -> Result<Arc<dyn Backend>, Status> {
        let Some(backend) = self.pools.get_configured(pool) else {
            let why = match self.pools.unavailable_reason(pool) {
                Some(reason) => format!("is unavailable ({reason})"),
                None => "is not configured".to_owned(),
            };
            return Err(Status::resource_exhausted(format!(
                "pool {pool} {why} on node {}; another node may have it",
                self.node_id
            )));
        };
        backend.check_ready().map_err(|e| {
            Status::resource_exhausted(format!(
                "pool {pool} on node {} cannot take new volumes: {e}",
                self.node_id
            ))
        })?;
        Ok(backend)
    }

    /// A node no BlockPool selects yet runs with no pools.
    pub fn has_no_pools(&self) -> bool {
        self.pools.names().is_empty()
    }

    /// The pool a StorageClass means when it names none: `default`, or the only pool there is.
    pub fn default_pool(&self) -> Option<PoolName> {
        let default = PoolName::new("default").ok()?;
        let names = self.pools.names();
        if names.contains(&default) {
            return Some(default);
        }
        match names.as_slice() {
            [only] => Some(only.clone()),
            _ => None,
        }
    }

    /// The plugin's own health, for the Identity Probe and the built-in `/healthz`. Pools are
    /// healthy or not one by one ([`PoolSet::health`]): one bad pool must not make kubelet restart
    /// the plugin and take the healthy pools down with it.
    pub fn check_ready(&self) -> Result<(), String> {
        for pool in self.pools.health() {
            if let Some(problem) = pool.problem {
                tracing::debug!(pool = %pool.name, %problem, "pool unhealthy");
            }
        }
        Ok(())
    }

    /// Takes the operation lock of a volume, or answers ABORTED.
    pub fn lock(&self, key: &str) -> Result<OperationGuard, Status> {
        self.locks.try_lock(key).ok_or_else(|| {
            Status::aborted(format!(
                "an operation on volume {key} is already in progress"
            ))
        })
    }

    /// Takes a volume's operation lock, then reads its record: the record cannot change between the
    /// read and the operation.
    #[allow(clippy::type_complexity)]
    pub fn lock_volume(
        &self,
        volume_id: &str,
    ) -> Result<(OperationGuard, VolumeId, Arc<dyn Backend>, VolumeRecord), Status> {
        let id = parse_volume_id(volume_id)?;
        let guard = self.lock(&id.to_string())?;
        let (id, backend, record) = self.volume(volume_id)?;
        Ok((guard, id, backend, record))
    }

    /// Resolves a client-supplied volume ID to its backend and record. Malformed, foreign and unknown
    /// IDs are all NOT_FOUND: none of them names a volume here.
    pub fn volume(
        &self,
        volume_id: &str,
    ) -> Result<(VolumeId, Arc<dyn Backend>, VolumeRecord), Status> {
        let id = parse_volume_id(volume_id)?;
        let not_found = || {
            Status::not_found(format!(
                "volume {id} does not exist on node {}",
                self.node_id
            ))
        };
        let backend = self.backend(id.pool()).ok_or_else(not_found)?;
        let record = backend
            .lookup(&id)
            .map_err(backend_status)?
            .ok_or_else(not_found)?;
        Ok((id, backend, record))
    }
}

/// Parses a volume ID field: empty is INVALID_ARGUMENT, malformed is NOT_FOUND. An RPC checks its
/// other fields (`request::required`) before it parses the ID.
pub fn parse_volume_id(volume_id: &str) -> Result<VolumeId, Status> {
    request::required("volume_id", volume_id)?;
    VolumeId::parse(volume_id).map_err(|e| Status::not_found(e.to_string()))
}

/// The gRPC status for a backend failure.
pub fn backend_status(error: BackendError) -> Status {
    let message = error.to_string();
    match error {
        BackendError::NotFound(_) => Status::not_found(message),
        BackendError::NoSpace { .. } | BackendError::Overcommitted { .. } => {
            Status::resource_exhausted(message)
        }
        BackendError::InUse { .. } => Status::failed_precondition(message),
        BackendError::AccessConflict { .. } => Status::already_exists(message),
        BackendError::Inconsistent(_) => Status::failed_precondition(message),
        BackendError::Busy(_) => {
            Status::unavailable(format!("{message}; retry when it is released"))
        }
        BackendError::Pool { .. } | BackendError::Io { .. } => Status::internal(message),
    }
}

/// Operations that change host state and are still running.
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

struct InFlight;

impl InFlight {
    fn enter() -> Self {
        IN_FLIGHT.fetch_add(1, Ordering::SeqCst);
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Waits until no operation is running, at most `limit`; returns how many still are.
pub async fn drain_in_flight(limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let running = IN_FLIGHT.load(Ordering::SeqCst);
        if running == 0 || Instant::now() >= deadline {
            return running;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs blocking work off the async executor; a panic becomes INTERNAL instead of a dead connection.
/// The work runs to completion even when the client goes away, and shutdown waits for it.
pub async fn blocking<T, F>(rpc: &'static str, work: F) -> Result<Response<T>, Status>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, Status> + Send + 'static,
{
    let started = Instant::now();
    let in_flight = InFlight::enter();
    let result = tokio::task::spawn_blocking(move || {
        let _in_flight = in_flight;
        work()
    })
    .await
    .unwrap_or_else(|join_error| {
        Err(Status::internal(format!(
            "{rpc} failed unexpectedly: {join_error}"
        )))
    });
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    match &result {
        Ok(_) => tracing::debug!(rpc, elapsed_ms, "ok"),
        Err(status) => {
            tracing::info!(rpc, elapsed_ms, code = ?status.code(), message = status.message(), "refused")
        }
    }
    result.map(Response::new)
}
