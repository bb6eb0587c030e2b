//! NodeExpandVolume: the file and loop device grown, then the filesystem on it.

use super::{has_sys_resource_capability, is_device_mount, mount_table};
use crate::config::Expansion;
use crate::proto::*;
use crate::service::{Driver, backend_status, request};
use std::os::unix::fs::FileTypeExt;
use tonic::Status;

/// Lets the node see a grown volume: the loop device picks up the file's new size, and a mounted
/// filesystem grows online (resize2fs for ext4, xfs_growfs for xfs).
pub(super) fn expand(
    driver: &Driver,
    req: NodeExpandVolumeRequest,
) -> Result<NodeExpandVolumeResponse, Status> {
    request::required("volume_id", &req.volume_id)?;
    request::required("volume_path", &req.volume_path)?;
    let (_guard, id, backend, record) = driver.lock_volume(&req.volume_id)?;
    let path = request::path_of_volume(&req.volume_path)?;
    if record.layout == crate::backend::VolumeLayout::DiskImage {
        // The image is all there is to grow: the pool's filesystem holds it, and QEMU (or
        // KubeVirt) sees its new size.
        let record = match &req.capacity_range {
            Some(range) if driver.expansion == Expansion::Node => {
                crate::service::controller::grow(&id, backend.as_ref(), &record, range)?
            }
            _ => record,
        };
        return Ok(NodeExpandVolumeResponse {
            capacity_bytes: i64::try_from(record.capacity_bytes).unwrap_or(i64::MAX),
        });
    }
    let device = backend
        .attached(&id)
        .map_err(backend_status)?
        .ok_or_else(|| {
            Status::failed_precondition(format!("volume {id} is not staged on this node"))
        })?;
    let record = match &req.capacity_range {
        Some(range)
            if range.required_bytes > 0 && range.required_bytes as u64 > record.capacity_bytes =>
        {
            if driver.expansion != Expansion::Node {
                return Err(Status::out_of_range(format!(
                    "volume {id} has {} bytes; ControllerExpandVolume must grow it to {} first",
                    record.capacity_bytes, range.required_bytes
                )));
            }
            crate::service::controller::grow(&id, backend.as_ref(), &record, range)?
        }
        // Refreshes the loop device's size when the file grew while it was not attached.
        _ => backend
            .expand(&record, record.capacity_bytes)
            .map_err(backend_status)?,
    };
    let meta = std::fs::metadata(&path)
        .map_err(|e| Status::not_found(format!("volume_path {}: {e}", path.display())))?;
    if !meta.file_type().is_block_device() {
        let table = mount_table()?;
        let mount = table
            .iter()
            .rev()
            .find(|e| e.mount_point == path && is_device_mount(e, device.rdev))
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "volume {id} is not mounted at {}",
                    path.display()
                ))
            })?;
        if mount.read_only() || device.read_only {
            return Err(Status::failed_precondition(format!(
                "volume {id} is mounted read-only at {}; it cannot grow there",
                path.display()
            )));
        }
        let grown = match mount.fs_type.as_str() {
            "ext4" if !has_sys_resource_capability() => {
                return Err(Status::failed_precondition(
                    "growing a mounted ext4 filesystem needs CAP_SYS_RESOURCE, which this driver process lacks; run the node plugin privileged",
                ));
            }
            "ext4" => crate::tools::run("resize2fs", [device.path.as_os_str()]),
            "xfs" => crate::tools::run("xfs_growfs", [path.as_os_str()]),
            other => {
                return Err(Status::failed_precondition(format!(
                    "cannot grow a {other} filesystem"
                )));
            }
        };
        grown.map_err(|e| Status::internal(e.to_string()))?;
        tracing::info!(volume = %id, fs = %mount.fs_type, bytes = record.capacity_bytes, "filesystem grown");
    }
    Ok(NodeExpandVolumeResponse {
        capacity_bytes: i64::try_from(record.capacity_bytes).unwrap_or(i64::MAX),
    })
}
