//! The Controller service: creating, listing and deleting volumes in this node's pools.

mod expand;
mod modify;
mod snapshots;

use super::parameters::{PARAM_FS_TYPE, PARAM_POOL, PARAM_THIN, creation_limits, parse_parameters};
use super::request::{self, AccessType};
use super::{Driver, backend_status, blocking, parse_volume_id};
use crate::backend::{Backend, ContentSource, CreateSpec, VolumeLayout, VolumeRecord};
use crate::capacity::{self, CapacityError};
use crate::filesystem::FsType;
use crate::ids::{PoolName, SnapshotId, VolumeId};
use crate::pagination::{self, PageError};
use crate::proto::controller_server::Controller;
use crate::proto::controller_service_capability::{self, rpc};
use crate::proto::*;
use expand::expand_volume;
pub(crate) use expand::grow;
use modify::modify_volume;
use snapshots::{create_snapshot, delete_snapshot, list_snapshots};
use std::collections::HashMap;
use tonic::{Request, Response, Status};

/// mkfs.xfs refuses smaller devices.
const XFS_MIN_SIZE: u64 = 300 << 20;

#[derive(Debug, Clone)]
pub struct ControllerService {
    driver: Driver,
}

impl ControllerService {
    pub fn new(driver: Driver) -> Self {
        Self { driver }
    }
}

pub(super) fn capacity_status(error: CapacityError) -> Status {
    match error {
        CapacityError::Negative { .. } | CapacityError::RequiredAboveLimit { .. } => {
            Status::invalid_argument(error.to_string())
        }
        CapacityError::NoAlignedSize { .. } | CapacityError::TooLarge { .. } => {
            Status::out_of_range(error.to_string())
        }
    }
}

/// Whether a topology segment names this node.
fn is_this_node(driver: &Driver, topology: &Topology) -> bool {
    topology.segments.get(crate::TOPOLOGY_NODE_KEY) == Some(&driver.node_id)
}

/// Volume context key saying whether snapshots and clones of the volume are instant (reflink).
pub const CONTEXT_INSTANT_CLONES: &str = "instantClones";

fn csi_volume(
    driver: &Driver,
    record: &VolumeRecord,
    pool: &PoolName,
    fs_type: Option<FsType>,
) -> Volume {
    let instant = driver.backend(pool).is_some_and(|b| b.instant_clones());
    let mut volume_context = HashMap::from([
        (PARAM_POOL.to_owned(), pool.to_string()),
        (PARAM_THIN.to_owned(), record.thin.to_string()),
        (CONTEXT_INSTANT_CLONES.to_owned(), instant.to_string()),
    ]);
    if let Some(fs) = fs_type {
        volume_context.insert(PARAM_FS_TYPE.to_owned(), fs.as_str().to_owned());
    }
    if !record.layout.is_device() {
        volume_context.insert(
            fastvirt_api::volume_layout::PARAMETER.to_owned(),
            record.layout.as_str().to_owned(),
        );
    }
    Volume {
        capacity_bytes: i64::try_from(record.capacity_bytes).unwrap_or(i64::MAX),
        volume_id: record.id.clone(),
        volume_context,
        content_source: record.source.as_deref().and_then(csi_content_source),
        accessible_topology: vec![driver.topology()],
    }
}

/// Parses a content source; a new volume from it must be in the same pool.
fn requested_source(
    pool: &PoolName,
    source: Option<&VolumeContentSource>,
) -> Result<Option<ContentSource>, Status> {
    let Some(source) = source else {
        return Ok(None);
    };
    let parsed = match &source.r#type {
        Some(volume_content_source::Type::Snapshot(snapshot)) => ContentSource::Snapshot(
            SnapshotId::parse(&snapshot.snapshot_id)
                .map_err(|e| Status::not_found(e.to_string()))?,
        ),
        Some(volume_content_source::Type::Volume(volume)) => ContentSource::Volume(
            VolumeId::parse(&volume.volume_id).map_err(|e| Status::not_found(e.to_string()))?,
        ),
        None => {
            return Err(Status::invalid_argument(
                "volume_content_source names neither a snapshot nor a volume",
            ));
        }
    };
    let its_pool = match &parsed {
        ContentSource::Snapshot(id) => id.pool(),
        ContentSource::Volume(id) => id.pool(),
    };
    if its_pool != pool {
        return Err(Status::invalid_argument(format!(
            "{parsed} is in pool {its_pool}; a new volume from it must be created in the same pool, not {pool}"
        )));
    }
    Ok(Some(parsed))
}

