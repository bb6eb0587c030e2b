//! The file backend: each volume is `<key>.img` in the pool directory, described by `<key>.json`, and
//! attached as a loop device with direct I/O.
//!
//! Snapshots live the same way in `snapshots/`. Snapshots and clones are reflinks where the pool's
//! filesystem shares extents (XFS with reflink, btrfs) and sparse copies elsewhere.
//!
//! The record is written last on create and removed first on delete, so it alone decides whether a
//! volume exists; an image without a record is the leftover of a crash and is reclaimed.

mod consistency;
mod disk_image;
mod records;
mod space;

pub use disk_image::mounts_of_dir;

use super::clone;
use super::dir_quota::{DirQuota, DirUsage};
use super::{
    AttachedDevice, Backend, BackendError, ContentSource, CreateSpec, PoolUsage, RECORD_VERSION,
    SnapshotRecord, VolumeLayout, VolumeRecord,
};
use super::{overcommit, placement, privacy};
use crate::ids::{PoolName, SnapshotId, VolumeId};
use crate::loopdev::{self, AttachOptions, LoopDevice, LoopError};
use crate::mountinfo::MountEntry;
use crate::qos::QosLimits;
use nix::sys::statvfs::{FsFlags, statvfs};
use std::fs::OpenOptions;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug)]
pub struct FilePool {
    name: PoolName,
    dir: PathBuf,
    direct_io: bool,
    /// The pool's filesystem can share extents between files.
    reflink: bool,
    /// Share of the filesystem never offered for volumes.
    reserve_percent: u8,
    /// How much the pool may promise, in percent of its usable size (see [`overcommit`]); the
    /// pool file may change it while the pool serves.
    overcommit_percent: std::sync::atomic::AtomicU32,
    /// What keeps `disk-image` volumes within their capacity, or why the pool cannot hold them.
    dir_quota: Result<DirQuota, String>,
    /// Held for the pool's lifetime: one process manages a pool's devices, or their locks and
    /// kernel state would race.
    _lock: nix::fcntl::Flock<std::fs::File>,
}

impl FilePool {
    /// Opens the pool in `dir`, creating the directory if needed, and reclaims crash leftovers. A
    /// directory that would not survive a restart of the container or the node is refused before
    /// anything is created (see [`placement`]).
    pub fn open(name: PoolName, dir: &Path, reserve_percent: u8) -> Result<Self, BackendError> {
        placement::check_here(dir).map_err(|message| BackendError::Pool {
            pool: name.clone(),
            message,
        })?;
        privacy::create_dir_all(dir).map_err(BackendError::io(format!(
            "creating pool directory {}",
            dir.display()
        )))?;
        // Canonical, because sysfs reports loop backing files by their resolved path.
        let dir = dir
            .canonicalize()
            .map_err(BackendError::io(format!("resolving {}", dir.display())))?;
        let lock = Self::lock(&name, &dir)?;
        let snapshots = dir.join(SNAPSHOT_DIR);
        privacy::create_dir_all(&snapshots).map_err(BackendError::io(format!(
            "creating {}",
            snapshots.display()
        )))?;
        Self::make_private(&name, &dir, &snapshots);
        let reflink = clone::supports_reflink(&dir);
        if reflink {
            tracing::info!(pool = %name, "snapshots and clones are instant (reflink)");
        } else {
            tracing::warn!(pool = %name, dir = %dir.display(), "the pool's filesystem cannot reflink: snapshots and clones copy data, taking time proportional to the data written; use XFS (mkfs.xfs -m reflink=1) or btrfs for instant ones");
        }
        let dir_quota = DirQuota::probe(&dir).map_err(|e| e.to_string());
        match &dir_quota {
            Ok(quota) => {
                tracing::info!(pool = %name, "disk-image volumes are limited by {}", quota.describe())
            }
            Err(reason) => tracing::info!(pool = %name, %reason, "no disk-image volumes"),
        }
        let pool = Self {
            name,
            dir,
            direct_io: true,
            reflink,
            reserve_percent,
            overcommit_percent: overcommit::DEFAULT_PERCENT.into(),
            dir_quota,
            _lock: lock,
        };
        pool.reclaim_orphans(&pool.dir, true);
        pool.thaw_attached_filesystems();
        pool.reclaim_orphans(&snapshots, false);
        Ok(pool)
    }

