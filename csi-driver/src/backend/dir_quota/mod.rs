//! Directories that cannot hold more than a limit: what keeps a `disk-image` volume, which is a
//! directory in the pool and not a device of fixed size, within its capacity.
//!
//! Two mechanisms, chosen by the pool's filesystem: project quotas on XFS and ext4 (the directory
//! gets a project ID its files inherit, and the project a hard block limit), and on btrfs a
//! subvolume per directory with a quota-group limit. A pool whose filesystem offers neither, or
//! has it switched off, is refused for the layout with the steps that switch it on.

mod btrfs;
mod project;

use std::path::Path;

/// What the directory may hold beyond the volume's capacity: the filesystem's own metadata for
/// the image (extent records multiply as a preallocated image is written in small pieces), which
/// both mechanisms charge to the directory. A consumer can store at most this much more.
pub fn limit_for(capacity_bytes: u64) -> u64 {
    capacity_bytes.saturating_add((capacity_bytes / 64).max(64 << 20))
}

/// How a pool limits its directories.
#[derive(Debug)]
pub enum DirQuota {
    Project(project::ProjectQuota),
    Btrfs(btrfs::Qgroups),
}

/// What a limited directory holds and may hold, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirUsage {
    pub used_bytes: u64,
    pub limit_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    /// The pool cannot limit directories; the message says how to make it able to.
    #[error("{0}")]
    Unsupported(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tool(#[from] crate::tools::ToolError),
    /// The project quota has no free project ID left near the directory's (practically never).
    #[error("{0}")]
    Exhausted(String),
}

impl QuotaError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }

    /// Whether the directory's filesystem ran out of space (or of quota) while it was made.
    pub fn is_no_space(&self) -> bool {
        let errno = |e: &std::io::Error| {
            matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        };
        match self {
            Self::Io { source, .. } => errno(source),
            _ => false,
        }
    }
}

const XFS_MAGIC: i64 = 0x5846_5342;
const EXT4_MAGIC: i64 = 0xEF53;
pub(crate) const BTRFS_MAGIC: i64 = 0x9123_683E;

impl DirQuota {
    /// The mechanism of the filesystem that holds `pool_dir`, if it is on and usable.
    pub fn probe(pool_dir: &Path) -> Result<Self, QuotaError> {
        let stat = rustix::fs::statfs(pool_dir)
            .map_err(|e| QuotaError::io(format!("statfs {}", pool_dir.display()))(e.into()))?;
        #[allow(clippy::unnecessary_cast)]
        let magic = stat.f_type as i64;
        match magic {
            XFS_MAGIC => project::ProjectQuota::probe(pool_dir, "xfs").map(Self::Project),
            EXT4_MAGIC => project::ProjectQuota::probe(pool_dir, "ext4").map(Self::Project),
            BTRFS_MAGIC => btrfs::Qgroups::probe(pool_dir).map(Self::Btrfs),
            _ => Err(QuotaError::Unsupported(format!(
                "the disk-image layout needs a pool on XFS or ext4 with project quotas, or on btrfs with quotas; {} is on a filesystem with neither (statfs type {magic:#x})",
                pool_dir.display()
            ))),
        }
    }

    /// Creates the directory `dir` (which must not exist) limited to `limit_bytes`.
    pub fn create_dir(&self, dir: &Path, limit_bytes: u64) -> Result<(), QuotaError> {
        match self {
            Self::Project(quota) => quota.create_dir(dir, limit_bytes),
            Self::Btrfs(quota) => quota.create_dir(dir, limit_bytes),
        }
    }

    /// Changes the limit of a directory made by [`Self::create_dir`].
    pub fn set_limit(&self, dir: &Path, limit_bytes: u64) -> Result<(), QuotaError> {
        match self {
            Self::Project(quota) => quota.set_limit(dir, limit_bytes),
            Self::Btrfs(quota) => quota.set_limit(dir, limit_bytes),
        }
    }

    pub fn usage(&self, dir: &Path) -> Result<DirUsage, QuotaError> {
        match self {
            Self::Project(quota) => quota.usage(dir),
            Self::Btrfs(quota) => quota.usage(dir),
        }
    }

    /// Removes the directory with everything in it, and its limit. A missing directory is fine.
    pub fn remove_dir(&self, dir: &Path) -> Result<(), QuotaError> {
        if std::fs::symlink_metadata(dir).is_err() {
            return Ok(());
        }
        match self {
            Self::Project(quota) => quota.remove_dir(dir),
            Self::Btrfs(quota) => quota.remove_dir(dir),
        }
    }

    /// What the pool uses, for logs and errors.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Project(_) => "project quotas",
            Self::Btrfs(_) => "btrfs subvolumes with quota-group limits",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_leaves_room_for_metadata_and_never_overflows() {
        assert_eq!(limit_for(1 << 30), (1 << 30) + (64 << 20));
        assert_eq!(limit_for(64 << 30), (64 << 30) + (1 << 30));
        assert_eq!(limit_for(u64::MAX), u64::MAX);
    }

    #[test]
    fn a_pool_on_tmpfs_is_refused_with_the_filesystems_that_work() {
        // tmpfs, on every Linux this runs on.
        let dir = Path::new("/dev/shm");
        let error = DirQuota::probe(dir).unwrap_err().to_string();
        assert!(
            error.contains("XFS or ext4") && error.contains("btrfs"),
            "{error}"
        );
    }
}