/// The size of an existing content source.
fn source_size(backend: &dyn Backend, source: &ContentSource) -> Result<u64, Status> {
    let not_found = || Status::not_found(format!("{source} does not exist"));
    match source {
        ContentSource::Snapshot(id) => backend
            .lookup_snapshot(id)
            .map_err(backend_status)?
            .map(|r| r.size_bytes)
            .ok_or_else(not_found),
        ContentSource::Volume(id) => backend
            .lookup(id)
            .map_err(backend_status)?
            .map(|r| r.capacity_bytes)
            .ok_or_else(not_found),
    }
}

/// The CSI content source of a volume made from `source` (a snapshot or volume ID).
fn csi_content_source(source: &str) -> Option<VolumeContentSource> {
    let r#type = if SnapshotId::parse(source).is_ok() {
        volume_content_source::Type::Snapshot(volume_content_source::SnapshotSource {
            snapshot_id: source.to_owned(),
        })
    } else if VolumeId::parse(source).is_ok() {
        volume_content_source::Type::Volume(volume_content_source::VolumeSource {
            volume_id: source.to_owned(),
        })
    } else {
        return None;
    };
    Some(VolumeContentSource {
        r#type: Some(r#type),
    })
}

pub(super) fn page_status(error: PageError) -> Status {
    match error {
        PageError::NegativeMaxEntries(_) => Status::invalid_argument(error.to_string()),
        PageError::BadToken(_) => Status::aborted(error.to_string()),
    }
}