    /// Takes group and other access away from what an earlier version left readable, and says so
    /// once.
    fn make_private(name: &PoolName, dir: &Path, snapshots: &Path) {
        let mut changed = 0;
        for d in [dir, snapshots] {
            match privacy::tighten(d) {
                Ok(n) => changed += n,
                // A read-only pool still serves reads; it is tightened when it is writable again.
                Err(error) => {
                    tracing::warn!(pool = %name, dir = %d.display(), %error, "cannot restrict access to the pool's files")
                }
            }
        }
        if changed > 0 {
            tracing::warn!(pool = %name, changed, "made the pool's files and directories private to root (they were readable by other users)");
        }
    }

    fn lock(name: &PoolName, dir: &Path) -> Result<nix::fcntl::Flock<std::fs::File>, BackendError> {
        let path = dir.join(".fastvirt.lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(privacy::FILE_MODE)
            .open(&path)
            .or_else(|_| std::fs::File::open(&path))
            .map_err(BackendError::io(format!("opening {}", path.display())))?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(
            |(_, errno)| BackendError::Pool {
                pool: name.clone(),
                message: format!(
                    "is managed by another fastvirt-csi process ({} is locked: {errno})",
                    path.display()
                ),
            },
        )
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that holds the volume's data: `<key>.img`, or `disk.img` in the directory of a
    /// `disk-image` volume.
    pub fn data_path(&self, id: &VolumeId) -> PathBuf {
        match disk_image::layout_on_disk(self, id) {
            VolumeLayout::Device => self.dir.join(format!("{}.img", id.key())),
            VolumeLayout::DiskImage => self
                .disk_image_dir_of(id)
                .join(fastvirt_api::volume_layout::DISK_IMAGE_FILE),
        }
    }

    fn record_path(&self, id: &VolumeId) -> PathBuf {
        self.dir.join(format!("{}.json", id.key()))
    }

    pub fn snapshot_data_path(&self, id: &SnapshotId) -> PathBuf {
        self.dir
            .join(SNAPSHOT_DIR)
            .join(format!("{}.img", id.key()))
    }

    fn snapshot_record_path(&self, id: &SnapshotId) -> PathBuf {
        self.dir
            .join(SNAPSHOT_DIR)
            .join(format!("{}.json", id.key()))
    }

    fn source_path(&self, source: &ContentSource) -> Result<PathBuf, BackendError> {
        let (path, exists) = match source {
            ContentSource::Snapshot(id) => (
                self.snapshot_data_path(id),
                self.snapshot_record_path(id).exists(),
            ),
            ContentSource::Volume(id) => (self.data_path(id), self.record_path(id).exists()),
        };
        if !exists || !path.exists() {
            return Err(BackendError::NotFound(source.to_string()));
        }
        Ok(path)
    }

    fn loop_device(&self, id: &VolumeId) -> Option<LoopDevice> {
        loopdev::find_by_backing_file(&self.data_path(id))
            .into_iter()
            .next()
    }

    /// Creates the data file at `path`: a copy of `source` if given, then grown to `capacity`, then
    /// preallocated unless `thin` (fallocate keeps existing data and shared extents as they are).
    fn allocate(
        &self,
        path: &Path,
        capacity: u64,
        thin: bool,
        source: Option<(&Path, &ContentSource)>,
    ) -> Result<(), BackendError> {
        if let Some((source_path, content)) = source {
            let copy = || {
                clone::clone_file(source_path, path)
                    .map_err(|e| self.copy_error(e, source_path, path))
            };
            let method = match content {
                ContentSource::Volume(id) => self.with_consistent_source(id, copy)?,
                ContentSource::Snapshot(_) => copy()?,
            };
            tracing::info!(from = %content, to = %path.display(), ?method, "copied content");
        }
        let file = OpenOptions::new()
            .write(true)
            .create(source.is_some())
            .create_new(source.is_none())
            .mode(privacy::FILE_MODE)
            .open(path)
            .map_err(BackendError::io(format!("creating {}", path.display())))?;
        if source.is_none() {
            clone::overwrite_in_place(&file);
        }
        self.resize(&file, path, capacity, thin)?;
        file.sync_all()
            .map_err(BackendError::io(format!("syncing {}", path.display())))
    }

    /// Makes `file` `capacity` bytes long: sparse when `thin`, preallocated otherwise.
    /// Makes `file` at least `capacity` bytes long: sparse when `thin`; otherwise every hole is
    /// preallocated, while data and extents shared with a snapshot stay as they are.
    fn resize(
        &self,
        file: &std::fs::File,
        path: &Path,
        capacity: u64,
        thin: bool,
    ) -> Result<(), BackendError> {
        let current = file
            .metadata()
            .map_err(BackendError::io(format!("inspecting {}", path.display())))?
            .len();
        if current < capacity {
            file.set_len(capacity)
                .map_err(BackendError::io(format!("sizing {}", path.display())))?;
        }
        if thin {
            return Ok(());
        }
        clone::preallocate_holes(file, capacity).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOSPC) {
                BackendError::NoSpace {
                    pool: self.name.clone(),
                    needed: capacity,
                    available: 0,
                }
            } else {
                BackendError::Io {
                    context: format!("preallocating {}", path.display()),
                    source: e,
                }
            }
        })
    }
}

