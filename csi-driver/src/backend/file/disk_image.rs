//! The `disk-image` layout: a volume is a directory `<key>.d` in the pool holding one `disk.img`,
//! preallocated to the capacity (sparse when thin), and the directory cannot hold more than the
//! capacity (see [`dir_quota`]). The node bind-mounts the directory; QEMU opens the image itself,
//! with no loop device and no second filesystem in between.

use super::FilePool;
use crate::backend::dir_quota::{self, DirQuota, DirUsage, QuotaError};
use crate::backend::privacy::DISK_IMAGE_DIR_SUFFIX;
use crate::backend::{Backend, BackendError, ContentSource, CreateSpec, VolumeLayout};
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
