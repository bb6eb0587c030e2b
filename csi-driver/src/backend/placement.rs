//! Where a pool directory may live: on a filesystem that outlives this process.
//!
//! In a node-plugin container, a pool path that is not under one of the chart's host directories
//! resolves into the container's own writable layer. Volumes written there look fine until the
//! plugin restarts, and then they are gone. A filesystem in memory loses them at the next reboot.
//! Both are refused before anything is created, with a message that says what to do.

use crate::mountinfo::MountEntry;
use std::path::{Path, PathBuf};

/// Filesystems a container runtime uses for a container's own root: its writable layer.
const CONTAINER_ROOT_FS: &[&str] = &["overlay", "aufs", "fuse.fuse-overlayfs", "shiftfs"];

/// Filesystems that live in memory.
const MEMORY_FS: &[&str] = &["tmpfs", "ramfs", "rootfs"];

/// Why a directory cannot hold a pool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error(
        "{dir} would be on this container's own root filesystem ({fs_type} at /), which is discarded when the container restarts; put the pool under one of the node plugin's host directories (chart value node.poolHostDirs) or add its host directory there"
    )]
    ContainerRoot { dir: PathBuf, fs_type: String },
    #[error(
        "{dir} is on {fs_type} at {mount_point}, which lives in memory and loses every volume at the next reboot; use a directory on a disk"
    )]
    Memory {
        dir: PathBuf,
        fs_type: String,
        mount_point: PathBuf,
    },
    #[error("{dir}: no mount in this mount namespace contains it")]
    Unmounted { dir: PathBuf },
}

/// Checks that `dir` (which need not exist yet) would be created on a durable filesystem.
/// `existing` is the nearest ancestor that exists, resolved; the rest of `dir` is created under it.
pub fn check(table: &[MountEntry], dir: &Path, existing: &Path) -> Result<(), PlacementError> {
    let mount = containing_mount(table, existing).ok_or_else(|| PlacementError::Unmounted {
        dir: dir.to_owned(),
    })?;
    let fs_type = mount.fs_type.as_str();
    if mount.mount_point == Path::new("/") && CONTAINER_ROOT_FS.contains(&fs_type) {
        return Err(PlacementError::ContainerRoot {
            dir: dir.to_owned(),
            fs_type: fs_type.to_owned(),
        });
    }
    if MEMORY_FS.contains(&fs_type) {
        return Err(PlacementError::Memory {
            dir: dir.to_owned(),
            fs_type: fs_type.to_owned(),
            mount_point: mount.mount_point.clone(),
        });
    }
    Ok(())
}

/// The mount a lookup of `path` ends on: the deepest mount point above it, and of several mounts
/// at that point the last one, which hides the others.
pub fn containing_mount<'a>(table: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    let mut best: Option<&MountEntry> = None;
    for entry in table {
        if !path.starts_with(&entry.mount_point) {
            continue;
        }
        let deeper = best.is_none_or(|b| {
            entry.mount_point.components().count() >= b.mount_point.components().count()
        });
        if deeper {
            best = Some(entry);
        }
    }
    best
}

/// The nearest ancestor of `dir` (or `dir` itself) that exists, with symlinks resolved: what the
/// creation of `dir` would write into.
pub fn nearest_existing(dir: &Path) -> std::io::Result<PathBuf> {
    let mut candidate = dir.to_owned();
    loop {
        match candidate.canonicalize() {
            Ok(resolved) => return Ok(resolved),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if !candidate.pop() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no ancestor of {} exists", dir.display()),
            ));
        }
    }
}

