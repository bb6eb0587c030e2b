//! The `disk-image` layout: a volume is a directory `<key>.d` in the pool holding one `disk.img`,
//! preallocated to the capacity (sparse when thin), and the directory cannot hold more than the
//! capacity (see [`dir_quota`]). The node bind-mounts the directory; QEMU opens the image itself,
//! with no loop device and no second filesystem in between.

use super::FilePool;
use crate::backend::dir_quota::{self, DirQuota, DirUsage, QuotaError};
use crate::backend::privacy::DISK_IMAGE_DIR_SUFFIX;
use crate::backend::{
    Backend, BackendError, ContentSource, CreateSpec, VolumeLayout, VolumeRecord,
};
use crate::ids::VolumeId;
use crate::mountinfo::{DirSource, MountEntry};
use fastvirt_api::volume_layout::DISK_IMAGE_FILE;
use std::path::{Path, PathBuf};

impl FilePool {
    pub(super) fn disk_image_dir_of(&self, id: &VolumeId) -> PathBuf {
        self.dir
            .join(format!("{}{DISK_IMAGE_DIR_SUFFIX}", id.key()))
    }

    /// The mechanism that limits this pool's volume directories, or why it has none.
    pub(super) fn quota(&self) -> Result<&DirQuota, String> {
        self.dir_quota.as_ref().map_err(Clone::clone)
    }

    pub(super) fn check_disk_image_layout(&self) -> Result<(), String> {
        self.quota().map(drop)
    }

    fn quota_error(&self, error: QuotaError, needed: u64) -> BackendError {
        if error.is_no_space() {
            let available = self.usage().map(|u| u.available_bytes).unwrap_or(0);
            return BackendError::NoSpace {
                pool: self.name.clone(),
                needed,
                available,
            };
        }
        BackendError::Pool {
            pool: self.name.clone(),
            message: error.to_string(),
        }
    }

    /// Makes the directory and its image: a copy of `source` if given, then grown and allocated as
    /// [`FilePool::allocate`] does for a device volume.
    pub(super) fn create_disk_image(
        &self,
        spec: &CreateSpec,
        source: Option<(&Path, &ContentSource)>,
    ) -> Result<(), BackendError> {
        let quota = self.quota().map_err(|message| BackendError::Pool {
            pool: self.name.clone(),
            message,
        })?;
        let dir = self.disk_image_dir_of(&spec.id);
        // A directory without a record is a crash leftover of this very volume.
        quota
            .remove_dir(&dir)
            .map_err(|e| self.quota_error(e, spec.capacity_bytes))?;
        quota
            .create_dir(&dir, dir_quota::limit_for(spec.capacity_bytes))
            .map_err(|e| self.quota_error(e, spec.capacity_bytes))?;
        let image = dir.join(DISK_IMAGE_FILE);
        let result = self.allocate(&image, spec.capacity_bytes, spec.thin, source);
        if result.is_err() {
            let _ = quota.remove_dir(&dir);
        }
        result
    }

    /// Removes a volume's directory with its image and its limit.
    pub(super) fn remove_disk_image(&self, id: &VolumeId) -> Result<(), BackendError> {
        let dir = self.disk_image_dir_of(id);
        match self.quota() {
            Ok(quota) => quota.remove_dir(&dir).map_err(|e| self.quota_error(e, 0)),
            // A pool that lost its quota support still deletes what it holds.
            Err(_) => match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(BackendError::io(format!("removing {}", dir.display()))(e))
                }
                _ => Ok(()),
            },
        }
    }

    /// Raises the directory's limit to fit `capacity_bytes`, before the image grows into it.
    pub(super) fn grow_disk_image_limit(
        &self,
        id: &VolumeId,
        capacity_bytes: u64,
    ) -> Result<(), BackendError> {
        let quota = self.quota().map_err(|message| BackendError::Pool {
            pool: self.name.clone(),
            message,
        })?;
        quota
            .set_limit(
                &self.disk_image_dir_of(id),
                dir_quota::limit_for(capacity_bytes),
            )
            .map_err(|e| self.quota_error(e, capacity_bytes))
    }

    pub(super) fn disk_image_dir_usage(&self, id: &VolumeId) -> Result<DirUsage, BackendError> {
        let quota = self.quota().map_err(|message| BackendError::Pool {
            pool: self.name.clone(),
            message,
        })?;
        quota
            .usage(&self.disk_image_dir_of(id))
            .map_err(|e| self.quota_error(e, 0))
    }

    /// Where the volume's directory is mounted on this node (its stage and publish bind mounts).
    pub(super) fn disk_image_mounts(&self, id: &VolumeId, table: &[MountEntry]) -> Vec<PathBuf> {
        mounts_of_dir(&self.disk_image_dir_of(id), table)
            .map(|e| e.mount_point.clone())
            .collect()
    }
}

