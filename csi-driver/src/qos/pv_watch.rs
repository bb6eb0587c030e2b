//! The node plugin's side of [`super::intent`]: it watches the PersistentVolumes labelled with
//! its node and applies each one's recorded limits to the volume's record, then wakes the
//! enforcer. Applying is idempotent, so the watch's re-lists (on start and after a dropped
//! connection) only re-confirm what is there.

use super::intent::{
    INTENT_ANNOTATION, NODE_LABEL, intent_change, node_label_value, volume_handle,
};
use crate::service::Driver;
use futures::StreamExt;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use std::future::Future;
use std::time::Duration;

/// Applies one PersistentVolume's recorded limits; `Ok(true)` when the record changed.
pub fn apply(driver: &Driver, pv: &PersistentVolume) -> Result<bool, String> {
    let (Some(volume_id), Some(annotation)) =
        (volume_handle(pv), pv.annotations().get(INTENT_ANNOTATION))
    else {
        return Ok(false);
    };
    let change = intent_change(annotation)?;
    // Another operation may hold the volume for a moment (a publish); wait for it, briefly.
    let mut attempts = 0;
    let (_guard, _, backend, record) = loop {
        match driver.lock_volume(volume_id) {
            Ok(locked) => break locked,
            Err(status) if status.code() == tonic::Code::Aborted && attempts < 50 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(status) if status.code() == tonic::Code::NotFound => return Ok(false),
            Err(status) => return Err(status.message().to_owned()),
        }
    };
    let before = record.qos.unwrap_or_default();
    let after = change.applied_to(before);
    if after == before {
        return Ok(false);
    }
    backend.set_qos(&record, after).map_err(|e| e.to_string())?;
    tracing::info!(volume = volume_id, persistentvolume = %pv.name_any(), from = %before, to = %after, "I/O limits changed");
    driver.qos.wake();
    Ok(true)
}

/// Watches this node's labelled PersistentVolumes until `shutdown`.
pub async fn follow(client: kube::Client, driver: Driver, shutdown: impl Future<Output = ()>) {
    let api: Api<PersistentVolume> = Api::all(client);
    let selector = format!("{NODE_LABEL}={}", node_label_value(&driver.node_id));
    let stream = watcher(api, watcher::Config::default().labels(&selector))
        .default_backoff()
        .applied_objects();
    tokio::pin!(stream);
    tokio::pin!(shutdown);
    loop {
        let pv = tokio::select! {
            () = &mut shutdown => return,
            next = stream.next() => next,
        };
        match pv {
            Some(Ok(pv)) => {
                let driver = driver.clone();
                let name = pv.name_any();
                match tokio::task::spawn_blocking(move || apply(&driver, &pv)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => {
                        tracing::warn!(persistentvolume = %name, %error, "cannot apply the recorded I/O limits")
                    }
                    Err(join) => {
                        tracing::warn!(persistentvolume = %name, error = %join, "applying the recorded I/O limits failed")
                    }
                }
            }
            Some(Err(error)) => tracing::warn!(%error, "watching PersistentVolumes"),
            None => return,
        }
    }
}
