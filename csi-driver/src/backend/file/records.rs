//! The records that make a volume or snapshot exist: read, written atomically, listed, removed
//! before their data; and data files without a record (crash leftovers) reclaimed.

use super::FilePool;
use crate::atomic_file;
use crate::backend::BackendError;
use crate::backend::privacy::DISK_IMAGE_DIR_SUFFIX;
use crate::ids::is_volume_key;
use crate::loopdev;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

impl FilePool {
    pub(super) fn reclaim_orphans(&self, dir: &Path, may_be_attached: bool) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            if let Some(key) = file_name
                .to_str()
                .and_then(|n| n.strip_suffix(DISK_IMAGE_DIR_SUFFIX))
                .filter(|k| is_volume_key(k))
            {
                self.reclaim_disk_image(dir, key, &entry.path());
                continue;
            }
            let Some(key) = file_name
                .to_str()
                .and_then(|n| n.strip_suffix(".img"))
                .filter(|k| is_volume_key(k))
            else {
                continue;
            };
            let attached =
                may_be_attached && !loopdev::find_by_backing_file(&entry.path()).is_empty();
            if !dir.join(format!("{key}.json")).exists() && !attached {
                tracing::warn!(pool = %self.name, file = %entry.path().display(), "removing a data file left by an interrupted create or delete");
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }

    /// Removes a `disk-image` directory without a record, unless something has it mounted.
    fn reclaim_disk_image(&self, dir: &Path, key: &str, path: &Path) {
        if dir.join(format!("{key}.json")).exists() {
            return;
        }
        let table = crate::mountinfo::read().unwrap_or_default();
        if super::mounts_of_dir(path, &table).next().is_some() {
            return;
        }
        tracing::warn!(pool = %self.name, dir = %path.display(), "removing a disk-image directory left by an interrupted create or delete");
        let Ok(id) = crate::ids::VolumeId::parse(&format!("fv.{}.{key}", self.name)) else {
            return;
        };
        if let Err(error) = self.remove_disk_image(&id) {
            tracing::warn!(pool = %self.name, dir = %path.display(), %error, "could not remove a leftover disk-image directory");
        }
    }

    pub(super) fn read_record<T: DeserializeOwned>(&self, path: &Path) -> Result<T, BackendError> {
        let bytes =
            std::fs::read(path).map_err(BackendError::io(format!("reading {}", path.display())))?;
        serde_json::from_slice(&bytes).map_err(|e| BackendError::Pool {
            pool: self.name.clone(),
            message: format!("record {} is corrupt: {e}", path.display()),
        })
    }

    /// A record if its file exists.
    pub(super) fn read_optional<T: DeserializeOwned>(
        &self,
        path: &Path,
    ) -> Result<Option<T>, BackendError> {
        if !path.exists() {
            return Ok(None);
        }
        self.read_record(path).map(Some)
    }

    pub(super) fn write_record<T: Serialize>(
        &self,
        path: &Path,
        record: &T,
    ) -> Result<(), BackendError> {
        let json = serde_json::to_vec_pretty(record)
            .map_err(|e| BackendError::io("encoding record")(e.into()))?;
        atomic_file::write(path, &json)
            .map_err(BackendError::io(format!("writing {}", path.display())))
    }

    /// Every record in `dir`, sorted by file name (and so by ID), skipping unreadable ones.
    pub(super) fn read_all<T: DeserializeOwned>(&self, dir: &Path) -> Result<Vec<T>, BackendError> {
        let entries = std::fs::read_dir(dir)
            .map_err(BackendError::io(format!("listing {}", dir.display())))?;
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json"))
                    .is_some_and(is_volume_key)
            })
            .map(|e| e.path())
            .collect();
        paths.sort();
        let mut records = Vec::with_capacity(paths.len());
        for path in paths {
            match self.read_record(&path) {
                Ok(record) => records.push(record),
                Err(error) => tracing::warn!(%error, "skipping unreadable record"),
            }
        }
        Ok(records)
    }

    /// Removes a record, then its data: once the record is gone the object no longer exists.
    pub(super) fn remove_pair(&self, record: &Path, data: &Path) -> Result<(), BackendError> {
        self.remove_record(record)?;
        match std::fs::remove_file(data) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(BackendError::io(format!("removing {}", data.display()))(e)),
        }
    }

    /// Removes a record durably; a missing one is fine.
    pub(super) fn remove_record(&self, record: &Path) -> Result<(), BackendError> {
        match std::fs::remove_file(record) {
            Ok(()) => {
                let dir = record.parent().unwrap_or(&self.dir);
                atomic_file::sync_dir(dir).map_err(BackendError::io("syncing pool directory"))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(BackendError::io(format!("removing {}", record.display()))(
                    e,
                ));
            }
        }
        Ok(())
    }
}
