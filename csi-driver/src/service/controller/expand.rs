//! ControllerExpandVolume, and growing a volume's file, which NodeExpandVolume shares.

use super::capacity_status;
use crate::backend::{Backend, VolumeLayout, VolumeRecord};
use crate::capacity;
use crate::ids::VolumeId;
use crate::proto::*;
use crate::service::request::{self, AccessType};
use crate::service::{Driver, backend_status};
use tonic::Status;

pub(super) fn expand_volume(
    driver: &Driver,
    req: ControllerExpandVolumeRequest,
) -> Result<ControllerExpandVolumeResponse, Status> {
    if req.volume_id.is_empty() {
        return Err(Status::invalid_argument("volume_id is required"));
    }
    let range = req
        .capacity_range
        .ok_or_else(|| Status::invalid_argument("capacity_range is required"))?;
    let mount_access = match req.volume_capability.as_ref() {
        Some(cap) => !matches!(request::capability(Some(cap))?.access, AccessType::Block),
        None => true,
    };
    let (_guard, id, backend, record) = driver.lock_volume(&req.volume_id)?;
    // A disk-image volume has no filesystem of its own to grow: its larger image is all there is.
    let node_expansion_required = mount_access && record.layout == VolumeLayout::Device;
    let grown = grow(&id, backend.as_ref(), &record, &range)?;
    Ok(ControllerExpandVolumeResponse {
        capacity_bytes: i64::try_from(grown.capacity_bytes).unwrap_or(i64::MAX),
        node_expansion_required,
    })
}

/// Grows the volume's backing file (and its attached loop device) to what `range` asks for;
/// never shrinks it. The caller holds the volume's lock.
pub(crate) fn grow(
    id: &VolumeId,
    backend: &dyn Backend,
    record: &VolumeRecord,
    range: &CapacityRange,
) -> Result<VolumeRecord, Status> {
    let max = backend.max_volume_bytes().map_err(backend_status)?;
    let size =
        capacity::resolve(range.required_bytes, range.limit_bytes, max).map_err(capacity_status)?;
    if size < record.capacity_bytes
        && !capacity::satisfies(
            record.capacity_bytes,
            range.required_bytes,
            range.limit_bytes,
        )
    {
        return Err(Status::out_of_range(format!(
            "volume {id} has {} bytes; shrinking to {size} is not supported",
            record.capacity_bytes
        )));
    }
    let grown = backend.expand(record, size).map_err(backend_status)?;
    if grown.capacity_bytes != record.capacity_bytes {
        tracing::info!(volume = %id, from = record.capacity_bytes, to = grown.capacity_bytes, "expanded");
    }
    Ok(grown)
}
