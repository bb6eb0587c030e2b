//! btrfs: each limited directory is a subvolume with a limit on the bytes its quota group refers
//! to. The btrfs tool (btrfs-progs) does the work, always with an argument vector.

use super::{DirUsage, QuotaError};
use crate::tools::{self, ToolError};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The inode number of every subvolume's root directory (`BTRFS_FIRST_FREE_OBJECTID`).
const SUBVOLUME_ROOT_INODE: u64 = 256;

#[derive(Debug)]
pub struct Qgroups;

fn arg(path: &Path) -> &std::ffi::OsStr {
    path.as_os_str()
}

impl Qgroups {
    pub fn probe(pool_dir: &Path) -> Result<Self, QuotaError> {
        let args: [&std::ffi::OsStr; 3] = ["qgroup".as_ref(), "show".as_ref(), arg(pool_dir)];
        match tools::run("btrfs", args) {
            Ok(_) => Ok(Self),
            Err(ToolError::Spawn { .. }) => Err(QuotaError::Unsupported(format!(
                "the disk-image layout on btrfs needs the btrfs tool, which is not installed (install btrfs-progs); {} cannot hold disk-image volumes",
                pool_dir.display()
            ))),
            Err(ToolError::Failed { stderr, .. }) => Err(QuotaError::Unsupported(format!(
                "the disk-image layout on btrfs needs quotas on the filesystem of {}: run `btrfs quota enable <its mount point>` once ({})",
                pool_dir.display(),
                stderr.trim()
            ))),
        }
    }

    fn btrfs(args: &[&std::ffi::OsStr]) -> Result<String, QuotaError> {
        let output = tools::run("btrfs", args)?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    pub fn create_dir(&self, dir: &Path, limit_bytes: u64) -> Result<(), QuotaError> {
        Self::btrfs(&["subvolume".as_ref(), "create".as_ref(), arg(dir)])?;
        let result = (|| {
            // In place, not copy-on-write: overwriting the image then never needs a second copy
            // of the data (which the quota group would charge until the next commit), and VM
            // I/O does not fragment the image. Files created inside inherit it.
            let file = std::fs::File::open(dir)
                .map_err(QuotaError::io(format!("opening {}", dir.display())))?;
            let flags = rustix::fs::ioctl_getflags(&file).map_err(|e| {
                QuotaError::io(format!("reading flags of {}", dir.display()))(e.into())
            })?;
            rustix::fs::ioctl_setflags(&file, flags | rustix::fs::IFlags::NOCOW).map_err(|e| {
                QuotaError::io(format!("making {} no-copy-on-write", dir.display()))(e.into())
            })?;
            self.set_limit(dir, limit_bytes)
        })();
        if result.is_err() {
            let _ = self.remove_dir(dir);
        }
        result
    }

    pub fn set_limit(&self, dir: &Path, limit_bytes: u64) -> Result<(), QuotaError> {
        let limit = limit_bytes.to_string();
        Self::btrfs(&[
            "qgroup".as_ref(),
            "limit".as_ref(),
            limit.as_ref(),
            arg(dir),
        ])
        .map(drop)
    }

    pub fn usage(&self, dir: &Path) -> Result<DirUsage, QuotaError> {
        let out = Self::btrfs(&[
            "qgroup".as_ref(),
            "show".as_ref(),
            "-re".as_ref(),
            "--raw".as_ref(),
            "-f".as_ref(),
            arg(dir),
        ])?;
        let id = Self::root_id(dir)?;
        parse_usage(&out, &format!("0/{id}")).ok_or_else(|| {
            QuotaError::io(format!("reading the quota group of {}", dir.display()))(
                std::io::Error::other(format!("no 0/{id} line in: {}", out.trim())),
            )
        })
    }

    fn root_id(dir: &Path) -> Result<u64, QuotaError> {
        let out = Self::btrfs(&["inspect-internal".as_ref(), "rootid".as_ref(), arg(dir)])?;
        out.trim().parse().map_err(|_| {
            QuotaError::io(format!("reading the subvolume ID of {}", dir.display()))(
                std::io::Error::other(format!("unexpected output {:?}", out.trim())),
            )
        })
    }

    pub fn remove_dir(&self, dir: &Path) -> Result<(), QuotaError> {
        let meta = std::fs::symlink_metadata(dir)
            .map_err(QuotaError::io(format!("inspecting {}", dir.display())))?;
        if meta.ino() != SUBVOLUME_ROOT_INODE {
            // An interrupted create may leave a plain directory.
            return std::fs::remove_dir_all(dir)
                .map_err(QuotaError::io(format!("removing {}", dir.display())));
        }
        let id = Self::root_id(dir)?;
        Self::btrfs(&["subvolume".as_ref(), "delete".as_ref(), arg(dir)])?;
        // The quota group outlives its subvolume until the cleaner has freed the subvolume's
        // extents; a group that cannot go yet is an empty entry, not space.
        let parent = dir.parent().unwrap_or(Path::new("/"));
        let group = format!("0/{id}");
        if let Err(error) = Self::btrfs(&[
            "qgroup".as_ref(),
            "destroy".as_ref(),
            group.as_ref(),
            arg(parent),
        ]) {
            tracing::debug!(%error, group, "quota group of a deleted subvolume left for btrfs to drop");
        }
        Ok(())
    }
}

/// The referenced bytes and their limit of quota group `group` in `btrfs qgroup show -re --raw`
/// output (`qgroupid rfer excl max_rfer max_excl path`).
fn parse_usage(out: &str, group: &str) -> Option<DirUsage> {
    out.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        if fields.next()? != group {
            return None;
        }
        let referenced = fields.next()?.parse().ok()?;
        let _exclusive = fields.next()?;
        let limit = match fields.next()? {
            "none" => 0,
            n => n.parse().ok()?,
        };
        Some(DirUsage {
            used_bytes: referenced,
            limit_bytes: limit,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_read_from_the_groups_line() {
        let out = "Qgroupid    Referenced    Exclusive  Max referenced  Max exclusive   Path \n\
                   --------    ----------    ---------  --------------  -------------   ---- \n\
                   0/256         58851328     58851328       104857600           none   v1\n\
                   0/257            16384        16384            none           none   v2\n";
        assert_eq!(
            parse_usage(out, "0/256"),
            Some(DirUsage {
                used_bytes: 58851328,
                limit_bytes: 104857600
            })
        );
        assert_eq!(
            parse_usage(out, "0/257"),
            Some(DirUsage {
                used_bytes: 16384,
                limit_bytes: 0
            })
        );
        assert_eq!(parse_usage(out, "0/258"), None);
    }
}