fn create_volume(
    driver: &Driver,
    req: CreateVolumeRequest,
) -> Result<CreateVolumeResponse, Status> {
    if req.name.is_empty() {
        return Err(Status::invalid_argument("name is required"));
    }
    crate::ids::validate_volume_name(&req.name)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let params = parse_parameters(driver, &req.parameters)?;
    let qos = creation_limits(params.qos, &req.mutable_parameters)?;
    let mut volume_capabilities = req.volume_capabilities.clone();
    for cap in &mut volume_capabilities {
        request::default_fs_type(cap, params.fs_type);
    }
    let capabilities = request::capabilities(&volume_capabilities)?;
    if params.layout == VolumeLayout::DiskImage
        && capabilities
            .iter()
            .any(|c| matches!(c.access, AccessType::Block))
    {
        return Err(Status::invalid_argument(
            "the disk-image layout makes Filesystem volumes (a directory holding disk.img); a Block volume needs a class with layout device",
        ));
    }
    let requisite = req
        .accessibility_requirements
        .as_ref()
        .map(|r| r.requisite.as_slice())
        .unwrap_or_default();
    if !requisite.is_empty() && !requisite.iter().any(|t| is_this_node(driver, t)) {
        return Err(Status::resource_exhausted(format!(
            "volumes of this driver live on the node that creates them ({}), which is not in the requisite topology",
            driver.node_id
        )));
    }
    // RESOURCE_EXHAUSTED, not INVALID_ARGUMENT: the request is fine for a node that has the pool,
    // and this code makes external-provisioner reschedule instead of giving up.
    let backend = driver.usable_backend(&params.pool)?;
    // RESOURCE_EXHAUSTED too: another node's pool may have what this one lacks.
    backend
        .check_layout(params.layout)
        .map_err(Status::resource_exhausted)?;
    let (mut required, limit) = req
        .capacity_range
        .map(|r| (r.required_bytes, r.limit_bytes))
        .unwrap_or((0, 0));
    if required < 0 || limit < 0 || (limit > 0 && required > limit) {
        return Err(capacity_status(
            capacity::resolve(required, limit, u64::MAX).unwrap_err(),
        ));
    }
    let source = requested_source(&params.pool, req.volume_content_source.as_ref())?;
    let id = VolumeId::for_name(&params.pool, &req.name)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let _guard = driver.lock(&id.to_string())?;
    // An existing volume answers a retry before anything about its source is looked at: the source
    // may be gone or grown by now.
    if let Some(existing) = backend.lookup(&id).map_err(backend_status)? {
        let compatible = existing.name == req.name
            && existing.thin == params.thin
            && existing.layout == params.layout
            && existing.source == source.as_ref().map(ToString::to_string)
            && capacity::satisfies(existing.capacity_bytes, required, limit);
        if !compatible {
            return Err(Status::already_exists(format!(
                "volume {} already exists with {} bytes, thin={}, which does not match this request",
                req.name, existing.capacity_bytes, existing.thin
            )));
        }
        return Ok(CreateVolumeResponse {
            volume: Some(csi_volume(driver, &existing, &params.pool, params.fs_type)),
        });
    }
    // The source is held too, so it cannot be deleted or changed halfway through the copy.
    let _source_guard = source
        .as_ref()
        .map(|s| driver.lock(&s.to_string()))
        .transpose()?;
    if let Some(source) = &source {
        let source_size = i64::try_from(source_size(backend.as_ref(), source)?).unwrap_or(i64::MAX);
        if (required > 0 && required < source_size) || (limit > 0 && limit < source_size) {
            return Err(Status::out_of_range(format!(
                "{source} holds {source_size} bytes; the new volume cannot be smaller"
            )));
        }
        required = required.max(source_size);
    }
    let max = backend.max_volume_bytes().map_err(backend_status)?;
    let size = capacity::resolve(required, limit, max).map_err(capacity_status)?;
    let needs_xfs = capabilities.iter().any(|c| {
        matches!(
            c.access,
            AccessType::Mount {
                fs: FsType::Xfs,
                ..
            }
        )
    });
    // A disk-image volume has no filesystem of its own: the pool's holds its image.
    if needs_xfs && params.layout == VolumeLayout::Device && size < XFS_MIN_SIZE {
        return Err(Status::out_of_range(format!(
            "xfs needs a volume of at least {} MiB, {} MiB were requested",
            XFS_MIN_SIZE >> 20,
            size >> 20
        )));
    }
    let spec = CreateSpec {
        id,
        name: req.name,
        capacity_bytes: size,
        thin: params.thin,
        source,
        qos,
        layout: params.layout,
    };
    let record = backend.create(&spec).map_err(backend_status)?;
    tracing::info!(volume = %record.id, name = %record.name, bytes = record.capacity_bytes, thin = record.thin, %qos, layout = record.layout.as_str(), "created");
    Ok(CreateVolumeResponse {
        volume: Some(csi_volume(driver, &record, &params.pool, params.fs_type)),
    })
}

fn delete_volume(
    driver: &Driver,
    req: DeleteVolumeRequest,
) -> Result<DeleteVolumeResponse, Status> {
    let id = match parse_volume_id(&req.volume_id) {
        Ok(id) => id,
        // Deleting something that cannot exist is a success: the volume is gone.
        Err(status) if status.code() == tonic::Code::NotFound => {
            return Ok(DeleteVolumeResponse {});
        }
        Err(status) => return Err(status),
    };
    let Some(backend) = driver.backend(id.pool()) else {
        return Ok(DeleteVolumeResponse {});
    };
    let _guard = driver.lock(&id.to_string())?;
    backend.delete(&id).map_err(backend_status)?;
    tracing::info!(volume = %id, "deleted");
    Ok(DeleteVolumeResponse {})
}

