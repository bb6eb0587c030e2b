//! The Controller service: creating, listing and deleting volumes in this node's pools.

use super::request::{self, AccessType};
use super::{Driver, backend_status, blocking, parse_volume_id};
use crate::backend::{CreateSpec, VolumeRecord};
use crate::capacity::{self, CapacityError};
use crate::filesystem::FsType;
use crate::ids::{PoolName, VolumeId};
use crate::pagination::{self, PageError};
use crate::proto::controller_server::Controller;
use crate::proto::controller_service_capability::{self, rpc};
use crate::proto::*;
use std::collections::HashMap;
use tonic::{Request, Response, Status};

/// StorageClass parameter that picks the pool.
pub const PARAM_POOL: &str = "pool";
/// StorageClass parameter that makes volumes sparse instead of preallocated.
pub const PARAM_THIN: &str = "thin";
/// mkfs.xfs refuses smaller devices.
const XFS_MIN_SIZE: u64 = 300 << 20;
/// Parameters Kubernetes sidecars add on their own; they carry no meaning for the driver.
const SIDECAR_PARAM_PREFIX: &str = "csi.storage.k8s.io/";

#[derive(Debug, Clone)]
pub struct ControllerService {
    driver: Driver,
}

impl ControllerService {
    pub fn new(driver: Driver) -> Self {
        Self { driver }
    }
}

/// Validated StorageClass parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeParameters {
    pub pool: PoolName,
    pub thin: bool,
}

/// Parses StorageClass parameters; unknown keys are refused so a typo never goes unnoticed.
pub fn parse_parameters(
    driver: &Driver,
    parameters: &HashMap<String, String>,
) -> Result<VolumeParameters, Status> {
    let mut pool = None;
    let mut thin = false;
    for (key, value) in parameters {
        match key.as_str() {
            PARAM_POOL => {
                pool = Some(
                    PoolName::new(value)
                        .map_err(|e| Status::invalid_argument(format!("parameter pool: {e}")))?,
                )
            }
            PARAM_THIN => {
                thin = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    other => {
                        return Err(Status::invalid_argument(format!(
                            "parameter thin must be \"true\" or \"false\", got {:?}",
                            crate::ids::truncate_for_message(other)
                        )));
                    }
                }
            }
            key if key.starts_with(SIDECAR_PARAM_PREFIX) => {}
            other => {
                return Err(Status::invalid_argument(format!(
                    "unknown parameter {:?}; supported: pool, thin",
                    crate::ids::truncate_for_message(other)
                )));
            }
        }
    }
    let pool = match pool {
        Some(pool) => pool,
        None => driver.default_pool().cloned().ok_or_else(|| {
            Status::invalid_argument(
                "parameter pool is required: this node has several pools and none is named default",
            )
        })?,
    };
    Ok(VolumeParameters { pool, thin })
}

fn capacity_status(error: CapacityError) -> Status {
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

fn csi_volume(driver: &Driver, record: &VolumeRecord, pool: &PoolName) -> Volume {
    Volume {
        capacity_bytes: i64::try_from(record.capacity_bytes).unwrap_or(i64::MAX),
        volume_id: record.id.clone(),
        volume_context: HashMap::from([
            (PARAM_POOL.to_owned(), pool.to_string()),
            (PARAM_THIN.to_owned(), record.thin.to_string()),
        ]),
        content_source: None,
        accessible_topology: vec![driver.topology()],
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
    let capabilities = request::capabilities(&req.volume_capabilities)?;
    let params = parse_parameters(driver, &req.parameters)?;
    if req.volume_content_source.is_some() {
        return Err(Status::invalid_argument(
            "creating a volume from a snapshot or another volume is not supported yet",
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
    let backend = driver.backend(&params.pool).ok_or_else(|| {
        Status::invalid_argument(format!(
            "pool {} is not configured on node {}",
            params.pool, driver.node_id
        ))
    })?;
    let (required, limit) = req
        .capacity_range
        .map(|r| (r.required_bytes, r.limit_bytes))
        .unwrap_or((0, 0));
    if required < 0 || limit < 0 || (limit > 0 && required > limit) {
        return Err(capacity_status(
            capacity::resolve(required, limit, u64::MAX).unwrap_err(),
        ));
    }
    let id = VolumeId::for_name(&params.pool, &req.name)
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let _guard = driver.lock(&id.to_string())?;
    if let Some(existing) = backend.lookup(&id).map_err(backend_status)? {
        let compatible = existing.name == req.name
            && existing.thin == params.thin
            && capacity::satisfies(existing.capacity_bytes, required, limit);
        if !compatible {
            return Err(Status::already_exists(format!(
                "volume {} already exists with {} bytes, thin={}, which does not match this request",
                req.name, existing.capacity_bytes, existing.thin
            )));
        }
        return Ok(CreateVolumeResponse {
            volume: Some(csi_volume(driver, &existing, &params.pool)),
        });
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
    if needs_xfs && size < XFS_MIN_SIZE {
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
    };
    let record = backend.create(&spec).map_err(backend_status)?;
    tracing::info!(volume = %record.id, name = %record.name, bytes = record.capacity_bytes, thin = record.thin, "created");
    Ok(CreateVolumeResponse {
        volume: Some(csi_volume(driver, &record, &params.pool)),
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
    if let Err(status) = request::capabilities(&req.volume_capabilities) {
        return unconfirmed(status.message().to_owned());
    }
    if !req.parameters.is_empty() {
        match parse_parameters(driver, &req.parameters) {
            Ok(params) if params.pool == *id.pool() && params.thin == record.thin => {}
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
    for (pool, backend) in driver.pools.iter() {
        for record in backend.list().map_err(backend_status)? {
            volumes.push(csi_volume(driver, &record, pool));
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
    .map_err(|e| match e {
        PageError::NegativeMaxEntries(_) => Status::invalid_argument(e.to_string()),
        PageError::BadToken(_) => Status::aborted(e.to_string()),
    })?;
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
    let Some(backend) = driver.backend(&params.pool) else {
        return Ok(none);
    };
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

    async fn controller_get_capabilities(
        &self,
        _: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        Ok(Response::new(ControllerGetCapabilitiesResponse {
            capabilities: [
                rpc::Type::CreateDeleteVolume,
                rpc::Type::ListVolumes,
                rpc::Type::GetCapacity,
                rpc::Type::SingleNodeMultiWriter,
            ]
            .into_iter()
            .map(rpc_capability)
            .collect(),
        }))
    }
}
