//! Project quotas (XFS, ext4): a directory's project ID, inherited by what is created inside it
//! (`FS_IOC_FSGETXATTR`/`FS_IOC_FSSETXATTR`), and the project's block limit (`quotactl_fd`, Linux
//! 5.14+, which takes any open file of the filesystem instead of its device path).

use nix::errno::Errno;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `FS_XFLAG_PROJINHERIT`: files and directories created inside take the directory's project ID.
pub const XFLAG_PROJINHERIT: u32 = 0x0000_0200;
/// The unit of `if_dqblk` block limits (`QIF_DQBLKSIZE`).
pub const QUOTA_BLOCK: u64 = 1024;

const PRJQUOTA: u32 = 2;
const Q_GETINFO: u32 = 0x80_0005;
const Q_GETQUOTA: u32 = 0x80_0007;
const Q_SETQUOTA: u32 = 0x80_0008;
const QIF_BLIMITS: u32 = 1;

/// `struct fsxattr` from `<linux/fs.h>`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct FsXattr {
    pub xflags: u32,
    pub extsize: u32,
    pub nextents: u32,
    pub projid: u32,
    pub cowextsize: u32,
    pad: [u8; 8],
}

/// `struct if_dqblk` from `<linux/quota.h>`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct IfDqblk {
    bhardlimit: u64,
    bsoftlimit: u64,
    curspace: u64,
    ihardlimit: u64,
    isoftlimit: u64,
    curinodes: u64,
    btime: u64,
    itime: u64,
    valid: u32,
}

/// `struct if_dqinfo` from `<linux/quota.h>`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct IfDqinfo {
    bgrace: u64,
    igrace: u64,
    flags: u32,
    valid: u32,
}

const _: () = assert!(std::mem::size_of::<FsXattr>() == 28);
const _: () = assert!(std::mem::size_of::<IfDqblk>() == 72);
const _: () = assert!(std::mem::size_of::<IfDqinfo>() == 24);

mod raw {
    nix::ioctl_read!(fs_get_xattr, b'X', 31, super::FsXattr);
    nix::ioctl_write_ptr!(fs_set_xattr, b'X', 32, super::FsXattr);
}

fn qcmd(command: u32) -> libc::c_uint {
    (command << 8) | PRJQUOTA
}

fn quotactl(
    file: BorrowedFd<'_>,
    command: u32,
    id: u32,
    addr: *mut libc::c_void,
) -> Result<(), Errno> {
    // SAFETY: quotactl_fd reads or writes at most the struct `addr` points to, which the callers
    // own, initialise and keep alive across the call; commands without an argument get null.
    let result = unsafe {
        libc::syscall(
            libc::SYS_quotactl_fd,
            file.as_raw_fd(),
            qcmd(command),
            id,
            addr,
        )
    };
    Errno::result(result).map(drop)
}

/// The extended attributes of the file or directory `file`.
pub fn get_xattr(file: BorrowedFd<'_>) -> Result<FsXattr, Errno> {
    let mut attr = FsXattr::default();
    // SAFETY: FS_IOC_FSGETXATTR fills the `FsXattr` it is given, which lives across the call.
    unsafe { raw::fs_get_xattr(file.as_raw_fd(), &mut attr) }?;
    Ok(attr)
}

pub fn set_xattr(file: BorrowedFd<'_>, attr: &FsXattr) -> Result<(), Errno> {
    // SAFETY: FS_IOC_FSSETXATTR reads the initialised `FsXattr`, which lives across the call.
    unsafe { raw::fs_set_xattr(file.as_raw_fd(), attr) }?;
    Ok(())
}

/// Whether project quotas are enforced on the filesystem of `file`: `Err(ESRCH)` when they are
/// off, `Err(ENOSYS)` when the kernel has no quota support for this filesystem.
pub fn enforced(file: BorrowedFd<'_>) -> Result<(), Errno> {
    let mut info = IfDqinfo::default();
    quotactl(file, Q_GETINFO, 0, (&raw mut info).cast())
}

/// Sets project `id`'s hard block limit, in bytes (rounded up to [`QUOTA_BLOCK`]); 0 removes it.
pub fn set_block_limit(file: BorrowedFd<'_>, id: u32, bytes: u64) -> Result<(), Errno> {
    let mut quota = IfDqblk {
        bhardlimit: bytes.div_ceil(QUOTA_BLOCK),
        bsoftlimit: 0,
        valid: QIF_BLIMITS,
        ..IfDqblk::default()
    };
    quotactl(file, Q_SETQUOTA, id, (&raw mut quota).cast())
}

/// Project `id`'s usage and hard limit, both in bytes (0: no limit).
pub fn block_usage(file: BorrowedFd<'_>, id: u32) -> Result<(u64, u64), Errno> {
    let mut quota = IfDqblk::default();
    quotactl(file, Q_GETQUOTA, id, (&raw mut quota).cast())?;
    Ok((quota.curspace, quota.bhardlimit * QUOTA_BLOCK))
}