fn validate_capabilities(
    driver: &Driver,
    req: ValidateVolumeCapabilitiesRequest,
) -> Result<ValidateVolumeCapabilitiesResponse, Status> {
    if req.volume_id.is_empty() {
        return Err(Status::invalid_argument("volume_id is required"));
    }
    if req.volume_capabilities.is_empty() {
        return Err(Status::invalid_argument(
            "volume_capabilities must not be empty",
        ));
    }
    let (id, _, record) = driver.volume(&req.volume_id)?;
    let unconfirmed = |message: String| {
        Ok(ValidateVolumeCapabilitiesResponse {
            confirmed: None,
            message,
        })
    };
    let capabilities = match request::capabilities(&req.volume_capabilities) {
        Ok(capabilities) => capabilities,
        Err(status) => return unconfirmed(status.message().to_owned()),
    };
    if record.layout == VolumeLayout::DiskImage
        && capabilities
            .iter()
            .any(|c| matches!(c.access, AccessType::Block))
    {
        return unconfirmed("a disk-image volume is a directory: it has no Block access".into());
    }
    if !req.parameters.is_empty() {
        match parse_parameters(driver, &req.parameters) {
            Ok(params)
                if params.pool == *id.pool()
                    && params.thin == record.thin
                    && params.layout == record.layout => {}
            Ok(_) => {
                return unconfirmed(
                    "the parameters describe a different pool or provisioning than this volume's"
                        .into(),
                );
            }
            Err(status) => return unconfirmed(status.message().to_owned()),
        }
    }
    Ok(ValidateVolumeCapabilitiesResponse {
        confirmed: Some(validate_volume_capabilities_response::Confirmed {
            volume_context: req.volume_context,
            volume_capabilities: req.volume_capabilities,
            parameters: req.parameters,
            mutable_parameters: req.mutable_parameters,
        }),
        message: String::new(),
    })
}

fn list_volumes(driver: &Driver, req: ListVolumesRequest) -> Result<ListVolumesResponse, Status> {
    let mut volumes = Vec::new();
    for (pool, backend) in driver.pools.served() {
        for record in backend.list().map_err(backend_status)? {
            volumes.push(csi_volume(driver, &record, &pool, None));
        }
    }
    volumes.sort_by(|a, b| a.volume_id.cmp(&b.volume_id));
    let (page, next) = pagination::page(
        &volumes,
        |v| v.volume_id.as_str(),
        &req.starting_token,
        req.max_entries,
        |t| VolumeId::parse(t).is_ok(),
    )
    .map_err(page_status)?;
    Ok(ListVolumesResponse {
        entries: page
            .iter()
            .map(|v| list_volumes_response::Entry {
                volume: Some(v.clone()),
                status: None,
            })
            .collect(),
        next_token: next.unwrap_or_default(),
    })
}

fn get_capacity(driver: &Driver, req: GetCapacityRequest) -> Result<GetCapacityResponse, Status> {
    let none = GetCapacityResponse {
        available_capacity: 0,
        maximum_volume_size: Some(0),
        minimum_volume_size: None,
    };
    let params = parse_parameters(driver, &req.parameters)?;
    if req
        .accessible_topology
        .as_ref()
        .is_some_and(|t| !is_this_node(driver, t))
    {
        return Ok(none);
    }
    if !req.volume_capabilities.is_empty()
        && request::capabilities(&req.volume_capabilities).is_err()
    {
        return Ok(none);
    }
    // An unhealthy pool offers nothing, so the scheduler places new volumes elsewhere; so does
    // one that cannot hold the class's layout.
    let Ok(backend) = driver.usable_backend(&params.pool) else {
        return Ok(none);
    };
    if backend.check_layout(params.layout).is_err() {
        return Ok(none);
    }
    let usage = backend.usage().map_err(backend_status)?;
    let available = i64::try_from(usage.available_bytes).unwrap_or(i64::MAX);
    let aligned_max = (usage.available_bytes / capacity::ALIGNMENT * capacity::ALIGNMENT) as i64;
    Ok(GetCapacityResponse {
        available_capacity: available,
        maximum_volume_size: Some(aligned_max),
        minimum_volume_size: Some(capacity::MIN_SIZE as i64),
    })
}