impl FilePool {
    /// Device volumes are throttled on their loop device; disk-image volumes, while mounted
    /// here, on the pool's disk (see [`FilePool::disk_image_throttle`]).
    pub(super) fn throttle_targets_of(
        &self,
        volumes: &[VolumeRecord],
    ) -> std::collections::BTreeMap<String, crate::backend::ThrottleTarget> {
        let (images, devices): (Vec<VolumeRecord>, Vec<VolumeRecord>) = volumes
            .iter()
            .cloned()
            .partition(|v| v.layout == VolumeLayout::DiskImage);
        let mut targets =
            crate::backend::ThrottleTarget::of_devices(self.attached_devices(&devices));
        if !images.is_empty() {
            let table = crate::mountinfo::read().unwrap_or_default();
            for image in images {
                let Ok(id) = VolumeId::parse(&image.id) else {
                    continue;
                };
                if let Some(target) = self.disk_image_throttle(&id, &table) {
                    targets.insert(image.id, target);
                }
            }
        }
        targets
    }

    /// The whole disk under the pool's filesystem (`st_rdev`): where block throttling applies to
    /// I/O that reaches the filesystem, since blk-throttle works on disks, not partitions.
    pub(super) fn pool_disk(&self, table: &[MountEntry]) -> Option<u64> {
        let mount = table
            .iter()
            .filter(|e| self.dir.starts_with(&e.mount_point))
            .max_by_key(|e| e.mount_point.as_os_str().len())?;
        let meta = std::fs::metadata(&mount.source).ok()?;
        if !std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type()) {
            return None;
        }
        Some(whole_disk(std::os::unix::fs::MetadataExt::rdev(&meta)))
    }

    /// Where a disk-image volume's limits go while it is mounted on this node: the pool's disk,
    /// for the pods that publish it or hold its image open.
    pub(super) fn disk_image_throttle(
        &self,
        id: &VolumeId,
        table: &[MountEntry],
    ) -> Option<crate::backend::ThrottleTarget> {
        let dir = self.disk_image_dir_of(id);
        mounts_of_dir(&dir, table).next()?;
        let image = std::fs::metadata(dir.join(DISK_IMAGE_FILE)).ok()?;
        Some(crate::backend::ThrottleTarget {
            device: self.pool_disk(table)?,
            held: crate::qos::consumers::Held::File {
                dev: std::os::unix::fs::MetadataExt::dev(&image),
                ino: std::os::unix::fs::MetadataExt::ino(&image),
            },
        })
    }
}

/// The disk a partition (or a disk) belongs to, from sysfs: a partition's directory sits in its
/// disk's.
fn whole_disk(rdev: u64) -> u64 {
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    let sys = std::path::PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    if !sys.join("partition").exists() {
        return rdev;
    }
    std::fs::read_to_string(sys.join("../dev"))
        .ok()
        .and_then(|text| {
            let (major, minor) = text.trim().split_once(':')?;
            Some(nix::sys::stat::makedev(
                major.parse().ok()?,
                minor.parse().ok()?,
            ))
        })
        .unwrap_or(rdev)
}

/// The mounts in `table` that show the directory `dir` (its stage and publish bind mounts).
pub fn mounts_of_dir<'t>(
    dir: &Path,
    table: &'t [MountEntry],
) -> impl Iterator<Item = &'t MountEntry> + 't {
    let source = DirSource::of(dir);
    table
        .iter()
        .filter(move |entry| source.as_ref().is_some_and(|s| s.shows(entry)))
}

/// The layout a volume's files show: a `disk-image` volume has its directory.
pub(super) fn layout_on_disk(pool: &FilePool, id: &VolumeId) -> VolumeLayout {
    if pool.disk_image_dir_of(id).is_dir() {
        VolumeLayout::DiskImage
    } else {
        VolumeLayout::Device
    }
}