const SNAPSHOT_DIR: &str = "snapshots";

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The loop device's logical block size: the backing filesystem's block size, so every guest I/O
/// maps onto whole blocks of the file and direct I/O never needs a read-modify-write.
fn block_size_for(data: &Path) -> u32 {
    let blksize = std::fs::metadata(data).map(|m| m.blksize()).unwrap_or(512);
    let clamped = blksize.clamp(512, 4096) as u32;
    if clamped.is_power_of_two() {
        clamped
    } else {
        512
    }
}

fn loop_error(error: LoopError) -> BackendError {
    match error {
        LoopError::Busy { .. } | LoopError::DetachDeferred { .. } => {
            BackendError::Busy(error.to_string())
        }
        other => BackendError::Io {
            context: "loop device".into(),
            source: std::io::Error::other(other.to_string()),
        },
    }
}

impl Backend for FilePool {
    fn pool(&self) -> &PoolName {
        &self.name
    }

    fn set_overcommit_percent(&self, percent: u32) {
        let previous = self
            .overcommit_percent
            .swap(percent, std::sync::atomic::Ordering::Relaxed);
        if previous != percent {
            tracing::info!(pool = %self.name, percent, "overcommit limit set");
        }
    }

    fn check_ready(&self) -> Result<(), BackendError> {
        let stat = statvfs(&self.dir).map_err(|e| BackendError::Io {
            context: format!("statvfs {}", self.dir.display()),
            source: e.into(),
        })?;
        if stat.flags().contains(FsFlags::ST_RDONLY) {
            return Err(BackendError::Pool {
                pool: self.name.clone(),
                message: "filesystem is read-only".into(),
            });
        }
        Ok(())
    }

    fn usage(&self) -> Result<PoolUsage, BackendError> {
        let (free, usable) = self.space()?;
        let promised = self.promised()?;
        let headroom = overcommit::headroom(usable, self.overcommit_percent(), promised);
        Ok(PoolUsage {
            total_bytes: usable,
            available_bytes: free.min(headroom),
            free_bytes: free,
            reserved_bytes: self.reserve()?,
            promised_bytes: promised,
        })
    }

    fn max_volume_bytes(&self) -> Result<u64, BackendError> {
        Ok(self.usage()?.total_bytes)
    }

    fn lookup(&self, id: &VolumeId) -> Result<Option<VolumeRecord>, BackendError> {
        if id.pool() != &self.name {
            return Ok(None);
        }
        self.read_optional(&self.record_path(id))
    }

    fn list(&self) -> Result<Vec<VolumeRecord>, BackendError> {
        self.read_all(&self.dir)
    }