fn rpc_capability(kind: rpc::Type) -> ControllerServiceCapability {
    ControllerServiceCapability {
        r#type: Some(controller_service_capability::Type::Rpc(
            controller_service_capability::Rpc {
                r#type: kind as i32,
            },
        )),
    }
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        req: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        let driver = self.driver.clone();
        blocking("CreateVolume", move || {
            create_volume(&driver, req.into_inner())
        })
        .await
    }

    async fn delete_volume(
        &self,
        req: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        let driver = self.driver.clone();
        blocking("DeleteVolume", move || {
            delete_volume(&driver, req.into_inner())
        })
        .await
    }

    async fn validate_volume_capabilities(
        &self,
        req: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        let driver = self.driver.clone();
        blocking("ValidateVolumeCapabilities", move || {
            validate_capabilities(&driver, req.into_inner())
        })
        .await
    }

    async fn list_volumes(
        &self,
        req: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        let driver = self.driver.clone();
        blocking("ListVolumes", move || {
            list_volumes(&driver, req.into_inner())
        })
        .await
    }

    async fn get_capacity(
        &self,
        req: Request<GetCapacityRequest>,
    ) -> Result<Response<GetCapacityResponse>, Status> {
        let driver = self.driver.clone();
        blocking("GetCapacity", move || {
            get_capacity(&driver, req.into_inner())
        })
        .await
    }

    async fn create_snapshot(
        &self,
        req: Request<CreateSnapshotRequest>,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        let driver = self.driver.clone();
        blocking("CreateSnapshot", move || {
            create_snapshot(&driver, req.into_inner())
        })
        .await
    }

    async fn delete_snapshot(
        &self,
        req: Request<DeleteSnapshotRequest>,
    ) -> Result<Response<DeleteSnapshotResponse>, Status> {
        let driver = self.driver.clone();
        blocking("DeleteSnapshot", move || {
            delete_snapshot(&driver, req.into_inner())
        })
        .await
    }

    async fn list_snapshots(
        &self,
        req: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        let driver = self.driver.clone();
        blocking("ListSnapshots", move || {
            list_snapshots(&driver, req.into_inner())
        })
        .await
    }

    async fn controller_expand_volume(
        &self,
        req: Request<ControllerExpandVolumeRequest>,
    ) -> Result<Response<ControllerExpandVolumeResponse>, Status> {
        let driver = self.driver.clone();
        blocking("ControllerExpandVolume", move || {
            expand_volume(&driver, req.into_inner())
        })
        .await
    }

    async fn controller_modify_volume(
        &self,
        req: Request<ControllerModifyVolumeRequest>,
    ) -> Result<Response<ControllerModifyVolumeResponse>, Status> {
        let driver = self.driver.clone();
        let req = req.into_inner();
        if let Some(client) = driver.kube.clone()
            && !modify::is_here(&driver, &req).await?
        {
            return crate::qos::forward::record_on_persistent_volume(
                &client.0,
                &req.volume_id,
                &req.mutable_parameters,
            )
            .await
            .map(|()| Response::new(ControllerModifyVolumeResponse {}));
        }
        blocking("ControllerModifyVolume", move || {
            modify_volume(&driver, req)
        })
        .await
    }

    async fn controller_get_capabilities(
        &self,
        _: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        let mut capabilities = vec![
            rpc::Type::CreateDeleteVolume,
            rpc::Type::ListVolumes,
            rpc::Type::GetCapacity,
            rpc::Type::SingleNodeMultiWriter,
            rpc::Type::CreateDeleteSnapshot,
            rpc::Type::ListSnapshots,
            rpc::Type::CloneVolume,
            rpc::Type::ModifyVolume,
        ];
        if self.driver.expansion == crate::config::Expansion::Controller {
            capabilities.push(rpc::Type::ExpandVolume);
        }
        Ok(Response::new(ControllerGetCapabilitiesResponse {
            capabilities: capabilities.into_iter().map(rpc_capability).collect(),
        }))
    }
}
