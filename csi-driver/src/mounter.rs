//! Mounting and unmounting with syscalls: no `mount` binary, no shell, no parsing of its output.

use crate::mount_options::MountOptions;
use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mounting {source_path} on {target}: {errno}")]
    Mount {
        source_path: PathBuf,
        target: PathBuf,
        errno: Errno,
    },
    #[error("remounting {target} with {flags:?}: {errno}")]
    Remount {
        target: PathBuf,
        flags: MsFlags,
        errno: Errno,
    },
    #[error("{target} is busy: a process still uses files below it")]
    Busy { target: PathBuf },
    #[error("unmounting {target}: {errno}")]
    Unmount { target: PathBuf, errno: Errno },
}

/// Bind-mounts `source` (a directory or a device node) onto `target`, then applies `options` with a
/// remount, the only way the kernel honours read-only and the other flags on a bind mount.
pub fn bind(source: &Path, target: &Path, options: &MountOptions) -> Result<(), MountError> {
    nix::mount::mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|errno| MountError::Mount {
        source_path: source.to_owned(),
        target: target.to_owned(),
        errno,
    })?;
    if options.flags.is_empty() {
        return Ok(());
    }
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | options.flags;
    if let Err(errno) = nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>) {
        let _ = unmount(target);
        return Err(MountError::Remount {
            target: target.to_owned(),
            flags: options.flags,
            errno,
        });
    }
    Ok(())
}

/// Mounts the filesystem on `device` at `target`.
pub fn mount_device(
    device: &Path,
    target: &Path,
    fs_type: &str,
    options: &MountOptions,
) -> Result<(), MountError> {
    let data = options.data_string();
    nix::mount::mount(
        Some(device),
        target,
        Some(fs_type),
        options.flags,
        data.as_deref(),
    )
    .map_err(|errno| MountError::Mount {
        source_path: device.to_owned(),
        target: target.to_owned(),
        errno,
    })
}

/// Unmounts `target`; `Ok(false)` when nothing was mounted there.
pub fn unmount(target: &Path) -> Result<bool, MountError> {
    match nix::mount::umount2(target, MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) => Ok(true),
        Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(false),
        Err(Errno::EBUSY) => Err(MountError::Busy {
            target: target.to_owned(),
        }),
        Err(errno) => Err(MountError::Unmount {
            target: target.to_owned(),
            errno,
        }),
    }
}
