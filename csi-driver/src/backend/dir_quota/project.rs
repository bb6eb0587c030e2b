//! Project quotas on XFS and ext4: the directory gets a project ID that everything created inside
//! inherits, and the project a hard block limit. Project IDs are chosen per directory, starting
//! from one derived from its name, skipping any a directory or an earlier user of the filesystem
//! already holds.

use super::{DirUsage, QuotaError};
use crate::ioctl::project_quota::{self as sys, XFLAG_PROJINHERIT};
use nix::errno::Errno;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::Mutex;

/// How many IDs after the derived one are tried before giving up.
const PROBES: u32 = 4096;

#[derive(Debug)]
pub struct ProjectQuota {
    /// Held while an ID is chosen and taken, so two creates never take the same one.
    choosing: Mutex<()>,
}

fn open(dir: &Path) -> Result<File, QuotaError> {
    File::open(dir).map_err(QuotaError::io(format!("opening {}", dir.display())))
}

fn errno(context: String) -> impl FnOnce(Errno) -> QuotaError {
    move |e| QuotaError::Io {
        context,
        source: e.into(),
    }
}

/// The first project ID tried for a directory: from its name, so IDs are spread and stable, never
/// 0 (the default project of every file).
fn derived_id(dir: &Path) -> u32 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(dir.as_os_str().as_encoded_bytes());
    let id = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) & 0x7fff_ffff;
    id.max(1)
}

impl ProjectQuota {
    pub fn probe(pool_dir: &Path, fs: &str) -> Result<Self, QuotaError> {
        let file = open(pool_dir)?;
        let how = match fs {
            "xfs" => "mount it with -o prjquota (or pquota in /etc/fstab)",
            _ => {
                "give it the quota and project features (tune2fs -O quota,project on the unmounted device) and mount it with -o prjquota"
            }
        };
        match sys::enforced(file.as_fd()) {
            Ok(()) => Ok(Self {
                choosing: Mutex::new(()),
            }),
            Err(Errno::ENOSYS | Errno::EOPNOTSUPP) => Err(QuotaError::Unsupported(format!(
                "the disk-image layout needs project quotas, and this kernel has no quota support for {fs} (CONFIG_XFS_QUOTA or CONFIG_QFMT_V2); {} cannot hold disk-image volumes on this node",
                pool_dir.display()
            ))),
            Err(Errno::ESRCH) => Err(QuotaError::Unsupported(format!(
                "the disk-image layout needs project quotas on the {fs} filesystem of {}: {how}",
                pool_dir.display()
            ))),
            Err(e) => Err(errno(format!(
                "asking for the project quota state of {}",
                pool_dir.display()
            ))(e)),
        }
    }

    fn project_of(dir: &Path) -> Result<u32, QuotaError> {
        let file = open(dir)?;
        let attr = sys::get_xattr(file.as_fd())
            .map_err(errno(format!("reading the project of {}", dir.display())))?;
        Ok(attr.projid)
    }

    /// Whether no file and no limit belong to project `id` yet.
    fn is_free(pool: &File, id: u32) -> Result<bool, QuotaError> {
        match sys::block_usage(pool.as_fd(), id) {
            Ok((used, limit)) => Ok(used == 0 && limit == 0),
            // The quota subsystem keeps no entry for an ID nobody used.
            Err(Errno::ENOENT | Errno::ESRCH) => Ok(true),
            Err(e) => Err(errno(format!("asking for the usage of project {id}"))(e)),
        }
    }

    pub fn create_dir(&self, dir: &Path, limit_bytes: u64) -> Result<(), QuotaError> {
        let parent = dir.parent().unwrap_or(Path::new("/"));
        let pool = open(parent)?;
        let _choosing = self.choosing.lock().unwrap_or_else(|e| e.into_inner());
        let start = derived_id(dir);
        let id = (0..PROBES)
            .map(|n| (start.wrapping_add(n) & 0x7fff_ffff).max(1))
            .find_map(|id| match Self::is_free(&pool, id) {
                Ok(true) => Some(Ok(id)),
                Ok(false) => None,
                Err(e) => Some(Err(e)),
            })
            .unwrap_or_else(|| {
                Err(QuotaError::Exhausted(format!(
                    "no free project ID among the {PROBES} after {start} for {}",
                    dir.display()
                )))
            })?;
        std::fs::create_dir(dir).map_err(QuotaError::io(format!("creating {}", dir.display())))?;
        let result = (|| {
            // The limit first: once the directory is in the project, it is never unlimited.
            sys::set_block_limit(pool.as_fd(), id, limit_bytes).map_err(errno(format!(
                "limiting project {id} to {limit_bytes} bytes"
            )))?;
            let file = open(dir)?;
            let mut attr = sys::get_xattr(file.as_fd()).map_err(errno(format!(
                "reading the attributes of {}",
                dir.display()
            )))?;
            attr.projid = id;
            attr.xflags |= XFLAG_PROJINHERIT;
            sys::set_xattr(file.as_fd(), &attr)
                .map_err(errno(format!("putting {} in project {id}", dir.display())))
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir(dir);
            let _ = sys::set_block_limit(pool.as_fd(), id, 0);
        }
        result
    }

    pub fn set_limit(&self, dir: &Path, limit_bytes: u64) -> Result<(), QuotaError> {
        let id = Self::project_of(dir)?;
        let file = open(dir)?;
        sys::set_block_limit(file.as_fd(), id, limit_bytes).map_err(errno(format!(
            "limiting project {id} to {limit_bytes} bytes"
        )))
    }

    pub fn usage(&self, dir: &Path) -> Result<DirUsage, QuotaError> {
        let id = Self::project_of(dir)?;
        let file = open(dir)?;
        let (used_bytes, limit_bytes) = sys::block_usage(file.as_fd(), id)
            .map_err(errno(format!("asking for the usage of project {id}")))?;
        Ok(DirUsage {
            used_bytes,
            limit_bytes,
        })
    }

    pub fn remove_dir(&self, dir: &Path) -> Result<(), QuotaError> {
        let id = Self::project_of(dir).ok().filter(|id| *id != 0);
        std::fs::remove_dir_all(dir)
            .map_err(QuotaError::io(format!("removing {}", dir.display())))?;
        if let Some(id) = id {
            let parent = open(dir.parent().unwrap_or(Path::new("/")))?;
            sys::set_block_limit(parent.as_fd(), id, 0)
                .map_err(errno(format!("removing the limit of project {id}")))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_never_the_default_project_and_differ_by_directory() {
        let a = derived_id(Path::new("/pool/0123.d"));
        let b = derived_id(Path::new("/pool/4567.d"));
        assert!(a != 0 && b != 0 && a != b);
        assert!(a <= 0x7fff_ffff && b <= 0x7fff_ffff);
        assert_eq!(a, derived_id(Path::new("/pool/0123.d")));
    }
}
