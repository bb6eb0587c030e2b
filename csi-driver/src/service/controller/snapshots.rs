//! The snapshot RPCs of the Controller service: CreateSnapshot, DeleteSnapshot, ListSnapshots.

use super::page_status;
use crate::backend::SnapshotRecord;
use crate::ids::SnapshotId;
use crate::pagination;
use crate::proto::*;
use crate::service::parameters::SIDECAR_PARAM_PREFIX;
use crate::service::{Driver, backend_status, parse_volume_id};
use tonic::Status;

pub(super) fn csi_snapshot(record: &SnapshotRecord) -> Snapshot {
    Snapshot {
        size_bytes: i64::try_from(record.size_bytes).unwrap_or(i64::MAX),
        snapshot_id: record.id.clone(),
        source_volume_id: record.source_volume_id.clone(),
        creation_time: Some(prost_types::Timestamp {
            seconds: i64::try_from(record.created_unix).unwrap_or(0),
            nanos: 0,
        }),
        ready_to_use: true,
        group_snapshot_id: String::new(),
    }
}

pub(super) fn create_snapshot(
    driver: &Driver,
    req: CreateSnapshotRequest,
) -> Result<CreateSnapshotResponse, Status> {
    if req.name.is_empty() {
        return Err(Status::invalid_argument("name is required"));
    }
    crate::ids::validate_volume_name(&req.name)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    if req.source_volume_id.is_empty() {
        return Err(Status::invalid_argument("source_volume_id is required"));
    }
    if let Some(key) = req
        .parameters
        .keys()
        .find(|k| !k.starts_with(SIDECAR_PARAM_PREFIX))
    {
        return Err(Status::invalid_argument(format!(
            "unknown snapshot parameter {:?}; snapshots take none",
            crate::ids::truncate_for_message(key)
        )));
    }
    let volume_id = parse_volume_id(&req.source_volume_id)?;
    let backend = driver.backend(volume_id.pool()).ok_or_else(|| {
        Status::not_found(format!(
            "volume {volume_id} does not exist on node {}",
            driver.node_id
        ))
    })?;
    let id = SnapshotId::for_name(volume_id.pool(), &req.name)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let _guard = driver.lock(&id.to_string())?;
    // An existing snapshot answers a retry even if its source is gone by now.
    if let Some(existing) = backend.lookup_snapshot(&id).map_err(backend_status)? {
        if existing.source_volume_id != req.source_volume_id || existing.name != req.name {
            return Err(Status::already_exists(format!(
                "snapshot {} already exists for volume {}",
                req.name, existing.source_volume_id
            )));
        }
        return Ok(CreateSnapshotResponse {
            snapshot: Some(csi_snapshot(&existing)),
        });
    }
    let (_source_guard, _, _, volume) = driver.lock_volume(&req.source_volume_id)?;
    let started = std::time::Instant::now();
    let record = backend
        .create_snapshot(&id, &req.name, &volume)
        .map_err(backend_status)?;
    tracing::info!(snapshot = %record.id, volume = %record.source_volume_id, method = ?record.method, elapsed_ms = started.elapsed().as_millis() as u64, "snapshot taken");
    Ok(CreateSnapshotResponse {
        snapshot: Some(csi_snapshot(&record)),
    })
}

pub(super) fn delete_snapshot(
    driver: &Driver,
    req: DeleteSnapshotRequest,
) -> Result<DeleteSnapshotResponse, Status> {
    if req.snapshot_id.is_empty() {
        return Err(Status::invalid_argument("snapshot_id is required"));
    }
    let Ok(id) = SnapshotId::parse(&req.snapshot_id) else {
        return Ok(DeleteSnapshotResponse {});
    };
    let Some(backend) = driver.backend(id.pool()) else {
        return Ok(DeleteSnapshotResponse {});
    };
    let _guard = driver.lock(&id.to_string())?;
    backend.delete_snapshot(&id).map_err(backend_status)?;
    tracing::info!(snapshot = %id, "snapshot deleted");
    Ok(DeleteSnapshotResponse {})
}

pub(super) fn list_snapshots(
    driver: &Driver,
    req: ListSnapshotsRequest,
) -> Result<ListSnapshotsResponse, Status> {
    let mut snapshots = Vec::new();
    if !req.snapshot_id.is_empty() {
        let found = SnapshotId::parse(&req.snapshot_id).ok().and_then(|id| {
            let backend = driver.backend(id.pool())?;
            backend.lookup_snapshot(&id).transpose()
        });
        if let Some(record) = found {
            snapshots.push(record.map_err(backend_status)?);
        }
    } else {
        for (_, backend) in driver.pools.served() {
            snapshots.extend(backend.list_snapshots().map_err(backend_status)?);
        }
    }
    if !req.source_volume_id.is_empty() {
        snapshots.retain(|s| s.source_volume_id == req.source_volume_id);
    }
    snapshots.sort_by(|a, b| a.id.cmp(&b.id));
    let (page, next) = pagination::page(
        &snapshots,
        |s| s.id.as_str(),
        &req.starting_token,
        req.max_entries,
        |t| SnapshotId::parse(t).is_ok(),
    )
    .map_err(page_status)?;
    Ok(ListSnapshotsResponse {
        entries: page
            .iter()
            .map(|s| list_snapshots_response::Entry {
                snapshot: Some(csi_snapshot(s)),
            })
            .collect(),
        next_token: next.unwrap_or_default(),
    })
}
