//! The loop device ioctls.
//!
//! No maintained crate offers LOOP_CONFIGURE without pulling in bindgen, and `nix`/`rustix` have no
//! typed loop wrappers, so this module declares the few ioctls it needs with nix's macros. Each call
//! passes either no argument or a pointer to a fully initialised `#[repr(C)]` struct that matches
//! `<linux/loop.h>` and outlives the call; that is the whole safety argument.

use nix::errno::Errno;
use std::os::fd::{AsRawFd, BorrowedFd};

const LO_NAME_SIZE: usize = 64;
const LO_KEY_SIZE: usize = 32;

pub const LO_FLAGS_READ_ONLY: u32 = 1;
pub const LO_FLAGS_DIRECT_IO: u32 = 16;

/// `struct loop_info64` from `<linux/loop.h>`.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; LO_NAME_SIZE],
    lo_crypt_name: [u8; LO_NAME_SIZE],
    lo_encrypt_key: [u8; LO_KEY_SIZE],
    lo_init: [u64; 2],
}

/// `struct loop_config` from `<linux/loop.h>` (Linux 5.8+).
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

const _: () = assert!(std::mem::size_of::<LoopInfo64>() == 232);
const _: () = assert!(std::mem::size_of::<LoopConfig>() == 304);

mod raw {
    nix::ioctl_none_bad!(loop_clr_fd, 0x4C01);
    nix::ioctl_read_bad!(loop_get_status64, 0x4C05, super::LoopInfo64);
    nix::ioctl_none_bad!(loop_set_capacity, 0x4C07);
    nix::ioctl_write_ptr_bad!(loop_configure, 0x4C0A, super::LoopConfig);
    nix::ioctl_none_bad!(loop_ctl_get_free, 0x4C82);
}

/// Asks `/dev/loop-control` for a free loop device number.
pub fn get_free(control: BorrowedFd<'_>) -> Result<u32, Errno> {
    // SAFETY: LOOP_CTL_GET_FREE takes no argument.
    let number = unsafe { raw::loop_ctl_get_free(control.as_raw_fd()) }?;
    u32::try_from(number).map_err(|_| Errno::EINVAL)
}

/// Binds `backing` to the loop device `device` in one step, with the given flags and block size.
pub fn configure(
    device: BorrowedFd<'_>,
    backing: BorrowedFd<'_>,
    block_size: u32,
    flags: u32,
    file_name: &[u8],
) -> Result<(), Errno> {
    let mut name = [0u8; LO_NAME_SIZE];
    let len = file_name.len().min(LO_NAME_SIZE - 1);
    name[..len].copy_from_slice(&file_name[..len]);
    let config = LoopConfig {
        fd: u32::try_from(backing.as_raw_fd()).map_err(|_| Errno::EBADF)?,
        block_size,
        info: LoopInfo64 {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: flags,
            lo_file_name: name,
            lo_crypt_name: [0; LO_NAME_SIZE],
            lo_encrypt_key: [0; LO_KEY_SIZE],
            lo_init: [0; 2],
        },
        reserved: [0; 8],
    };
    // SAFETY: `config` is a fully initialised loop_config that lives until the call returns.
    unsafe { raw::loop_configure(device.as_raw_fd(), &config) }.map(drop)
}

/// The device and inode numbers of the file bound to `device`: its identity whatever path the
/// caller's mount namespace gives it.
pub fn backing_identity(device: BorrowedFd<'_>) -> Result<(u64, u64), Errno> {
    let mut info = std::mem::MaybeUninit::<LoopInfo64>::zeroed();
    // SAFETY: LOOP_GET_STATUS64 fills a loop_info64, which `info` has room for; a zeroed
    // loop_info64 is a valid value of the type, so reading it afterwards is sound either way.
    unsafe { raw::loop_get_status64(device.as_raw_fd(), info.as_mut_ptr()) }?;
    // SAFETY: zero-initialised above and possibly overwritten by the kernel; all-zero is valid.
    let info = unsafe { info.assume_init() };
    Ok((info.lo_device, info.lo_inode))
}

/// Unbinds the backing file from `device`.
pub fn clear_fd(device: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: LOOP_CLR_FD takes no argument.
    unsafe { raw::loop_clr_fd(device.as_raw_fd()) }.map(drop)
}

/// Makes `device` re-read the size of its backing file.
pub fn set_capacity(device: BorrowedFd<'_>) -> Result<(), Errno> {
    // SAFETY: LOOP_SET_CAPACITY takes no argument.
    unsafe { raw::loop_set_capacity(device.as_raw_fd()) }.map(drop)
}
