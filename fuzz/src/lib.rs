//! What the fuzz targets share: an in-memory pool backend, the driver the RPC targets call, a
//! runtime to call it on, scratch files for the parsers that read a path, and the checks that hold
//! for every answer.
//!
//! The RPC targets drive the real `ControllerService` and `NodeService` handlers in-process. Their
//! pools are [`MemoryBackend`]s: volumes and snapshots live in a map, `attach` always refuses and
//! no volume is ever attached, so no handler reaches a loop device, mkfs or a mount. Node handlers
//! still read `/proc/self/mountinfo` and stat paths; the only one that can change the host,
//! NodeUnpublishVolume (it removes an empty target directory or file), is called only for targets
//! that do not exist (see [`path_exists`]).

use fastvirt_csi::backend::{
    AttachedDevice, Backend, BackendError, ContentSource, CreateSpec, PoolUsage, SnapshotRecord,
    VolumeRecord, clone::CloneMethod,
};
use fastvirt_csi::config::{Cli, Expansion, Mode, PoolConfig};
use fastvirt_csi::ids::{PoolName, SnapshotId, VolumeId};
use fastvirt_csi::mountinfo::MountEntry;
use fastvirt_csi::pool_set::PoolSet;
use fastvirt_csi::service::Driver;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// The node every RPC target's driver runs as.
pub const NODE_ID: &str = "node-1";
/// Pools of the RPC targets' driver: `default` and `fast`.
pub const POOLS: [&str; 2] = ["default", "fast"];
/// Names of the objects every fresh driver starts with (the seed requests name them too).
pub const SEED_VOLUME: &str = "pvc-seed";
pub const SEED_SNAPSHOT: &str = "snap-seed";
pub const SEED_CLONE: &str = "pvc-clone";
pub const SEED_FAST_VOLUME: &str = "pvc-fast";
pub const GIB: u64 = 1 << 30;
/// What every memory pool reports: 100 GiB, of which 40 GiB and a few bytes are free.
pub const POOL_TOTAL: u64 = 100 * GIB;
pub const POOL_AVAILABLE: u64 = 40 * GIB + 12_345;
/// Largest volume a memory pool takes.
pub const POOL_MAX_VOLUME: u64 = 64 * GIB;

pub fn pool(name: &str) -> PoolName {
    PoolName::new(name).expect("a valid pool name")
}

/// The ID the driver gives volume `name` in `pool`.
pub fn volume_id(pool_name: &str, name: &str) -> String {
    VolumeId::for_name(&pool(pool_name), name)
        .expect("a valid volume name")
        .to_string()
}

pub fn snapshot_id(pool_name: &str, name: &str) -> String {
    SnapshotId::for_name(&pool(pool_name), name)
        .expect("a valid snapshot name")
        .to_string()
}

#[derive(Debug, Default)]
struct State {
    volumes: BTreeMap<String, VolumeRecord>,
    snapshots: BTreeMap<String, SnapshotRecord>,
}

/// A pool that keeps its records in memory and never attaches anything.
#[derive(Debug)]
pub struct MemoryBackend {
    pool: PoolName,
    state: Mutex<State>,
}

