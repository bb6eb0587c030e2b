//! Loop devices: attaching a volume file with direct I/O, finding the device again from sysfs after
//! a restart, and detaching it only when nothing uses it any more.

use crate::ioctl::loop_dev as ioctl;

use crate::mountinfo::MountEntry;
use nix::errno::Errno;
use std::fs::{File, OpenOptions};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

const SYS_BLOCK: &str = "/sys/block";
/// Concurrent attaches may race for the same free device; the loser asks again.
const ATTACH_ATTEMPTS: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    #[error("opening {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{op} on {device}: {errno}")]
    Ioctl {
        op: &'static str,
        device: PathBuf,
        errno: Errno,
    },
    #[error("no free loop device after {ATTACH_ATTEMPTS} attempts")]
    NoFreeDevice,
    #[error("reading {path}: {source}")]
    Sysfs {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{device} is in use: {}", users.join("; "))]
    Busy { device: PathBuf, users: Vec<String> },
    #[error("{device} was released but the kernel keeps it until its last user closes it")]
    DetachDeferred { device: PathBuf },
}

/// How to attach a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttachOptions {
    /// Logical block size the device presents (512 to 4096, a power of two).
    pub block_size: u32,
    pub direct_io: bool,
    pub read_only: bool,
}

/// A loop device, `/dev/loop<number>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LoopDevice {
    number: u32,
}

/// What sysfs says a loop device is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackingFile {
    pub path: PathBuf,
    /// The file was unlinked while attached.
    pub deleted: bool,
}

impl LoopDevice {
    pub fn from_number(number: u32) -> Self {
        Self { number }
    }

    /// Parses `loopN` or `/dev/loopN`.
    pub fn from_name(name: &str) -> Option<Self> {
        let digits = name
            .strip_prefix("/dev/")
            .unwrap_or(name)
            .strip_prefix("loop")?;
        (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse().ok().map(Self::from_number))
            .flatten()
    }

    pub fn number(&self) -> u32 {
        self.number
    }

