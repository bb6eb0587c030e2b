//! ControllerModifyVolume: new I/O limits for a volume. The limits are recorded with the volume
//! and the node's enforcer is woken, which puts them in force in the cgroups of the pods using
//! the volume within the second; the call does not wait for that (a pod may start later), and
//! `fastvirt_csi_volume_qos_limit` shows what is in force. A volume of another node (the cluster's
//! controller has no pools) has the change recorded on its PersistentVolume instead
//! ([`crate::qos::forward`]).

use crate::proto::*;
use crate::service::parameters::mutable_change;
use crate::service::request;
use crate::service::{Driver, backend_status};
use tonic::Status;

/// Whether the request is for a volume of this process's pools, once its arguments are valid; a
/// controller with `--kube-api` records the limits of any other volume on its PersistentVolume.
pub(super) async fn is_here(
    driver: &Driver,
    req: &ControllerModifyVolumeRequest,
) -> Result<bool, Status> {
    request::required("volume_id", &req.volume_id)?;
    mutable_change(&req.mutable_parameters)?;
    let (driver, volume_id) = (driver.clone(), req.volume_id.clone());
    tokio::task::spawn_blocking(move || driver.volume(&volume_id).is_ok())
        .await
        .map_err(|e| Status::internal(format!("looking the volume up failed: {e}")))
}

pub(super) fn modify_volume(
    driver: &Driver,
    req: ControllerModifyVolumeRequest,
) -> Result<ControllerModifyVolumeResponse, Status> {
    request::required("volume_id", &req.volume_id)?;
    // Arguments before existence: a bad parameter is INVALID_ARGUMENT (external-resizer marks the
    // PVC's modification Infeasible) whether or not the volume is here.
    let change = mutable_change(&req.mutable_parameters)?;
    let (_guard, _, backend, record) = driver.lock_volume(&req.volume_id)?;
    let before = record.qos.unwrap_or_default();
    let after = change.applied_to(before);
    if after != before {
        backend.set_qos(&record, after).map_err(backend_status)?;
        tracing::info!(volume = %record.id, name = %record.name, from = %before, to = %after, "I/O limits changed");
        driver.qos.wake();
    }
    Ok(ControllerModifyVolumeResponse {})
}
