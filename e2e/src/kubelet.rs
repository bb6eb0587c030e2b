//! The calls kubelet and external-provisioner make for one volume, as plain functions: block
//! volumes by default, a filesystem through the `_as` variants.

use fastvirt_csi::local::Clients;
use fastvirt_csi::proto::volume_capability::access_mode::Mode;
use fastvirt_csi::proto::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use fastvirt_csi::proto::*;
use std::path::Path;
use tonic::Status;

pub fn block_capability() -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
}

/// A single-writer filesystem volume of `fs_type`.
pub fn mount_capability(fs_type: &str) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs_type.to_owned(),
            ..Default::default()
        })),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
}

/// Creates a preallocated block volume and returns its ID.
pub async fn create(clients: &mut Clients, name: &str, size_bytes: u64) -> Result<String, Status> {
    create_with(clients, name, size_bytes, &[], None).await
}

/// Creates a block volume with StorageClass parameters and an optional content source.
pub async fn create_with(
    clients: &mut Clients,
    name: &str,
    size_bytes: u64,
    parameters: &[(&str, &str)],
    source: Option<volume_content_source::Type>,
) -> Result<String, Status> {
    create_as(
        clients,
        name,
        size_bytes,
        parameters,
        source,
        block_capability(),
    )
    .await
}

/// Creates a volume for `capability`.
pub async fn create_as(
    clients: &mut Clients,
    name: &str,
    size_bytes: u64,
    parameters: &[(&str, &str)],
    source: Option<volume_content_source::Type>,
    capability: VolumeCapability,
) -> Result<String, Status> {
    let response = clients
        .controller
        .create_volume(CreateVolumeRequest {
            name: name.to_owned(),
            capacity_range: Some(CapacityRange {
                required_bytes: size_bytes as i64,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![capability],
            parameters: parameters
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            volume_content_source: source.map(|t| VolumeContentSource { r#type: Some(t) }),
            ..Default::default()
        })
        .await?
        .into_inner();
    response
        .volume
        .map(|v| v.volume_id)
        .ok_or_else(|| Status::internal("CreateVolume returned no volume"))
}

/// Takes a snapshot and returns its ID.
pub async fn snapshot(
    clients: &mut Clients,
    name: &str,
    volume_id: &str,
) -> Result<String, Status> {
    let request = CreateSnapshotRequest {
        name: name.to_owned(),
        source_volume_id: volume_id.to_owned(),
        ..Default::default()
    };
    let response = clients
        .controller
        .create_snapshot(request)
        .await?
        .into_inner();
    response
        .snapshot
        .map(|s| s.snapshot_id)
        .ok_or_else(|| Status::internal("CreateSnapshot returned no snapshot"))
}

pub async fn delete_snapshot(clients: &mut Clients, id: &str) -> Result<(), Status> {
    let request = DeleteSnapshotRequest {
        snapshot_id: id.to_owned(),
        secrets: Default::default(),
    };
    clients.controller.delete_snapshot(request).await.map(drop)
}

pub async fn stage(clients: &mut Clients, id: &str, staging: &Path) -> Result<(), Status> {
    stage_as(clients, id, staging, block_capability()).await
}

pub async fn stage_as(
    clients: &mut Clients,
    id: &str,
    staging: &Path,
    capability: VolumeCapability,
) -> Result<(), Status> {
    let request = NodeStageVolumeRequest {
        volume_id: id.to_owned(),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(capability),
        ..Default::default()
    };
    clients.node.node_stage_volume(request).await.map(drop)
}

pub async fn publish(
    clients: &mut Clients,
    id: &str,
    staging: &Path,
    target: &Path,
) -> Result<(), Status> {
    publish_as(clients, id, staging, target, block_capability()).await
}

pub async fn publish_as(
    clients: &mut Clients,
    id: &str,
    staging: &Path,
    target: &Path,
    capability: VolumeCapability,
) -> Result<(), Status> {
    let request = NodePublishVolumeRequest {
        volume_id: id.to_owned(),
        staging_target_path: staging.display().to_string(),
        target_path: target.display().to_string(),
        volume_capability: Some(capability),
        ..Default::default()
    };
    clients.node.node_publish_volume(request).await.map(drop)
}

pub async fn unpublish(clients: &mut Clients, id: &str, target: &Path) -> Result<(), Status> {
    let request = NodeUnpublishVolumeRequest {
        volume_id: id.to_owned(),
        target_path: target.display().to_string(),
    };
    clients.node.node_unpublish_volume(request).await.map(drop)
}

pub async fn unstage(clients: &mut Clients, id: &str, staging: &Path) -> Result<(), Status> {
    let request = NodeUnstageVolumeRequest {
        volume_id: id.to_owned(),
        staging_target_path: staging.display().to_string(),
    };
    clients.node.node_unstage_volume(request).await.map(drop)
}

pub async fn delete(clients: &mut Clients, id: &str) -> Result<(), Status> {
    clients
        .controller
        .delete_volume(DeleteVolumeRequest {
            volume_id: id.to_owned(),
            secrets: Default::default(),
        })
        .await
        .map(drop)
}