/// Reads this process's mount table and checks `dir`.
pub fn check_here(dir: &Path) -> Result<(), String> {
    let existing =
        nearest_existing(dir).map_err(|e| format!("resolving {}: {e}", dir.display()))?;
    let table = crate::mountinfo::read().map_err(|e| e.to_string())?;
    check(&table, dir, &existing).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mountinfo::parse;

    /// A node-plugin container: overlay root, the pool host directory bound from the host's disk,
    /// a tmpfs for secrets.
    const CONTAINER: &str = "\
2000 1900 0:120 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
2001 2000 0:121 / /proc rw - proc proc rw
2002 2000 254:0 /var/lib/fastvirt/pools /var/lib/fastvirt/pools rw,relatime - xfs /dev/vdb rw
2003 2000 0:122 / /var/run/secrets rw - tmpfs tmpfs rw
2004 2002 7:3 / /var/lib/fastvirt/pools/inner rw - ext4 /dev/loop3 rw
";

    /// A host whose root is a disk.
    const HOST: &str =
        "22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n23 22 0:5 / /dev/shm rw - tmpfs tmpfs rw\n";

    fn table(text: &str) -> Vec<MountEntry> {
        parse(text).unwrap()
    }

    #[test]
    fn a_pool_under_a_host_directory_is_accepted() {
        let t = table(CONTAINER);
        let dir = Path::new("/var/lib/fastvirt/pools/fast");
        assert_eq!(check(&t, dir, Path::new("/var/lib/fastvirt/pools")), Ok(()));
    }

    #[test]
    fn a_pool_in_the_containers_writable_layer_is_refused() {
        let t = table(CONTAINER);
        let dir = Path::new("/mnt/nvme0/fastvirt");
        let error = check(&t, dir, Path::new("/mnt")).unwrap_err();
        assert!(
            matches!(error, PlacementError::ContainerRoot { ref fs_type, .. } if fs_type == "overlay")
        );
        assert!(error.to_string().contains("node.poolHostDirs"), "{error}");
    }

    #[test]
    fn a_prefix_that_is_not_a_path_ancestor_does_not_count() {
        // `/var/lib/fastvirt/pools-old` is not under the bind mount `/var/lib/fastvirt/pools`.
        let t = table(CONTAINER);
        let dir = Path::new("/var/lib/fastvirt/pools-old/a");
        assert!(check(&t, dir, Path::new("/var/lib/fastvirt")).is_err());
    }

    #[test]
    fn the_deepest_and_last_mount_decides() {
        let t = table(CONTAINER);
        let inner = containing_mount(&t, Path::new("/var/lib/fastvirt/pools/inner/x")).unwrap();
        assert_eq!(inner.fs_type, "ext4");
        let stacked = table(
            "1 0 0:1 / / rw - ext4 a rw\n2 1 0:2 / /p rw - xfs b rw\n3 1 0:3 / /p rw - tmpfs c rw\n",
        );
        assert_eq!(
            containing_mount(&stacked, Path::new("/p/q"))
                .unwrap()
                .fs_type,
            "tmpfs"
        );
    }

    #[test]
    fn memory_filesystems_are_refused_anywhere() {
        let t = table(CONTAINER);
        let error = check(
            &t,
            Path::new("/var/run/secrets/p"),
            Path::new("/var/run/secrets"),
        )
        .unwrap_err();
        assert!(matches!(error, PlacementError::Memory { .. }), "{error}");
        let h = table(HOST);
        assert!(check(&h, Path::new("/dev/shm/pool"), Path::new("/dev/shm")).is_err());
    }

    #[test]
    fn a_disk_root_on_the_host_is_accepted() {
        let h = table(HOST);
        assert_eq!(
            check(
                &h,
                Path::new("/var/lib/fastvirt/pools/a"),
                Path::new("/var/lib")
            ),
            Ok(())
        );
    }

    #[test]
    fn nearest_existing_resolves_the_deepest_existing_ancestor() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().canonicalize().unwrap();
        let wanted = base.join("a/b/c");
        assert_eq!(nearest_existing(&wanted).unwrap(), base);
        std::fs::create_dir_all(base.join("a")).unwrap();
        assert_eq!(nearest_existing(&wanted).unwrap(), base.join("a"));
    }
}