impl MemoryBackend {
    pub fn new(pool_name: &str) -> Self {
        Self {
            pool: pool(pool_name),
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn insert_volume(&self, name: &str, capacity_bytes: u64, source: Option<String>) {
        let id = volume_id(self.pool.as_str(), name);
        self.state().volumes.insert(
            id.clone(),
            VolumeRecord {
                version: fastvirt_csi::backend::RECORD_VERSION,
                id,
                name: name.to_owned(),
                capacity_bytes,
                thin: false,
                created_unix: 1_700_000_000,
                source,
                qos: None,
                layout: Default::default(),
            },
        );
    }

    pub fn insert_snapshot(&self, name: &str, source_volume: &str) {
        let id = snapshot_id(self.pool.as_str(), name);
        let source = self.state().volumes[source_volume].clone();
        self.state().snapshots.insert(
            id.clone(),
            SnapshotRecord {
                version: 1,
                id,
                name: name.to_owned(),
                source_volume_id: source.id,
                size_bytes: source.capacity_bytes,
                created_unix: 1_700_000_000,
                method: CloneMethod::Copy,
            },
        );
    }

    fn used(&self) -> u64 {
        self.state()
            .volumes
            .values()
            .filter(|v| !v.thin)
            .map(|v| v.capacity_bytes)
            .sum()
    }
}

impl Backend for MemoryBackend {
    fn pool(&self) -> &PoolName {
        &self.pool
    }

    fn set_overcommit_percent(&self, _percent: u32) {}

    fn check_ready(&self) -> Result<(), BackendError> {
        Ok(())
    }

    fn usage(&self) -> Result<PoolUsage, BackendError> {
        Ok(PoolUsage {
            total_bytes: POOL_TOTAL,
            available_bytes: POOL_AVAILABLE,
            free_bytes: POOL_AVAILABLE,
            reserved_bytes: 0,
            promised_bytes: POOL_TOTAL - POOL_AVAILABLE,
        })
    }

    fn max_volume_bytes(&self) -> Result<u64, BackendError> {
        Ok(POOL_MAX_VOLUME)
    }

    fn lookup(&self, id: &VolumeId) -> Result<Option<VolumeRecord>, BackendError> {
        assert_eq!(id.pool(), &self.pool, "a lookup reached the wrong pool");
        Ok(self.state().volumes.get(&id.to_string()).cloned())
    }

    fn list(&self) -> Result<Vec<VolumeRecord>, BackendError> {
        Ok(self.state().volumes.values().cloned().collect())
    }

    fn create(&self, spec: &CreateSpec) -> Result<VolumeRecord, BackendError> {
        assert_eq!(
            spec.id.pool(),
            &self.pool,
            "a create reached the wrong pool"
        );
        assert!(
            spec.capacity_bytes <= POOL_MAX_VOLUME,
            "create of {} bytes is above max_volume_bytes",
            spec.capacity_bytes
        );
        if !spec.thin && spec.capacity_bytes > POOL_AVAILABLE.saturating_sub(self.used()) {
            return Err(BackendError::NoSpace {
                pool: self.pool.clone(),
                needed: spec.capacity_bytes,
                available: POOL_AVAILABLE.saturating_sub(self.used()),
            });
        }
        if let Some(source) = &spec.source {
            let size = match source {
                ContentSource::Snapshot(id) => self
                    .state()
                    .snapshots
                    .get(&id.to_string())
                    .map(|s| s.size_bytes),
                ContentSource::Volume(id) => self
                    .state()
                    .volumes
                    .get(&id.to_string())
                    .map(|v| v.capacity_bytes),
            };
            let size = size.ok_or_else(|| BackendError::NotFound(source.to_string()))?;
            assert!(
                spec.capacity_bytes >= size,
                "a volume from {source} ({size} bytes) was made smaller: {}",
                spec.capacity_bytes
            );
        }
        let record = VolumeRecord {
            version: fastvirt_csi::backend::RECORD_VERSION,
            id: spec.id.to_string(),
            name: spec.name.clone(),
            capacity_bytes: spec.capacity_bytes,
            thin: spec.thin,
            created_unix: 1_700_000_001,
            source: spec.source.as_ref().map(ToString::to_string),
            qos: (!spec.qos.is_unlimited()).then_some(spec.qos),
            layout: spec.layout,
        };
        self.state()
            .volumes
            .insert(record.id.clone(), record.clone());
        Ok(record)
    }

    fn delete(&self, id: &VolumeId) -> Result<(), BackendError> {
        self.state().volumes.remove(&id.to_string());
        Ok(())
    }

    fn attached(&self, _id: &VolumeId) -> Result<Option<AttachedDevice>, BackendError> {
        Ok(None)
    }

    fn attach(
        &self,
        record: &VolumeRecord,
        _read_only: bool,
    ) -> Result<AttachedDevice, BackendError> {
        Err(BackendError::Busy(format!(
            "the fuzz backend attaches nothing ({})",
            record.id
        )))
    }

    fn detach(&self, _id: &VolumeId, _mounts: &[MountEntry]) -> Result<(), BackendError> {
        Ok(())
    }

    fn abnormal(&self, _record: &VolumeRecord) -> Option<String> {
        None
    }

    fn instant_clones(&self) -> bool {
        false
    }

    fn create_snapshot(
        &self,
        id: &SnapshotId,
        name: &str,
        source: &VolumeRecord,
    ) -> Result<SnapshotRecord, BackendError> {
        assert_eq!(id.pool(), &self.pool, "a snapshot reached the wrong pool");
        let record = SnapshotRecord {
            version: 1,
            id: id.to_string(),
            name: name.to_owned(),
            source_volume_id: source.id.clone(),
            size_bytes: source.capacity_bytes,
            created_unix: 1_700_000_002,
            method: CloneMethod::Copy,
        };
        self.state()
            .snapshots
            .insert(record.id.clone(), record.clone());
        Ok(record)
    }

    fn lookup_snapshot(&self, id: &SnapshotId) -> Result<Option<SnapshotRecord>, BackendError> {
        Ok(self.state().snapshots.get(&id.to_string()).cloned())
    }

    fn list_snapshots(&self) -> Result<Vec<SnapshotRecord>, BackendError> {
        Ok(self.state().snapshots.values().cloned().collect())
    }

    fn delete_snapshot(&self, id: &SnapshotId) -> Result<(), BackendError> {
        self.state().snapshots.remove(&id.to_string());
        Ok(())
    }

    fn expand(&self, record: &VolumeRecord, new_size: u64) -> Result<VolumeRecord, BackendError> {
        assert!(
            new_size <= POOL_MAX_VOLUME,
            "expand to {new_size} bytes is above max_volume_bytes"
        );
        let mut state = self.state();
        let stored = state
            .volumes
            .get_mut(&record.id)
            .ok_or_else(|| BackendError::NotFound(record.id.clone()))?;
        stored.capacity_bytes = stored.capacity_bytes.max(new_size);
        Ok(stored.clone())
    }

    fn set_qos(
        &self,
        record: &VolumeRecord,
        qos: fastvirt_csi::qos::QosLimits,
    ) -> Result<VolumeRecord, BackendError> {
        let mut state = self.state();
        let stored = state
            .volumes
            .get_mut(&record.id)
            .ok_or_else(|| BackendError::NotFound(record.id.clone()))?;
        stored.qos = (!qos.is_unlimited()).then_some(qos);
        Ok(stored.clone())
    }
}

/// A driver serving `pools`, each a [`MemoryBackend`] that `fill` stocks when the pool opens. The
/// configuration comes from `Cli::resolve`, as the binary's does (`--pool NAME=DIR` for each pool).
fn driver_with(pool_names: &[&str], fill: fn(&MemoryBackend), expansion: Expansion) -> Driver {
    let cli = Cli {
        node_id: Some(NODE_ID.to_owned()),
        mode: Some(Mode::All),
        expansion: Some(expansion),
        pools: pool_names
            .iter()
            .map(|name| format!("{name}=/nonexistent/fastvirt-fuzz/{name}"))
            .collect(),
        ..Cli::default()
    };
    let config = if pool_names.is_empty() {
        Cli {
            mode: Some(Mode::Controller),
            ..cli
        }
    } else {
        cli
    }
    .resolve()
    .expect("the fuzz driver's configuration");
    let pools = PoolSet::new(Box::new(move |pool: &PoolConfig| {
        let backend = MemoryBackend::new(pool.name.as_str());
        fill(&backend);
        Ok(Arc::new(backend) as Arc<dyn Backend>)
    }));
    let report = pools.sync(&config.pools);
    assert_eq!(report.opened.len(), pool_names.len(), "{report:?}");
    Driver::new(&config, pools)
}

/// The seed objects: in `default` a 1 GiB volume, a snapshot of it and a clone of that; in `fast`
/// one 2 GiB volume.
fn seed_objects(backend: &MemoryBackend) {
    match backend.pool.as_str() {
        "default" => {
            backend.insert_volume(SEED_VOLUME, GIB, None);
            backend.insert_snapshot(SEED_SNAPSHOT, &volume_id("default", SEED_VOLUME));
            backend.insert_volume(SEED_CLONE, GIB, Some(snapshot_id("default", SEED_SNAPSHOT)));
        }
        "fast" => backend.insert_volume(SEED_FAST_VOLUME, 2 * GIB, None),
        _ => {}
    }
}

/// A fresh driver on pools `default` and `fast` holding the seed objects, serving both the
/// controller and the node services.
pub fn driver(expansion: Expansion) -> Driver {
    driver_with(&POOLS, seed_objects, expansion)
}

/// A driver with the given pools and nothing in them (for the StorageClass parameter target).
pub fn empty_driver(pool_names: &[&str]) -> Driver {
    driver_with(pool_names, |_| {}, Expansion::Controller)
}

/// Runs a handler's future to completion on one shared runtime (its blocking pool runs the work).
pub fn block_on<F: Future>(future: F) -> F::Output {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime")
        })
        .block_on(future)
}