    fn create(&self, spec: &CreateSpec) -> Result<VolumeRecord, BackendError> {
        if let Some(existing) = self.lookup(&spec.id)? {
            return Ok(existing);
        }
        let source_path = spec
            .source
            .as_ref()
            .map(|s| self.source_path(s))
            .transpose()?;
        // A reflinked clone needs space only for what it does not share; fallocate reports ENOSPC.
        let shares_extents = source_path.is_some() && self.reflink;
        if !spec.thin && !shares_extents {
            let (free, _) = self.space()?;
            if free < spec.capacity_bytes {
                return Err(BackendError::NoSpace {
                    pool: self.name.clone(),
                    needed: spec.capacity_bytes,
                    available: free,
                });
            }
        }
        self.check_promise(spec.capacity_bytes)?;
        let record = VolumeRecord {
            version: RECORD_VERSION,
            id: spec.id.to_string(),
            name: spec.name.clone(),
            capacity_bytes: spec.capacity_bytes,
            thin: spec.thin,
            created_unix: now_unix(),
            source: spec.source.as_ref().map(ToString::to_string),
            qos: (!spec.qos.is_unlimited()).then_some(spec.qos),
            layout: spec.layout,
        };
        let source = source_path.as_deref().zip(spec.source.as_ref());
        let made = match spec.layout {
            VolumeLayout::Device => {
                let data = self.dir.join(format!("{}.img", spec.id.key()));
                // A data file without a record is a crash leftover of this very volume.
                let _ = std::fs::remove_file(&data);
                self.allocate(&data, spec.capacity_bytes, spec.thin, source)
                    .inspect_err(|_| {
                        let _ = std::fs::remove_file(&data);
                    })
            }
            VolumeLayout::DiskImage => self.create_disk_image(spec, source),
        };
        let result = made.and_then(|()| self.write_record(&self.record_path(&spec.id), &record));
        if let Err(error) = result {
            match spec.layout {
                VolumeLayout::Device => {
                    let _ = std::fs::remove_file(self.data_path(&spec.id));
                }
                VolumeLayout::DiskImage => {
                    let _ = self.remove_disk_image(&spec.id);
                }
            }
            return Err(match error {
                BackendError::NoSpace { pool, needed, .. } => {
                    let available = self.usage().map(|u| u.available_bytes).unwrap_or(0);
                    BackendError::NoSpace {
                        pool,
                        needed,
                        available,
                    }
                }
                other => other,
            });
        }
        Ok(record)
    }

    fn delete(&self, id: &VolumeId) -> Result<(), BackendError> {
        if id.pool() != &self.name {
            return Ok(());
        }
        if let Some(device) = self.loop_device(id) {
            return Err(BackendError::InUse {
                id: id.to_string(),
                device: device.path().display().to_string(),
            });
        }
        if disk_image::layout_on_disk(self, id) == VolumeLayout::DiskImage {
            let table = crate::mountinfo::read().unwrap_or_default();
            if let Some(mount) = self.disk_image_mounts(id, &table).first() {
                return Err(BackendError::InUse {
                    id: id.to_string(),
                    device: mount.display().to_string(),
                });
            }
            self.remove_record(&self.record_path(id))?;
            return self.remove_disk_image(id);
        }
        self.remove_pair(&self.record_path(id), &self.data_path(id))
    }

    fn instant_clones(&self) -> bool {
        self.reflink
    }

    fn create_snapshot(
        &self,
        id: &SnapshotId,
        name: &str,
        source: &VolumeRecord,
    ) -> Result<SnapshotRecord, BackendError> {
        if let Some(existing) = self.lookup_snapshot(id)? {
            return Ok(existing);
        }
        let source_id = VolumeId::parse(&source.id).map_err(|e| BackendError::Pool {
            pool: self.name.clone(),
            message: e.to_string(),
        })?;
        let (from, to) = (self.data_path(&source_id), self.snapshot_data_path(id));
        let _ = std::fs::remove_file(&to);
        let result = self
            .with_consistent_source(&source_id, || {
                clone::clone_file(&from, &to).map_err(|e| self.copy_error(e, &from, &to))
            })
            .and_then(|method| {
                let record = SnapshotRecord {
                    version: RECORD_VERSION,
                    id: id.to_string(),
                    name: name.to_owned(),
                    source_volume_id: source.id.clone(),
                    size_bytes: source.capacity_bytes,
                    created_unix: now_unix(),
                    method,
                };
                self.write_record(&self.snapshot_record_path(id), &record)
                    .map(|()| record)
            });
        if result.is_err() {
            let _ = std::fs::remove_file(&to);
        }
        result
    }

    fn lookup_snapshot(&self, id: &SnapshotId) -> Result<Option<SnapshotRecord>, BackendError> {
        if id.pool() != &self.name {
            return Ok(None);
        }
        self.read_optional(&self.snapshot_record_path(id))
    }

