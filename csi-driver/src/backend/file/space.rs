//! How much room a pool has and how much it has promised: its filesystem's free and usable space
//! less the reserve, and the sum of its volumes' and snapshots' sizes against the overcommit cap.

use super::FilePool;
use crate::backend::{Backend, BackendError, overcommit};
use nix::sys::statvfs::statvfs;

impl FilePool {
    pub(super) fn overcommit_percent(&self) -> u32 {
        self.overcommit_percent
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Free space less the reserve, and the filesystem's size less the reserve.
    pub(super) fn space(&self) -> Result<(u64, u64), BackendError> {
        let (total, available) = self.filesystem_bytes()?;
        let reserve = self.reserve_of(total);
        Ok((
            available.saturating_sub(reserve),
            total.saturating_sub(reserve),
        ))
    }

    /// What the driver keeps back of the pool's filesystem.
    pub(super) fn reserve(&self) -> Result<u64, BackendError> {
        Ok(self.reserve_of(self.filesystem_bytes()?.0))
    }

    fn reserve_of(&self, total: u64) -> u64 {
        total / 100 * u64::from(self.reserve_percent)
    }

    /// The filesystem's size and the bytes an unprivileged writer may still use.
    fn filesystem_bytes(&self) -> Result<(u64, u64), BackendError> {
        let stat = statvfs(&self.dir).map_err(|e| BackendError::Io {
            context: format!("statvfs {}", self.dir.display()),
            source: e.into(),
        })?;
        let fragment = stat.fragment_size();
        Ok((
            stat.blocks().saturating_mul(fragment),
            stat.blocks_available().saturating_mul(fragment),
        ))
    }

    /// What the pool has promised: every volume's capacity and every snapshot's size, each of
    /// which may come to need its full size.
    pub(super) fn promised(&self) -> Result<u64, BackendError> {
        let volumes: u64 = self.list()?.iter().map(|v| v.capacity_bytes).sum();
        let snapshots: u64 = self.list_snapshots()?.iter().map(|s| s.size_bytes).sum();
        Ok(volumes.saturating_add(snapshots))
    }

    /// Refuses to promise `needed` more bytes beyond the pool's overcommit limit.
    pub(super) fn check_promise(&self, needed: u64) -> Result<(), BackendError> {
        let (_, usable) = self.space()?;
        let promised = self.promised()?;
        match overcommit::refusal(usable, self.overcommit_percent(), promised, needed) {
            None => Ok(()),
            Some(message) => Err(BackendError::Overcommitted {
                pool: self.name.clone(),
                message,
            }),
        }
    }
}
