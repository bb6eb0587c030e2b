//! Copies of a volume that are consistent: a mounted filesystem is frozen around a snapshot or
//! clone (and thawed again by a later driver if one was killed in between), a block volume in use
//! is never copied without reflink, and a full pool is reported as such.

use super::FilePool;
use crate::backend::{Backend, BackendError};
use crate::ids::VolumeId;
use crate::loopdev;
use std::path::Path;

impl FilePool {
    /// Runs `work` with the filesystem on the volume frozen, when this node has it mounted, so a
    /// snapshot of a mounted filesystem is consistent rather than merely crash-consistent.
    /// Runs `work` (a copy of the volume's file) so that the copy is consistent: a reflink is
    /// atomic by itself; a data copy is consistent only while nothing writes, so a mounted
    /// filesystem is frozen around it and a block volume in use is refused. A mounted filesystem is
    /// frozen for a reflink too, which makes the snapshot consistent rather than crash-consistent.
    pub(super) fn with_consistent_source<T>(
        &self,
        id: &VolumeId,
        work: impl FnOnce() -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let Some(device) = self.loop_device(id) else {
            return work();
        };
        let mount_point = device.device_numbers().ok().and_then(|(major, minor)| {
            let table = crate::mountinfo::read().ok()?;
            table
                .into_iter()
                .find(|e| (e.major, e.minor) == (major, minor))
                .map(|e| e.mount_point)
        });
        let Some(mount_point) = mount_point else {
            if self.reflink {
                return work();
            }
            return Err(BackendError::Inconsistent(format!(
                "volume {id} is attached as {} and pool {} cannot reflink, so a copy taken now could mix old and new data; \
                 detach it (stop the VM or pod) or use a pool on XFS with reflink or btrfs",
                device.path().display(),
                self.name
            )));
        };
        if let Err(error) = crate::tools::run("fsfreeze", [Path::new("--freeze"), &mount_point]) {
            if !self.reflink {
                return Err(BackendError::Inconsistent(format!(
                    "volume {id} is in use and its filesystem could not be frozen: {error}"
                )));
            }
            tracing::warn!(volume = %id, %error, "could not freeze the filesystem; the snapshot is crash-consistent only");
            return work();
        }
        let result = work();
        if let Err(error) = crate::tools::run("fsfreeze", [Path::new("--unfreeze"), &mount_point]) {
            tracing::error!(volume = %id, mount = %mount_point.display(), %error, "could not thaw the filesystem");
        }
        result
    }

    pub(super) fn copy_error(&self, error: std::io::Error, from: &Path, to: &Path) -> BackendError {
        if error.raw_os_error() == Some(libc::ENOSPC) {
            let available = self.usage().map(|u| u.available_bytes).unwrap_or(0);
            let needed = std::fs::metadata(from).map(|m| m.len()).unwrap_or(0);
            return BackendError::NoSpace {
                pool: self.name.clone(),
                needed,
                available,
            };
        }
        BackendError::Io {
            context: format!("copying {} to {}", from.display(), to.display()),
            source: error,
        }
    }

    /// Thaws the filesystems of this pool's attached volumes: a driver killed while a snapshot was
    /// being taken would otherwise leave them frozen, and every write to them hanging.
    pub(super) fn thaw_attached_filesystems(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let table = crate::mountinfo::read().unwrap_or_default();
        for entry in entries.flatten() {
            if !entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.ends_with(".img"))
            {
                continue;
            }
            for device in loopdev::find_by_backing_file(&entry.path()) {
                let Ok((major, minor)) = device.device_numbers() else {
                    continue;
                };
                if let Some(mount) = table.iter().find(|e| (e.major, e.minor) == (major, minor)) {
                    // Thawing a filesystem that is not frozen fails harmlessly with EINVAL.
                    if crate::tools::run("fsfreeze", [Path::new("--unfreeze"), &mount.mount_point])
                        .is_ok()
                    {
                        tracing::warn!(pool = %self.name, mount = %mount.mount_point.display(), "thawed a filesystem left frozen by an interrupted snapshot");
                    }
                }
            }
        }
    }
}