    fn list_snapshots(&self) -> Result<Vec<SnapshotRecord>, BackendError> {
        self.read_all(&self.dir.join(SNAPSHOT_DIR))
    }

    fn delete_snapshot(&self, id: &SnapshotId) -> Result<(), BackendError> {
        if id.pool() != &self.name {
            return Ok(());
        }
        self.remove_pair(&self.snapshot_record_path(id), &self.snapshot_data_path(id))
    }

    fn expand(&self, record: &VolumeRecord, new_size: u64) -> Result<VolumeRecord, BackendError> {
        let id = VolumeId::parse(&record.id).map_err(|e| BackendError::Pool {
            pool: self.name.clone(),
            message: e.to_string(),
        })?;
        let data = self.data_path(&id);
        let mut grown = record.clone();
        grown.capacity_bytes = grown.capacity_bytes.max(new_size);
        if new_size > record.capacity_bytes {
            let needed = new_size - record.capacity_bytes;
            self.check_promise(needed)?;
            let available = self.usage()?.available_bytes;
            if !record.thin && available < needed {
                return Err(BackendError::NoSpace {
                    pool: self.name.clone(),
                    needed,
                    available,
                });
            }
            if record.layout == VolumeLayout::DiskImage {
                self.grow_disk_image_limit(&id, new_size)?;
            }
            let file = OpenOptions::new()
                .write(true)
                .open(&data)
                .map_err(BackendError::io(format!("opening {}", data.display())))?;
            let result = self
                .resize(&file, &data, new_size, record.thin)
                .and_then(|()| {
                    file.sync_all()
                        .map_err(BackendError::io(format!("syncing {}", data.display())))
                })
                .and_then(|()| self.write_record(&self.record_path(&id), &grown));
            if let Err(error) = result {
                // Back to the recorded size, so file and record agree again.
                let _ = file.set_len(record.capacity_bytes);
                return Err(error);
            }
        }
        if let Some(device) = self.loop_device(&id)
            && device.size_bytes().map_err(loop_error)? != grown.capacity_bytes
        {
            device.refresh_capacity().map_err(loop_error)?;
        }
        Ok(grown)
    }

    fn set_qos(&self, record: &VolumeRecord, qos: QosLimits) -> Result<VolumeRecord, BackendError> {
        let id = VolumeId::parse(&record.id).map_err(|e| BackendError::Pool {
            pool: self.name.clone(),
            message: e.to_string(),
        })?;
        let mut changed = record.clone();
        changed.qos = (!qos.is_unlimited()).then_some(qos);
        if changed != *record {
            self.write_record(&self.record_path(&id), &changed)?;
        }
        Ok(changed)
    }

    fn attached(&self, id: &VolumeId) -> Result<Option<AttachedDevice>, BackendError> {
        let Some(device) = self.loop_device(id) else {
            return Ok(None);
        };
        let rdev = device.rdev().map_err(loop_error)?;
        Ok(Some(AttachedDevice {
            path: device.path(),
            rdev,
            read_only: device.read_only(),
        }))
    }

    /// One pass over the bound loop devices, instead of one per volume.
    fn attached_devices(
        &self,
        volumes: &[VolumeRecord],
    ) -> std::collections::BTreeMap<String, AttachedDevice> {
        let mut by_backing = std::collections::HashMap::new();
        for (device, backing) in loopdev::all_bound() {
            if backing.deleted {
                continue;
            }
            if let Ok(identity) = device.backing_identity() {
                by_backing.entry(identity).or_insert(device);
            }
        }
        volumes
            .iter()
            .filter_map(|volume| {
                let id = VolumeId::parse(&volume.id).ok()?;
                let meta = std::fs::metadata(self.data_path(&id)).ok()?;
                let device = by_backing.get(&(meta.dev(), meta.ino()))?;
                Some((
                    volume.id.clone(),
                    AttachedDevice {
                        path: device.path(),
                        rdev: device.rdev().ok()?,
                        read_only: device.read_only(),
                    },
                ))
            })
            .collect()
    }

    fn throttle_targets(
        &self,
        volumes: &[VolumeRecord],
    ) -> std::collections::BTreeMap<String, super::ThrottleTarget> {
        self.throttle_targets_of(volumes)
    }