/// What holds for every refusal: a handler never fails INTERNAL (the memory backend has no I/O to
/// fail; a panic in a handler is caught and reported as INTERNAL) nor UNKNOWN.
pub fn check_status(rpc: &str, status: &tonic::Status) {
    assert!(
        !matches!(status.code(), tonic::Code::Internal | tonic::Code::Unknown),
        "{rpc} failed {:?}: {}",
        status.code(),
        status.message()
    );
}

/// Asserts the code of a refusal.
pub fn expect_code<T: std::fmt::Debug>(
    rpc: &str,
    why: &str,
    result: &Result<T, tonic::Status>,
    code: tonic::Code,
) {
    match result {
        Err(status) if status.code() == code => {}
        other => panic!("{rpc}: {why}: expected {code:?}, got {other:?}"),
    }
}

/// Whether a path is something on this host (even a dangling symlink).
pub fn path_exists(path: &str) -> bool {
    !path.is_empty() && std::fs::symlink_metadata(path).is_ok()
}

/// The rule `request::absolute_path` enforces, written out independently: what a path field must be
/// for the request to get past INVALID_ARGUMENT.
pub fn is_acceptable_path(value: &str) -> bool {
    let path = Path::new(value);
    !value.is_empty()
        && value.len() <= 4096
        && !value.contains('\0')
        && path.is_absolute()
        && !path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
}

/// A directory of this process for the parsers that read a file, below `$TMPDIR`.
pub fn scratch_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("fastvirt-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating the scratch directory");
        dir
    })
}

/// Writes `bytes` to `name` in the scratch directory and returns its path.
pub fn scratch_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = scratch_dir().join(name);
    std::fs::write(&path, bytes).expect("writing a scratch file");
    path
}

/// Escapes a mountinfo field the way the kernel does (space, tab, newline and backslash as
/// three-digit octal), plus a lone `-`, which would read as the optional fields' separator.
pub fn mountinfo_escape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    for c in field.chars() {
        match c {
            ' ' | '\t' | '\n' | '\\' | '-' => out.push_str(&format!("\\{:03o}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// One mountinfo line for an entry, as the kernel would print it.
pub fn mountinfo_line(entry: &MountEntry) -> String {
    format!(
        "1 1 {}:{} {} {} {} - {} {} rw\n",
        entry.major,
        entry.minor,
        mountinfo_escape(&entry.root.to_string_lossy()),
        mountinfo_escape(&entry.mount_point.to_string_lossy()),
        entry.mount_options.join(","),
        entry.fs_type,
        mountinfo_escape(&entry.source),
    )
}
