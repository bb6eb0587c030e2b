//! A pool holds every VM's disk and every snapshot: nobody but root may read it.
//!
//! Files are created 0600 and directories 0700 whatever the process umask. Pools made by an
//! earlier version (0644 files in a 0755 directory) are tightened when they are opened.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

/// Mode of every file the driver writes into a pool.
pub const FILE_MODE: u32 = 0o600;

/// Mode of the pool directory and its subdirectories.
pub const DIR_MODE: u32 = 0o700;

/// What ends the name of a `disk-image` volume's directory, after the volume's key.
pub const DISK_IMAGE_DIR_SUFFIX: &str = ".d";

/// Creates `dir` and any missing parents as root-only directories.
pub fn create_dir_all(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

/// Removes group and other access from `dir` and from the files and directories directly in it
/// (a pool is flat: volumes in its root, snapshots in one subdirectory). Returns how many entries
/// were changed. Symlinks are left alone: chmod would follow them out of the pool. So are the
/// directories of `disk-image` volumes (`<key>.d`): reached only through their bind mounts, they
/// get the consuming pod's fsGroup from kubelet, which QEMU needs to open the image.
pub fn tighten(dir: &Path) -> std::io::Result<usize> {
    let mut changed = usize::from(restrict(dir)?);
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let volume_dir = entry.file_type()?.is_dir()
            && entry
                .file_name()
                .to_str()
                .and_then(|name| name.strip_suffix(DISK_IMAGE_DIR_SUFFIX))
                .is_some_and(crate::ids::is_volume_key);
        if !entry.file_type()?.is_symlink() && !volume_dir {
            changed += usize::from(restrict(&entry.path())?);
        }
    }
    Ok(changed)
}

/// Clears the group and other bits of one file or directory; whether it had any.
fn restrict(path: &Path) -> std::io::Result<bool> {
    let mode = std::fs::symlink_metadata(path)?.permissions().mode();
    if mode & 0o077 == 0 {
        return Ok(false);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7700))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn new_directories_are_root_only_whatever_the_umask() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("a/b");
        create_dir_all(&dir).unwrap();
        assert_eq!(mode(&dir), DIR_MODE);
        assert_eq!(mode(&base.path().join("a")), DIR_MODE);
    }

    #[test]
    fn an_open_pool_is_tightened_once() {
        let base = tempfile::tempdir().unwrap();
        let pool = base.path().join("pool");
        std::fs::create_dir(&pool).unwrap();
        std::fs::set_permissions(&pool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let image = pool.join("v.img");
        std::fs::write(&image, b"disk").unwrap();
        std::fs::set_permissions(&image, std::fs::Permissions::from_mode(0o644)).unwrap();
        let snapshots = pool.join("snapshots");
        std::fs::create_dir(&snapshots).unwrap();
        std::fs::set_permissions(&snapshots, std::fs::Permissions::from_mode(0o755)).unwrap();
        let outside = base.path().join("outside");
        std::fs::write(&outside, b"not the pool's").unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&outside, pool.join("link")).unwrap();

        assert_eq!(tighten(&pool).unwrap(), 3);
        assert_eq!(mode(&pool), 0o700);
        assert_eq!(mode(&image), 0o600);
        assert_eq!(mode(&snapshots), 0o700);
        assert_eq!(
            mode(&outside),
            0o644,
            "a symlink's target outside the pool is not touched"
        );
        assert_eq!(tighten(&pool).unwrap(), 0, "a second open changes nothing");
    }
}
