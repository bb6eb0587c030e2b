//! Where volumes live. A backend owns one pool: it creates, lists and deletes volumes, and turns a
//! volume into a block device on this node. The file backend is the default; LVM or RBD backends
//! implement the same trait.

pub mod clone;
pub mod dir_quota;
pub mod file;
pub mod overcommit;
pub mod placement;
pub mod privacy;

use crate::ids::{PoolName, SnapshotId, VolumeId};
use crate::mountinfo::MountEntry;
use crate::qos::QosLimits;
use crate::qos::consumers::Held;
use clone::CloneMethod;
pub use fastvirt_api::volume_layout::VolumeLayout;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The durable description of a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeRecord {
    /// Format version of this record.
    pub version: u32,
    /// The CSI volume ID, `fv.<pool>.<key>`.
    pub id: String,
    /// The CSI name the volume was created with (external-provisioner uses the PV name).
    pub name: String,
    pub capacity_bytes: u64,
    /// Sparse instead of preallocated.
    pub thin: bool,
    /// Seconds since the Unix epoch.
    pub created_unix: u64,
    /// The snapshot or volume ID this volume was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// I/O limits (absent: unlimited), kept in force by the node's QoS enforcer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<QosLimits>,
    /// How the volume lies in the pool (absent: `device`, so older records and releases agree).
    #[serde(default, skip_serializing_if = "VolumeLayout::is_device")]
    pub layout: VolumeLayout,
}

pub const RECORD_VERSION: u32 = 1;

/// The durable description of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotRecord {
    pub version: u32,
    /// The CSI snapshot ID, `fs.<pool>.<key>`.
    pub id: String,
    pub name: String,
    pub source_volume_id: String,
    pub size_bytes: u64,
    /// Seconds since the Unix epoch.
    pub created_unix: u64,
    /// Whether the snapshot shares extents with its source or is a full copy.
    pub method: CloneMethod,
}

/// Where a new volume's content comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContentSource {
    Snapshot(SnapshotId),
    Volume(VolumeId),
}

impl std::fmt::Display for ContentSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Snapshot(id) => id.fmt(f),
            Self::Volume(id) => id.fmt(f),
        }
    }
}

/// What CreateVolume asks a backend for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSpec {
    pub id: VolumeId,
    pub name: String,
    pub capacity_bytes: u64,
    pub thin: bool,
    /// Content to start from; the volume is at least as large as the source.
    pub source: Option<ContentSource>,
    /// I/O limits from the StorageClass and VolumeAttributesClass.
    pub qos: QosLimits,
    pub layout: VolumeLayout,
}

/// Where a volume's I/O limits go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleTarget {
    /// The whole disk (`st_rdev`) whose throttle lines carry the limits.
    pub device: u64,
    /// What the volume's users hold open, to find the pods that use it.
    pub held: Held,
}

impl ThrottleTarget {
    /// Attached volumes' targets: their own devices.
    pub fn of_devices(devices: BTreeMap<String, AttachedDevice>) -> BTreeMap<String, Self> {
        devices
            .into_iter()
            .map(|(id, device)| {
                let target = Self {
                    device: device.rdev,
                    held: Held::Device(device.rdev),
                };
                (id, target)
            })
            .collect()
    }
}

/// Space in a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    /// The filesystem's size less the reserve.
    pub total_bytes: u64,
    /// What a new volume can get: free space less the reserve, and no more than the pool may
    /// still promise.
    pub available_bytes: u64,
    /// Free space less the reserve, whatever has been promised.
    pub free_bytes: u64,
    /// What the driver keeps back of the filesystem (`--capacity-reserve-percent`).
    pub reserved_bytes: u64,
    /// What the pool has promised: every volume's capacity and every snapshot's size.
    pub promised_bytes: u64,
}

/// A volume made visible as a block device on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedDevice {
    pub path: PathBuf,
    /// The kernel refuses writes to the device.
    pub read_only: bool,
    /// `st_rdev` of the device node, to recognise it behind bind mounts.
    pub rdev: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("volume {0} does not exist")]
    NotFound(String),
    #[error("pool {pool} has {available} bytes free, {needed} are needed")]
    NoSpace {
        pool: PoolName,
        needed: u64,
        available: u64,
    },
    #[error("volume {id} is still attached on this node ({device}); unstage it first")]
    InUse { id: String, device: String },
    #[error("{0}")]
    Busy(String),
    #[error("{0}")]
    Inconsistent(String),
    #[error("volume {id} is attached {attached} on this node; it cannot also be used {requested}")]
    AccessConflict {
        id: String,
        attached: &'static str,
        requested: &'static str,
    },
    #[error("pool {pool}: {message}")]
    Pool { pool: PoolName, message: String },
    /// The pool may not promise more: see [`overcommit`].
    #[error("pool {pool} {message}")]
    Overcommitted { pool: PoolName, message: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

impl BackendError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }
}

