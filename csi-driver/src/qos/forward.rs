//! ControllerModifyVolume for a volume this process does not have (the cluster's controller has
//! no pools): the change is recorded on the volume's PersistentVolume, where the node plugin
//! that has the volume finds it ([`super::pv_watch`]). See [`super::intent`].

use super::intent::{
    INTENT_ANNOTATION, NODE_LABEL, merged_intent, node_label_value, volume_handle, volume_node,
};
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use std::collections::HashMap;
use tonic::Status;

/// The parameter external-resizer adds with `--extra-modify-metadata`.
const PV_NAME_PARAMETER: &str = "csi.storage.k8s.io/pv/name";

fn api_status(context: &str, error: kube::Error) -> Status {
    let message = format!("{context}: {error}");
    match &error {
        kube::Error::Api(status) if status.code == 409 => Status::aborted(message),
        kube::Error::Api(status) if status.code == 403 => Status::permission_denied(message),
        kube::Error::Api(_) => Status::internal(message),
        _ => Status::unavailable(message),
    }
}

/// The PersistentVolume of `volume_id`: by the name the resizer passes, else by a search.
async fn find(
    api: &Api<PersistentVolume>,
    volume_id: &str,
    parameters: &HashMap<String, String>,
) -> Result<Option<PersistentVolume>, Status> {
    let found = match parameters.get(PV_NAME_PARAMETER) {
        Some(name) => api
            .get_opt(name)
            .await
            .map_err(|e| api_status("reading the PersistentVolume", e))?,
        None => api
            .list(&ListParams::default())
            .await
            .map_err(|e| api_status("listing PersistentVolumes", e))?
            .items
            .into_iter()
            .find(|pv| volume_handle(pv) == Some(volume_id)),
    };
    Ok(found.filter(|pv| volume_handle(pv) == Some(volume_id)))
}

/// Records validated `parameters` for `volume_id` on its PersistentVolume.
pub async fn record_on_persistent_volume(
    client: &kube::Client,
    volume_id: &str,
    parameters: &HashMap<String, String>,
) -> Result<(), Status> {
    let api: Api<PersistentVolume> = Api::all(client.clone());
    let pv = find(&api, volume_id, parameters).await?.ok_or_else(|| {
        Status::not_found(format!(
            "no PersistentVolume of {} has volume {volume_id}",
            crate::DRIVER_NAME
        ))
    })?;
    let node = volume_node(&pv).ok_or_else(|| {
        Status::failed_precondition(format!(
            "PersistentVolume {} names no {} in its node affinity",
            pv.name_any(),
            crate::TOPOLOGY_NODE_KEY
        ))
    })?;
    let existing = pv.annotations().get(INTENT_ANNOTATION).map(String::as_str);
    let intent = merged_intent(existing, parameters);
    let label = node_label_value(node);
    if existing == Some(intent.as_str()) && pv.labels().get(NODE_LABEL) == Some(&label) {
        return Ok(());
    }
    // The resourceVersion makes it a compare-and-swap: a concurrent change is ABORTED, and the
    // resizer retries with the annotation as it is then.
    let patch = serde_json::json!({
        "metadata": {
            "resourceVersion": pv.resource_version(),
            "labels": {NODE_LABEL: label},
            "annotations": {INTENT_ANNOTATION: intent},
        }
    });
    api.patch(
        &pv.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|e| api_status("recording the limits on the PersistentVolume", e))?;
    tracing::info!(volume = volume_id, persistentvolume = %pv.name_any(), node, %intent, "I/O limits recorded for the volume's node");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(name: &str, handle: &str, node: &str) -> PersistentVolume {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "csi": {"driver": crate::DRIVER_NAME, "volumeHandle": handle},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": crate::TOPOLOGY_NODE_KEY, "operator": "In", "values": [node]}
                ]}]}}
            }
        }))
        .unwrap()
    }

    fn parameters(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[tokio::test]
    async fn limits_are_recorded_on_the_volumes_persistent_volume_for_its_node() {
        let client = kube_fake_client::ClientBuilder::new()
            .with_object(pv("pvc-1", "fv.default.aaaa", "node-b"))
            .with_object(pv("pvc-2", "fv.default.bbbb", "node-c"))
            .build()
            .await
            .unwrap();
        let api: Api<PersistentVolume> = Api::all(client.clone());
        // By the name the resizer passes.
        record_on_persistent_volume(
            &client,
            "fv.default.aaaa",
            &parameters(&[("readIOPS", "200"), (PV_NAME_PARAMETER, "pvc-1")]),
        )
        .await
        .unwrap();
        // Without it, by a search; a later request overrides key by key.
        record_on_persistent_volume(
            &client,
            "fv.default.aaaa",
            &parameters(&[("writeBPS", "1048576")]),
        )
        .await
        .unwrap();
        let recorded = api.get("pvc-1").await.unwrap();
        assert_eq!(
            recorded
                .annotations()
                .get(INTENT_ANNOTATION)
                .map(String::as_str),
            Some(r#"{"readIOPS":"200","writeBPS":"1048576"}"#)
        );
        assert_eq!(
            recorded.labels().get(NODE_LABEL).map(String::as_str),
            Some("node-b")
        );
        assert!(api.get("pvc-2").await.unwrap().annotations().is_empty());

        // A name that is another volume's PV, or no PV at all: NOT_FOUND.
        for params in [
            parameters(&[("readIOPS", "1"), (PV_NAME_PARAMETER, "pvc-2")]),
            parameters(&[("readIOPS", "1")]),
        ] {
            let status = record_on_persistent_volume(&client, "fv.default.cccc", &params)
                .await
                .unwrap_err();
            assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
        }
    }
}
