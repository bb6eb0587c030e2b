//! NodeGetVolumeStats: usage of a published volume and its condition (the pool's health, the
//! loop device, the filesystem's error count).

use super::{io_status, is_device_mount, mount_table};
use crate::proto::*;
use crate::service::{Driver, backend_status, parse_volume_id, request};
use std::io::{Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use tonic::Status;

pub(super) fn volume_stats(
    driver: &Driver,
    req: NodeGetVolumeStatsRequest,
) -> Result<NodeGetVolumeStatsResponse, Status> {
    request::required("volume_id", &req.volume_id)?;
    request::required("volume_path", &req.volume_path)?;
    // A volume of a pool that cannot be opened is not gone: it is abnormal, and says why.
    let pool = parse_volume_id(&req.volume_id)?.pool().clone();
    if let Some(reason) = driver.pools.unavailable_reason(&pool) {
        return Ok(NodeGetVolumeStatsResponse {
            usage: Vec::new(),
            volume_condition: Some(VolumeCondition {
                abnormal: true,
                message: format!("pool {pool} is unavailable on this node: {reason}"),
            }),
        });
    }
    let (id, backend, record) = driver.volume(&req.volume_id)?;
    let path = request::path_of_volume(&req.volume_path)?;
    if record.layout == crate::backend::VolumeLayout::DiskImage {
        return super::disk_image::stats(backend.as_ref(), &record, &path);
    }
    let meta = std::fs::metadata(&path)
        .map_err(|e| Status::not_found(format!("volume_path {}: {e}", path.display())))?;
    let device = backend.attached(&id).map_err(backend_status)?;
    let mut problem = backend.abnormal(&record);
    let usage = if meta.file_type().is_block_device() {
        if problem.is_none() && device.as_ref().is_none_or(|d| d.rdev != meta.rdev()) {
            problem = Some(format!(
                "{} is {}, not the device of volume {id}: it was detached or replaced",
                path.display(),
                describe_device(meta.rdev())
            ));
        }
        let size = std::fs::File::open(&path)
            .and_then(|mut f| f.seek(SeekFrom::End(0)))
            .map_err(io_status("measuring", &path))?;
        vec![VolumeUsage {
            available: 0,
            total: size as i64,
            used: 0,
            unit: volume_usage::Unit::Bytes as i32,
        }]
    } else {
        let table = mount_table()?;
        let mounted = device.as_ref().is_some_and(|d| {
            table
                .iter()
                .any(|e| e.mount_point == path && is_device_mount(e, d.rdev))
        });
        if problem.is_none() && !mounted {
            problem = Some(format!("volume {id} is not mounted at {}", path.display()));
        }
        if problem.is_none() {
            problem = device.as_ref().and_then(|d| filesystem_errors(d.rdev));
        }
        let stat = match nix::sys::statvfs::statvfs(&path) {
            Ok(stat) => stat,
            // A filesystem that shut down after errors answers EIO; that is the volume's condition.
            Err(errno) => {
                return Ok(NodeGetVolumeStatsResponse {
                    usage: Vec::new(),
                    volume_condition: Some(VolumeCondition {
                        abnormal: true,
                        message: format!("the filesystem at {} fails: {errno}", path.display()),
                    }),
                });
            }
        };
        let fragment = stat.fragment_size();
        let total = stat.blocks() * fragment;
        let available = stat.blocks_available() * fragment;
        let used = total.saturating_sub(stat.blocks_free() * fragment);
        vec![
            VolumeUsage {
                available: available as i64,
                total: total as i64,
                used: used as i64,
                unit: volume_usage::Unit::Bytes as i32,
            },
            VolumeUsage {
                available: stat.files_available() as i64,
                total: stat.files() as i64,
                used: stat.files().saturating_sub(stat.files_free()) as i64,
                unit: volume_usage::Unit::Inodes as i32,
            },
        ]
    };
    Ok(NodeGetVolumeStatsResponse {
        usage,
        volume_condition: Some(VolumeCondition {
            abnormal: problem.is_some(),
            message: problem.unwrap_or_else(|| "healthy".into()),
        }),
    })
}

/// What a block device is, for messages: a loop device and its backing file where it is one.
pub(super) fn describe_device(rdev: u64) -> String {
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    let sysfs = format!("/sys/dev/block/{major}:{minor}");
    let name = std::fs::read_link(&sysfs)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| format!("{major}:{minor}"));
    match std::fs::read_to_string(format!("{sysfs}/loop/backing_file")) {
        Ok(backing) => format!("/dev/{name} bound to {}", backing.trim()),
        Err(_) => format!("/dev/{name}"),
    }
}

/// Errors the kernel recorded on an ext4 filesystem on the device (`/sys/fs/ext4/<dev>/errors_count`).
pub(super) fn filesystem_errors(rdev: u64) -> Option<String> {
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    let name = std::fs::read_link(format!("/sys/dev/block/{major}:{minor}"))
        .ok()?
        .file_name()?
        .to_string_lossy()
        .into_owned();
    let count: u64 = std::fs::read_to_string(format!("/sys/fs/ext4/{name}/errors_count"))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (count > 0).then(|| format!("the ext4 filesystem on /dev/{name} has recorded {count} errors; run fsck before trusting it"))
}