    pub fn name(&self) -> String {
        format!("loop{}", self.number)
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!("/dev/loop{}", self.number))
    }

    fn sysfs(&self, file: &str) -> PathBuf {
        Path::new(SYS_BLOCK).join(self.name()).join(file)
    }

    fn read_sysfs(&self, file: &str) -> Result<String, LoopError> {
        let path = self.sysfs(file);
        std::fs::read_to_string(&path)
            .map(|s| s.trim_end_matches('\n').to_owned())
            .map_err(|source| LoopError::Sysfs { path, source })
    }

    /// The file this device is bound to, `None` when it is unbound.
    pub fn backing_file(&self) -> Option<BackingFile> {
        let raw = self.read_sysfs("loop/backing_file").ok()?;
        let (path, deleted) = match raw.strip_suffix(" (deleted)") {
            Some(path) => (path, true),
            None => (raw.as_str(), false),
        };
        Some(BackingFile {
            path: PathBuf::from(path),
            deleted,
        })
    }

    /// `(st_dev, st_ino)` of the bound file.
    pub fn backing_identity(&self) -> Result<(u64, u64), LoopError> {
        let handle = self.open(false)?;
        ioctl::backing_identity(handle.as_fd()).map_err(|errno| LoopError::Ioctl {
            op: "LOOP_GET_STATUS64",
            device: self.path(),
            errno,
        })
    }

    /// Whether the kernel will free the device when its last user closes it: a detach that was
    /// deferred because the device was still open.
    pub fn autoclear(&self) -> bool {
        self.read_sysfs("loop/autoclear").is_ok_and(|v| v == "1")
    }

    /// Major and minor device numbers.
    pub fn device_numbers(&self) -> Result<(u32, u32), LoopError> {
        let text = self.read_sysfs("dev")?;
        let parsed = text
            .split_once(':')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
        parsed.ok_or_else(|| LoopError::Sysfs {
            path: self.sysfs("dev"),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("unexpected {text:?}"),
            ),
        })
    }

    /// `makedev(major, minor)`, as `st_rdev` reports it.
    pub fn rdev(&self) -> Result<u64, LoopError> {
        let (major, minor) = self.device_numbers()?;
        Ok(nix::sys::stat::makedev(major.into(), minor.into()))
    }

    pub fn read_only(&self) -> bool {
        self.read_sysfs("ro").is_ok_and(|v| v == "1")
    }

    pub fn direct_io(&self) -> bool {
        self.read_sysfs("loop/dio").is_ok_and(|v| v == "1")
    }

    pub fn logical_block_size(&self) -> Result<u32, LoopError> {
        let text = self.read_sysfs("queue/logical_block_size")?;
        text.parse().map_err(|_| LoopError::Sysfs {
            path: self.sysfs("queue/logical_block_size"),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, text),
        })
    }

    /// The I/O scheduler in use (the bracketed entry of `queue/scheduler`).
    pub fn scheduler(&self) -> Option<String> {
        let text = self.read_sysfs("queue/scheduler").ok()?;
        let start = text.find('[')?;
        let end = text[start..].find(']')?;
        Some(text[start + 1..start + end].to_owned())
    }

    pub fn size_bytes(&self) -> Result<u64, LoopError> {
        let text = self.read_sysfs("size")?;
        let sectors: u64 = text.parse().map_err(|_| LoopError::Sysfs {
            path: self.sysfs("size"),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, text),
        })?;
        Ok(sectors * 512)
    }

    fn open(&self, write: bool) -> Result<File, LoopError> {
        let path = self.path();
        OpenOptions::new()
            .read(true)
            .write(write)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(|source| LoopError::Open { path, source })
    }

    /// Everything that still uses this device: mounts of it, bind mounts of its node, holders such as
    /// device-mapper, and processes that hold it open. Empty means detaching loses nothing.
    pub fn users(&self, mounts: &[MountEntry]) -> Result<Vec<String>, LoopError> {
        let (major, minor) = self.device_numbers()?;
        let rdev = self.rdev()?;
        let node_name = self.name();
        let mut users = Vec::new();
        for entry in mounts {
            if (entry.major, entry.minor) == (major, minor) {
                users.push(format!(
                    "filesystem mounted at {}",
                    entry.mount_point.display()
                ));
            } else if entry
                .root
                .file_name()
                .is_some_and(|n| n.as_bytes() == node_name.as_bytes())
                && is_block_device(&entry.mount_point, rdev)
            {
                users.push(format!(
                    "device node bound at {}",
                    entry.mount_point.display()
                ));
            }
        }
        if let Ok(holders) = std::fs::read_dir(self.sysfs("holders")) {
            users.extend(
                holders
                    .flatten()
                    .map(|h| format!("held by {}", h.file_name().to_string_lossy())),
            );
        }
        users.extend(processes_holding(rdev));
        Ok(users)
    }

    /// Unbinds the backing file, refusing while anything uses the device: the kernel would otherwise
    /// defer the detach silently and leak the device.
    pub fn detach(&self, mounts: &[MountEntry]) -> Result<(), LoopError> {
        if self.backing_file().is_none() {
            return Ok(());
        }
        let users = self.users(mounts)?;
        if !users.is_empty() {
            return Err(LoopError::Busy {
                device: self.path(),
                users,
            });
        }
        let device = self.open(false)?;
        match ioctl::clear_fd(device.as_fd()) {
            Ok(()) | Err(Errno::ENXIO) => {}
            Err(Errno::EBUSY) => {
                return Err(LoopError::Busy {
                    device: self.path(),
                    users: vec!["busy in the kernel".into()],
                });
            }
            Err(errno) => {
                return Err(LoopError::Ioctl {
                    op: "LOOP_CLR_FD",
                    device: self.path(),
                    errno,
                });
            }
        }
        drop(device);
        // The kernel tears the binding down when the last opener closes; ours was the only one.
        for _ in 0..100 {
            if self.backing_file().is_none() {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        Err(LoopError::DetachDeferred {
            device: self.path(),
        })
    }

    /// Makes the device pick up a new size of its backing file.
    pub fn refresh_capacity(&self) -> Result<(), LoopError> {
        let device = self.open(false)?;
        ioctl::set_capacity(device.as_fd()).map_err(|errno| LoopError::Ioctl {
            op: "LOOP_SET_CAPACITY",
            device: self.path(),
            errno,
        })
    }
}

/// Attaches `backing` to a free loop device and selects the `none` scheduler: the backing file's
/// own device already schedules, and a second elevator only adds latency.
pub fn attach(backing: &Path, options: AttachOptions) -> Result<LoopDevice, LoopError> {
    let mut backing_options = OpenOptions::new();
    backing_options.read(true).write(!options.read_only);
    // util-linux opens the backing file with O_DIRECT too when asking for direct I/O.
    let direct = if options.direct_io { libc::O_DIRECT } else { 0 };
    backing_options.custom_flags(libc::O_CLOEXEC | direct);
    let file = backing_options
        .open(backing)
        .map_err(|source| LoopError::Open {
            path: backing.to_owned(),
            source,
        })?;
    let control_path = PathBuf::from("/dev/loop-control");
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&control_path)
        .map_err(|source| LoopError::Open {
            path: control_path.clone(),
            source,
        })?;
    let mut flags = 0;
    if options.direct_io {
        flags |= ioctl::LO_FLAGS_DIRECT_IO;
    }
    if options.read_only {
        flags |= ioctl::LO_FLAGS_READ_ONLY;
    }
    for _ in 0..ATTACH_ATTEMPTS {
        let number = ioctl::get_free(control.as_fd()).map_err(|errno| LoopError::Ioctl {
            op: "LOOP_CTL_GET_FREE",
            device: control_path.clone(),
            errno,
        })?;
        let device = LoopDevice::from_number(number);
        let handle = match device.open(true) {
            Ok(handle) => handle,
            // devtmpfs creates the node right after LOOP_CTL_GET_FREE; give it a moment.
            Err(LoopError::Open { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
                continue;
            }
            Err(e) => return Err(e),
        };
        match ioctl::configure(
            handle.as_fd(),
            file.as_fd(),
            options.block_size,
            flags,
            backing.as_os_str().as_bytes(),
        ) {
            Ok(()) => {
                wait_for_capacity(&device, &file)?;
                set_scheduler_none(&device);
                return Ok(device);
            }
            Err(Errno::EBUSY) => continue,
            Err(errno) => {
                return Err(LoopError::Ioctl {
                    op: "LOOP_CONFIGURE",
                    device: device.path(),
                    errno,
                });
            }
        }
    }
    Err(LoopError::NoFreeDevice)
}

/// Waits until the device shows its backing file's size. Right after a detach of the same device
/// number, the kernel can report the new binding while the disk still has capacity 0; a probe in
/// that window sees no filesystem, and a format would then run over the volume's data. A device
/// that never shows its size is detached and reported, never handed out.
fn wait_for_capacity(device: &LoopDevice, backing: &File) -> Result<(), LoopError> {
    let expected = backing.metadata().map(|m| m.len() / 512 * 512).unwrap_or(0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let size = device.size_bytes()?;
        if size == expected || expected == 0 {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            let _ = device.detach(&[]);
            return Err(LoopError::Sysfs {
                path: device.sysfs("size"),
                source: std::io::Error::other(format!(
                    "{} shows {size} bytes, its backing file has {expected}",
                    device.path().display()
                )),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

fn set_scheduler_none(device: &LoopDevice) {
    // Switching elevators freezes the queue and waits for an RCU grace period (tens of ms), even
    // when the scheduler is already `none`, as it is by default for loop devices on most kernels.
    if device.scheduler().as_deref() == Some("none") {
        return;
    }
    let path = device.sysfs("queue/scheduler");
    if let Err(error) = std::fs::write(&path, "none") {
        tracing::warn!(device = %device.path().display(), %error, "could not select the none I/O scheduler");
    }
}

/// All loop devices currently bound to the file at `path` (normally zero or one). Devices are
/// matched by the file's device and inode numbers, not by the path sysfs shows: that path is the
/// one the attaching process saw, and after a container restart in a new mount namespace it no
/// longer names the file.
pub fn find_by_backing_file(path: &Path) -> Vec<LoopDevice> {
    let Ok(meta) = std::fs::metadata(path) else {
        return Vec::new();
    };
    let identity = (meta.dev(), meta.ino());
    all_bound()
        .into_iter()
        .filter(|(device, backing)| {
            !backing.deleted && device.backing_identity().is_ok_and(|id| id == identity)
        })
        .map(|(device, _)| device)
        .collect()
}

/// The loop devices whose backing file (as sysfs names it) lies below `dir`: what a test or a
/// teardown left attached there.
pub fn bound_under(dir: &Path) -> Vec<LoopDevice> {
    all_bound()
        .into_iter()
        .filter(|(_, backing)| backing.path.starts_with(dir))
        .map(|(device, _)| device)
        .collect()
}

/// Every bound loop device with its backing file.
pub fn all_bound() -> Vec<(LoopDevice, BackingFile)> {
    let Ok(entries) = std::fs::read_dir(SYS_BLOCK) else {
        return Vec::new();
    };
    let mut devices: Vec<_> = entries
        .flatten()
        .filter_map(|entry| LoopDevice::from_name(&entry.file_name().to_string_lossy()))
        .filter_map(|device| device.backing_file().map(|backing| (device, backing)))
        .collect();
    devices.sort_by_key(|(device, _)| *device);
    devices
}

fn is_block_device(path: &Path, rdev: u64) -> bool {
    std::fs::symlink_metadata(path)
        .is_ok_and(|m| m.file_type().is_block_device() && m.rdev() == rdev)
}

/// Processes with an open file descriptor on the block device `rdev`.
fn processes_holding(rdev: u64) -> Vec<String> {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut holders = Vec::new();
    for proc_entry in procs.flatten() {
        let pid = proc_entry.file_name();
        if !pid.as_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                return false;
            };
            let target = target.as_os_str().as_bytes();
            // Sockets, pipes and anonymous inodes cannot be block devices; skip their stat.
            target.starts_with(b"/")
                && !target.starts_with(b"/memfd:")
                && std::fs::metadata(fd.path())
                    .is_ok_and(|m| m.file_type().is_block_device() && m.rdev() == rdev)
        });
        if holds {
            let comm = std::fs::read_to_string(proc_entry.path().join("comm")).unwrap_or_default();
            holders.push(format!(
                "open by pid {} ({})",
                pid.to_string_lossy(),
                comm.trim()
            ));
        }
    }
    holders
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names() {
        assert_eq!(
            LoopDevice::from_name("loop12"),
            Some(LoopDevice::from_number(12))
        );
        assert_eq!(
            LoopDevice::from_name("/dev/loop0"),
            Some(LoopDevice::from_number(0))
        );
        for bad in [
            "loop",
            "loop-control",
            "loopx",
            "sda",
            "/dev/loop1p1",
            "loop99999999999",
        ] {
            assert_eq!(LoopDevice::from_name(bad), None, "{bad}");
        }
        assert_eq!(LoopDevice::from_number(7).path(), Path::new("/dev/loop7"));
    }
}
