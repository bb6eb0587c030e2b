//! The file backend: each volume is `<key>.img` in the pool directory, described by `<key>.json`, and
//! attached as a loop device with direct I/O.
//!
//! The record is written last on create and removed first on delete, so it alone decides whether a
//! volume exists; an image without a record is the leftover of a crash and is reclaimed.

use super::{
    AttachedDevice, Backend, BackendError, CreateSpec, PoolUsage, RECORD_VERSION, VolumeRecord,
};
use crate::atomic_file;
use crate::ids::{PoolName, VolumeId, is_volume_key};
use crate::loopdev::{self, AttachOptions, LoopDevice, LoopError};
use crate::mountinfo::MountEntry;
use nix::sys::statvfs::{FsFlags, statvfs};
use std::fs::OpenOptions;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug)]
pub struct FilePool {
    name: PoolName,
    dir: PathBuf,
    direct_io: bool,
}

impl FilePool {
    /// Opens the pool in `dir`, creating the directory if needed, and reclaims crash leftovers.
    pub fn open(name: PoolName, dir: &Path) -> Result<Self, BackendError> {
        std::fs::create_dir_all(dir).map_err(BackendError::io(format!(
            "creating pool directory {}",
            dir.display()
        )))?;
        // Canonical, because sysfs reports loop backing files by their resolved path.
        let dir = dir
            .canonicalize()
            .map_err(BackendError::io(format!("resolving {}", dir.display())))?;
        let pool = Self {
            name,
            dir,
            direct_io: true,
        };
        pool.reclaim_orphans();
        Ok(pool)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn data_path(&self, id: &VolumeId) -> PathBuf {
        self.dir.join(format!("{}.img", id.key()))
    }

    fn record_path(&self, id: &VolumeId) -> PathBuf {
        self.dir.join(format!("{}.json", id.key()))
    }

    fn reclaim_orphans(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(key) = file_name
                .to_str()
                .and_then(|n| n.strip_suffix(".img"))
                .filter(|k| is_volume_key(k))
            else {
                continue;
            };
            let attached = !loopdev::find_by_backing_file(&entry.path()).is_empty();
            if !self.dir.join(format!("{key}.json")).exists() && !attached {
                tracing::warn!(pool = %self.name, file = %entry.path().display(), "removing volume file left by an interrupted create or delete");
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    fn read_record(&self, path: &Path) -> Result<VolumeRecord, BackendError> {
        let bytes =
            std::fs::read(path).map_err(BackendError::io(format!("reading {}", path.display())))?;
        serde_json::from_slice(&bytes).map_err(|e| BackendError::Pool {
            pool: self.name.clone(),
            message: format!("volume record {} is corrupt: {e}", path.display()),
        })
    }

    fn loop_device(&self, id: &VolumeId) -> Option<LoopDevice> {
        loopdev::find_by_backing_file(&self.data_path(id))
            .into_iter()
            .next()
    }

    fn allocate(&self, path: &Path, spec: &CreateSpec) -> Result<(), BackendError> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(BackendError::io(format!("creating {}", path.display())))?;
        let size = i64::try_from(spec.capacity_bytes).map_err(|_| BackendError::Pool {
            pool: self.name.clone(),
            message: format!("{} bytes is too large for a file", spec.capacity_bytes),
        })?;
        if spec.thin {
            file.set_len(spec.capacity_bytes)
                .map_err(BackendError::io(format!("sizing {}", path.display())))?;
        } else {
            nix::fcntl::fallocate(&file, nix::fcntl::FallocateFlags::empty(), 0, size).map_err(
                |errno| {
                    if errno == nix::errno::Errno::ENOSPC {
                        BackendError::NoSpace {
                            pool: self.name.clone(),
                            needed: spec.capacity_bytes,
                            available: 0,
                        }
                    } else {
                        BackendError::Io {
                            context: format!("preallocating {}", path.display()),
                            source: errno.into(),
                        }
                    }
                },
            )?;
        }
        file.sync_all()
            .map_err(BackendError::io(format!("syncing {}", path.display())))
    }
}

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
        let stat = statvfs(&self.dir).map_err(|e| BackendError::Io {
            context: format!("statvfs {}", self.dir.display()),
            source: e.into(),
        })?;
        let fragment = stat.fragment_size();
        Ok(PoolUsage {
            total_bytes: stat.blocks().saturating_mul(fragment),
            available_bytes: stat.blocks_available().saturating_mul(fragment),
        })
    }

    fn max_volume_bytes(&self) -> Result<u64, BackendError> {
        Ok(self.usage()?.total_bytes)
    }

    fn lookup(&self, id: &VolumeId) -> Result<Option<VolumeRecord>, BackendError> {
        if id.pool() != &self.name {
            return Ok(None);
        }
        let path = self.record_path(id);
        if !path.exists() {
            return Ok(None);
        }
        self.read_record(&path).map(Some)
    }

    fn list(&self) -> Result<Vec<VolumeRecord>, BackendError> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(BackendError::io(format!("listing {}", self.dir.display())))?;
        let mut records = Vec::new();
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let is_record = file_name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .is_some_and(is_volume_key);
            if !is_record {
                continue;
            }
            match self.read_record(&entry.path()) {
                Ok(record) => records.push(record),
                Err(error) => tracing::warn!(%error, "skipping unreadable volume record"),
            }
        }
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(records)
    }

    fn create(&self, spec: &CreateSpec) -> Result<VolumeRecord, BackendError> {
        if let Some(existing) = self.lookup(&spec.id)? {
            return Ok(existing);
        }
        if !spec.thin {
            let available = self.usage()?.available_bytes;
            if available < spec.capacity_bytes {
                return Err(BackendError::NoSpace {
                    pool: self.name.clone(),
                    needed: spec.capacity_bytes,
                    available,
                });
            }
        }
        let data = self.data_path(&spec.id);
        // A data file without a record is a crash leftover of this very volume.
        let _ = std::fs::remove_file(&data);
        let record = VolumeRecord {
            version: RECORD_VERSION,
            id: spec.id.to_string(),
            name: spec.name.clone(),
            capacity_bytes: spec.capacity_bytes,
            thin: spec.thin,
            created_unix: now_unix(),
        };
        let result = self.allocate(&data, spec).and_then(|()| {
            let json = serde_json::to_vec_pretty(&record)
                .map_err(|e| BackendError::io("encoding record")(e.into()))?;
            atomic_file::write(&self.record_path(&spec.id), &json)
                .map_err(BackendError::io(format!("writing record for {}", spec.id)))
        });
        if let Err(error) = result {
            let _ = std::fs::remove_file(&data);
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
        let record = self.record_path(id);
        match std::fs::remove_file(&record) {
            Ok(()) => atomic_file::sync_dir(&self.dir)
                .map_err(BackendError::io("syncing pool directory"))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(BackendError::io(format!("removing {}", record.display()))(
                    e,
                ));
            }
        }
        match std::fs::remove_file(self.data_path(id)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BackendError::io(format!("removing data of {id}"))(e)),
        }
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

    fn attach(
        &self,
        record: &VolumeRecord,
        read_only: bool,
    ) -> Result<AttachedDevice, BackendError> {
        let id = VolumeId::parse(&record.id).map_err(|e| BackendError::Pool {
            pool: self.name.clone(),
            message: e.to_string(),
        })?;
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