    fn attach(
        &self,
        record: &VolumeRecord,
        read_only: bool,
    ) -> Result<AttachedDevice, BackendError> {
        let id = VolumeId::parse(&record.id).map_err(|e| BackendError::Pool {
            pool: self.name.clone(),
            message: e.to_string(),
        })?;
        if record.layout == VolumeLayout::DiskImage {
            return Err(BackendError::Pool {
                pool: self.name.clone(),
                message: format!(
                    "volume {id} is a disk-image volume: its directory is mounted, never attached as a device"
                ),
            });
        }
        if let Some(device) = self.loop_device(&id)
            && device.autoclear()
        {
            return Err(BackendError::Busy(format!(
                "{} of volume {id} is still being released by the kernel (a process holds it open)",
                device.path().display()
            )));
        }
        if let Some(device) = self.attached(&id)? {
            if device.read_only != read_only {
                let mode = |ro: bool| if ro { "read-only" } else { "read-write" };
                return Err(BackendError::AccessConflict {
                    id: id.to_string(),
                    attached: mode(device.read_only),
                    requested: mode(read_only),
                });
            }
            return Ok(device);
        }
        let data = self.data_path(&id);
        if !data.exists() {
            return Err(BackendError::Pool {
                pool: self.name.clone(),
                message: format!("data file {} of volume {id} is missing", data.display()),
            });
        }
        let options = AttachOptions {
            block_size: block_size_for(&data),
            direct_io: self.direct_io,
            read_only,
        };
        let device = loopdev::attach(&data, options).map_err(loop_error)?;
        if self.direct_io && !device.direct_io() {
            tracing::warn!(device = %device.path().display(), pool = %self.name, "the kernel refused direct I/O for this loop device; I/O goes through the page cache and will be slower");
        }
        tracing::info!(volume = %id, device = %device.path().display(), direct_io = device.direct_io(), block_size = options.block_size, "attached");
        let rdev = device.rdev().map_err(loop_error)?;
        Ok(AttachedDevice {
            path: device.path(),
            rdev,
            read_only: device.read_only(),
        })
    }

    fn detach(&self, id: &VolumeId, mounts: &[MountEntry]) -> Result<(), BackendError> {
        for device in loopdev::find_by_backing_file(&self.data_path(id)) {
            device.detach(mounts).map_err(loop_error)?;
            tracing::info!(volume = %id, device = %device.path().display(), "detached");
        }
        Ok(())
    }

    fn check_layout(&self, layout: VolumeLayout) -> Result<(), String> {
        match layout {
            VolumeLayout::Device => Ok(()),
            VolumeLayout::DiskImage => self.check_disk_image_layout(),
        }
    }

    fn disk_image_dir(&self, record: &VolumeRecord) -> Result<PathBuf, BackendError> {
        let id = VolumeId::parse(&record.id).map_err(|e| BackendError::Pool {
            pool: self.name.clone(),
            message: e.to_string(),
        })?;
        let dir = self.disk_image_dir_of(&id);
        if record.layout != VolumeLayout::DiskImage || !dir.is_dir() {
            return Err(BackendError::Pool {
                pool: self.name.clone(),
                message: format!("volume {id} has no disk-image directory {}", dir.display()),
            });
        }
        Ok(dir)
    }

    fn disk_image_usage(&self, record: &VolumeRecord) -> Result<DirUsage, BackendError> {
        let dir = self.disk_image_dir(record)?;
        let id = VolumeId::parse(&record.id).map_err(|e| BackendError::Pool {
            pool: self.name.clone(),
            message: format!("{e} ({})", dir.display()),
        })?;
        self.disk_image_dir_usage(&id)
    }

    fn abnormal(&self, record: &VolumeRecord) -> Option<String> {
        let id = VolumeId::parse(&record.id).ok()?;
        let data = self.data_path(&id);
        match std::fs::metadata(&data) {
            Err(e) => {
                return Some(format!(
                    "backing file {} is unreadable: {e}",
                    data.display()
                ));
            }
            Ok(meta) if meta.len() != record.capacity_bytes => {
                return Some(format!(
                    "backing file {} holds {} bytes, the volume has {}",
                    data.display(),
                    meta.len(),
                    record.capacity_bytes
                ));
            }
            Ok(_) => {}
        }
        if let Err(error) = self.check_ready() {
            return Some(error.to_string());
        }
        None
    }
}
