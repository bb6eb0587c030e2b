//! Copying a volume file: a reflink (FICLONE) where the filesystem shares extents, in O(1) time
//! whatever the size; otherwise a copy that skips holes.

use rustix::fs::SeekFrom;
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// How a copy was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CloneMethod {
    /// Extents shared with the source (XFS with reflink, btrfs): instant, no space used until written.
    Reflink,
    /// Data copied block by block, holes preserved.
    Copy,
}

/// Copies `source` to a new file `dest` (which must not exist). The caller removes `dest` on error.
pub fn clone_file(source: &Path, dest: &Path) -> std::io::Result<CloneMethod> {
    let src = File::open(source)?;
    let dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(super::privacy::FILE_MODE)
        .open(dest)?;
    match_no_copy_on_write(&src, &dst);
    let method = match rustix::fs::ioctl_ficlone(&dst, &src) {
        Ok(()) => CloneMethod::Reflink,
        Err(Errno::OPNOTSUPP | Errno::XDEV | Errno::INVAL | Errno::NOTTY | Errno::PERM) => {
            sparse_copy(&src, &dst)?;
            CloneMethod::Copy
        }
        Err(e) => return Err(e.into()),
    };
    dst.sync_all()?;
    Ok(method)
}

/// Makes the new, empty `file` overwrite in place on btrfs (no-copy-on-write), as VM images want:
/// copy-on-write there turns every small overwrite into an allocation, fragments the image and,
/// measured through a loop device, costs most of the random-write rate. Other filesystems
/// overwrite in place anyway and are left alone.
pub fn overwrite_in_place(file: &File) {
    use rustix::fs::{IFlags, ioctl_getflags, ioctl_setflags};
    #[allow(clippy::unnecessary_cast)]
    let on_btrfs =
        rustix::fs::fstatfs(file).is_ok_and(|s| s.f_type as i64 == super::dir_quota::BTRFS_MAGIC);
    if let (true, Ok(flags)) = (on_btrfs, ioctl_getflags(file))
        && !flags.contains(IFlags::NOCOW)
    {
        let _ = ioctl_setflags(file, flags | IFlags::NOCOW);
    }
}

/// Gives the empty `dst` the no-copy-on-write flag of `src` (btrfs, where `disk-image` volumes
/// have it): btrfs refuses to share extents between files that differ in it.
fn match_no_copy_on_write(src: &File, dst: &File) {
    use rustix::fs::{IFlags, ioctl_getflags, ioctl_setflags};
    let Ok(source_flags) = ioctl_getflags(src) else {
        return;
    };
    if let Ok(flags) = ioctl_getflags(dst)
        && source_flags.contains(IFlags::NOCOW)
        && !flags.contains(IFlags::NOCOW)
    {
        let _ = ioctl_setflags(dst, flags | IFlags::NOCOW);
    }
}

/// Allocates every hole of `file` up to `len` bytes, leaving data and shared extents alone. A plain
/// fallocate over the whole file would do the same, but XFS reserves space for the whole range
/// first, so it fails on a reflinked clone larger than the pool's free space.
pub fn preallocate_holes(file: &File, len: u64) -> std::io::Result<()> {
    let mut offset = 0u64;
    while offset < len {
        let hole = match rustix::fs::seek(file, SeekFrom::Hole(offset)) {
            Ok(position) => position,
            Err(Errno::NXIO) => len,
            Err(e) => return Err(e.into()),
        };
        if hole >= len {
            break;
        }
        let data = match rustix::fs::seek(file, SeekFrom::Data(hole)) {
            Ok(position) => position.min(len),
            Err(Errno::NXIO) => len,
            Err(e) => return Err(e.into()),
        };
        rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), hole, data - hole)?;
        offset = data;
    }
    Ok(())
}

/// Whether files in `dir` can be reflinked: probes with two small files.
pub fn supports_reflink(dir: &Path) -> bool {
    let probe_src = dir.join(".reflink-probe-src");
    let probe_dst = dir.join(".reflink-probe-dst");
    let result = (|| {
        std::fs::write(&probe_src, [0u8; 4096])?;
        let src = File::open(&probe_src)?;
        let dst = File::create(&probe_dst)?;
        rustix::fs::ioctl_ficlone(&dst, &src).map_err(std::io::Error::from)
    })();
    let _ = std::fs::remove_file(&probe_src);
    let _ = std::fs::remove_file(&probe_dst);
    result.is_ok()
}

/// Copies the data regions of `src` with copy_file_range (which the kernel may offload), leaving
/// holes as holes, and gives `dst` the same length.
fn sparse_copy(src: &File, dst: &File) -> std::io::Result<()> {
    let len = src.metadata()?.len();
    let mut offset = 0u64;
    while offset < len {
        let data = match rustix::fs::seek(src, SeekFrom::Data(offset)) {
            Ok(position) => position,
            Err(Errno::NXIO) => break,
            Err(e) => return Err(e.into()),
        };
        let hole = match rustix::fs::seek(src, SeekFrom::Hole(data)) {
            Ok(position) => position.min(len),
            Err(e) => return Err(e.into()),
        };
        let mut at = data;
        while at < hole {
            let mut from = at;
            let mut to = at;
            let chunk = usize::try_from(hole - at)
                .unwrap_or(usize::MAX)
                .min(1 << 30);
            let copied =
                rustix::fs::copy_file_range(src, Some(&mut from), dst, Some(&mut to), chunk)?;
            if copied == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "source shrank during the copy",
                ));
            }
            at += copied as u64;
        }
        offset = hole;
    }
    dst.set_len(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileExt, MetadataExt};

    #[test]
    fn copies_data_and_keeps_holes() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("src");
        let file = File::create(&source).unwrap();
        file.set_len(64 << 20).unwrap();
        file.write_all_at(&[7u8; 8192], 1 << 20).unwrap();
        file.write_all_at(&[9u8; 4096], 40 << 20).unwrap();
        file.sync_all().unwrap();
        let dest = dir.path().join("dst");
        clone_file(&source, &dest).unwrap();
        let copied = File::open(&dest).unwrap();
        assert_eq!(copied.metadata().unwrap().len(), 64 << 20);
        let mut buf = [0u8; 8192];
        copied.read_exact_at(&mut buf, 1 << 20).unwrap();
        assert!(buf.iter().all(|&b| b == 7));
        copied.read_exact_at(&mut buf[..4096], 40 << 20).unwrap();
        assert!(buf[..4096].iter().all(|&b| b == 9));
        copied.read_exact_at(&mut buf, 20 << 20).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
        // Whatever the method, the copy did not allocate the 64 MiB of holes.
        assert!(copied.metadata().unwrap().blocks() * 512 < 8 << 20);
        assert!(
            clone_file(&source, &dest).is_err(),
            "an existing destination is never overwritten"
        );
    }

    #[test]
    fn preallocating_holes_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.set_len(16 << 20).unwrap();
        file.write_all_at(&[5u8; 4096], 8 << 20).unwrap();
        preallocate_holes(&file, 16 << 20).unwrap();
        assert!(
            file.metadata().unwrap().blocks() * 512 >= 16 << 20,
            "every hole is allocated"
        );
        let mut buf = [0u8; 4096];
        file.read_exact_at(&mut buf, 8 << 20).unwrap();
        assert!(buf.iter().all(|&b| b == 5));
        file.read_exact_at(&mut buf, 0).unwrap();
        assert!(buf.iter().all(|&b| b == 0));
    }
}
