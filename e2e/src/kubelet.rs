//! The calls kubelet and external-provisioner make for one block volume, as plain functions.

use fastvirt_csi::local::Clients;
use fastvirt_csi::proto::volume_capability::access_mode::Mode;
use fastvirt_csi::proto::volume_capability::{AccessMode, AccessType, BlockVolume};
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

/// Creates a preallocated block volume and returns its ID.
pub async fn create(clients: &mut Clients, name: &str, size_bytes: u64) -> Result<String, Status> {
    let response = clients
        .controller
        .create_volume(CreateVolumeRequest {
            name: name.to_owned(),
            capacity_range: Some(CapacityRange {
                required_bytes: size_bytes as i64,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![block_capability()],
            ..Default::default()
        })
        .await?
        .into_inner();
    response
        .volume
        .map(|v| v.volume_id)
        .ok_or_else(|| Status::internal("CreateVolume returned no volume"))
}

pub async fn stage(clients: &mut Clients, id: &str, staging: &Path) -> Result<(), Status> {
    let request = NodeStageVolumeRequest {
        volume_id: id.to_owned(),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(block_capability()),
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
    let request = NodePublishVolumeRequest {
        volume_id: id.to_owned(),
        staging_target_path: staging.display().to_string(),
        target_path: target.display().to_string(),
        volume_capability: Some(block_capability()),
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