/// One pool of volumes on this node.
pub trait Backend: Send + Sync + std::fmt::Debug {
    fn pool(&self) -> &PoolName;
    /// How much the pool may promise, in percent of its usable size; takes effect at once.
    fn set_overcommit_percent(&self, percent: u32);
    /// Whether the pool is usable; the message says why not.
    fn check_ready(&self) -> Result<(), BackendError>;
    fn usage(&self) -> Result<PoolUsage, BackendError>;
    /// Largest volume this pool can hold at all.
    fn max_volume_bytes(&self) -> Result<u64, BackendError>;
    fn lookup(&self, id: &VolumeId) -> Result<Option<VolumeRecord>, BackendError>;
    /// All volumes, sorted by ID.
    fn list(&self) -> Result<Vec<VolumeRecord>, BackendError>;
    fn create(&self, spec: &CreateSpec) -> Result<VolumeRecord, BackendError>;
    /// Deletes a volume; refuses while it is attached. Deleting a missing volume succeeds.
    fn delete(&self, id: &VolumeId) -> Result<(), BackendError>;
    /// The device of an attached volume, found from the kernel's state (so it survives restarts).
    fn attached(&self, id: &VolumeId) -> Result<Option<AttachedDevice>, BackendError>;
    /// The devices of those of `volumes` that are attached, by volume ID: for a look at many
    /// volumes at once (a metrics scrape), where a backend can do better than asking one by one.
    fn attached_devices(&self, volumes: &[VolumeRecord]) -> BTreeMap<String, AttachedDevice> {
        volumes
            .iter()
            .filter_map(|volume| {
                let id = VolumeId::parse(&volume.id).ok()?;
                let device = self.attached(&id).ok()??;
                Some((volume.id.clone(), device))
            })
            .collect()
    }
    /// Where the I/O limits of those of `volumes` in use on this node go, by volume ID: the device
    /// to throttle and what the volume's users hold open. An attached volume's loop device by
    /// default.
    fn throttle_targets(&self, volumes: &[VolumeRecord]) -> BTreeMap<String, ThrottleTarget> {
        ThrottleTarget::of_devices(self.attached_devices(volumes))
    }
    /// Attaches the volume, or returns the device it is already attached as; a read-only attachment
    /// is enforced by the kernel for every user of the device.
    fn attach(
        &self,
        record: &VolumeRecord,
        read_only: bool,
    ) -> Result<AttachedDevice, BackendError>;
    /// Detaches the volume; refuses with `Busy` while the device is mounted or open.
    fn detach(&self, id: &VolumeId, mounts: &[MountEntry]) -> Result<(), BackendError>;
    /// `Some(reason)` when the volume is not healthy.
    fn abnormal(&self, record: &VolumeRecord) -> Option<String>;
    /// Whether snapshots and clones share extents (instant) rather than copy data.
    fn instant_clones(&self) -> bool;
    /// Takes a crash-consistent snapshot of a volume, freezing its filesystem if it is mounted here.
    fn create_snapshot(
        &self,
        id: &SnapshotId,
        name: &str,
        source: &VolumeRecord,
    ) -> Result<SnapshotRecord, BackendError>;
    fn lookup_snapshot(&self, id: &SnapshotId) -> Result<Option<SnapshotRecord>, BackendError>;
    /// All snapshots, sorted by ID.
    fn list_snapshots(&self) -> Result<Vec<SnapshotRecord>, BackendError>;
    /// Deletes a snapshot; volumes made from it keep their data. Deleting a missing one succeeds.
    fn delete_snapshot(&self, id: &SnapshotId) -> Result<(), BackendError>;
    /// Grows a volume to `new_size` bytes and lets an attached device see the new size.
    fn expand(&self, record: &VolumeRecord, new_size: u64) -> Result<VolumeRecord, BackendError>;
    /// Records new I/O limits for a volume (the node's enforcer applies them).
    fn set_qos(&self, record: &VolumeRecord, qos: QosLimits) -> Result<VolumeRecord, BackendError>;
    /// Whether the pool can hold volumes of `layout`; the message says why not and what to do.
    fn check_layout(&self, layout: VolumeLayout) -> Result<(), String> {
        match layout {
            VolumeLayout::Device => Ok(()),
            VolumeLayout::DiskImage => Err(format!(
                "pool {} cannot hold disk-image volumes: its backend has no such layout",
                self.pool()
            )),
        }
    }
    /// The directory of a `disk-image` volume, which the node bind-mounts for its consumers.
    fn disk_image_dir(&self, record: &VolumeRecord) -> Result<PathBuf, BackendError> {
        Err(BackendError::Pool {
            pool: self.pool().clone(),
            message: format!(
                "volume {} is not a disk-image volume of this backend",
                record.id
            ),
        })
    }
    /// What a `disk-image` volume's directory holds and may hold.
    fn disk_image_usage(&self, record: &VolumeRecord) -> Result<dir_quota::DirUsage, BackendError> {
        Err(BackendError::Pool {
            pool: self.pool().clone(),
            message: format!(
                "volume {} is not a disk-image volume of this backend",
                record.id
            ),
        })
    }
}
