//! Shared set-up of the reconcile tests: an in-memory API server seeded with objects, and
//! builders of the objects the tests need.
#![allow(dead_code)]

use fastvirt_api::{BlockPool, Condition, NodeTuningProfile, TunedNode, TuningSummary};
use fastvirt_operator::context::{Context, OptionalApis, Settings};
use fastvirt_operator::foreign::{StorageProfile, VolumeSnapshotClass};
use fastvirt_operator::kubevirt::types::{ClusterInstancetype, ClusterPreference};
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::ListParams;
use serde::Serialize;
use serde_json::Value;
use std::sync::Arc;

pub const NAMESPACE: &str = "fastvirt-system";

/// A JSON object for the fake API server. Custom resources get an empty status so the server
/// treats `status` as a subresource, as the CRDs declare.
pub fn object(resource: impl Serialize) -> Value {
    let mut value = serde_json::to_value(resource).unwrap();
    let api_version = value["apiVersion"].as_str().unwrap_or_default().to_owned();
    if api_version.starts_with("fastvirt.io/") && value.get("status").is_none_or(Value::is_null) {
        value["status"] = serde_json::json!({});
    }
    value
}

pub async fn context(objects: Vec<Value>, snapshots: bool, cdi: bool) -> Arc<Context> {
    let ctx = context_with_kubevirt(objects, snapshots, cdi).await;
    ctx.apis.set_instancetypes(false);
    ctx
}

/// [`context`] where KubeVirt's instancetype API is served too.
pub async fn context_with_kubevirt(
    objects: Vec<Value>,
    snapshots: bool,
    cdi: bool,
) -> Arc<Context> {
    let builder = kube_fake_client::ClientBuilder::new()
        .with_resource::<BlockPool>()
        .with_resource::<NodeTuningProfile>()
        .with_resource::<TunedNode>()
        .with_resource::<TuningSummary>()
        .with_resource::<VolumeSnapshotClass>()
        .with_resource::<StorageProfile>()
        .with_resource::<ClusterInstancetype>()
        .with_resource::<ClusterPreference>()
        .with_runtime_objects(objects);
    let client = fastvirt_test_support::client(
        builder,
        &[
            "blockpools",
            "nodetuningprofiles",
            "tunednodes",
            "tuningsummaries",
            "volumesnapshotclasses",
            "storageprofiles",
            "virtualmachineclusterinstancetypes",
            "virtualmachineclusterpreferences",
        ],
    )
    .await;
    let settings = Settings {
        namespace: NAMESPACE.into(),
        pool_config_map: "fastvirt-pools".into(),
        node_daemonset: Some("fastvirt-node".into()),
        pool_host_dirs: Vec::new(),
    };
    let apis = OptionalApis::new(snapshots, cdi);
    apis.set_instancetypes(true);
    Arc::new(Context::new(client, settings, apis, "test".into()))
}

/// A BlockPool named `name` on `path`, with `extra` YAML lines appended to its spec.
pub fn pool_yaml(name: &str, path: &str, extra: &str) -> BlockPool {
    let mut spec =
        format!("backend: {{file: {{path: {path}}}}}\nsnapshotClass: {{deletionPolicy: Delete}}\n");
    if !extra.is_empty() {
        spec.push_str(extra);
        spec.push('\n');
    }
    let spec: serde_yaml::Value = serde_yaml::from_str(&spec).unwrap();
    let document = serde_json::json!({
        "apiVersion": "fastvirt.io/v1alpha1",
        "kind": "BlockPool",
        "metadata": {"name": name, "uid": format!("uid-{name}"), "generation": 1},
        "spec": spec,
    });
    serde_json::from_value(document).unwrap()
}

pub fn node(name: &str, labels: &[(&str, &str)]) -> k8s_openapi::api::core::v1::Node {
    let mut all: std::collections::BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    all.insert("kubernetes.io/hostname".into(), name.into());
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": all},
    }))
    .unwrap()
}

/// The StorageProfile CDI makes for a StorageClass, before the operator sets its hints.
pub fn cdi_profile(class: &str) -> Value {
    serde_json::json!({
        "apiVersion": "cdi.kubevirt.io/v1beta1",
        "kind": "StorageProfile",
        "metadata": {"name": class},
        "spec": {},
    })
}

pub fn daemonset() -> k8s_openapi::api::apps::v1::DaemonSet {
    serde_yaml::from_str(&format!(
        r#"
apiVersion: apps/v1
kind: DaemonSet
metadata: {{name: fastvirt-node, namespace: {NAMESPACE}}}
spec:
  selector: {{matchLabels: {{app: fastvirt-node}}}}
  template:
    metadata: {{labels: {{app: fastvirt-node}}}}
    spec:
      containers: [{{name: csi, image: fastvirt-csi}}]
"#
    ))
    .unwrap()
}

pub fn capacity(
    class: &str,
    node: &str,
    quantity: &str,
) -> k8s_openapi::api::storage::v1::CSIStorageCapacity {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "CSIStorageCapacity",
        "metadata": {"name": format!("csisc-{class}-{node}"), "namespace": NAMESPACE},
        "storageClassName": class,
        "capacity": quantity,
        "nodeTopology": {"matchLabels": {"topology.block.fastvirt.io/node": node}},
    }))
    .unwrap()
}

pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> &'a Condition {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {conditions:?}"))
}

/// Reasons of all Events recorded so far, oldest first.
pub async fn event_reasons(ctx: &Context) -> Vec<String> {
    let mut events = Api::<Event>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    events.sort_by_key(|e| {
        e.metadata
            .resource_version
            .clone()
            .map(|v| v.parse::<u64>().unwrap_or(0))
    });
    events.into_iter().filter_map(|e| e.reason).collect()
}

/// A new server holding everything `ctx`'s server holds, with the BlockPool `pool` marked for
/// deletion the way the API server marks an object that still has finalizers.
pub async fn reseed_with_deletion(ctx: &Context, pool: &str) -> Arc<Context> {
    async fn all<K>(ctx: &Context) -> Vec<Value>
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + Serialize
            + std::fmt::Debug,
    {
        Api::<K>::all(ctx.client.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|o| {
                let mut value = serde_json::to_value(o).unwrap();
                let metadata = value["metadata"].as_object_mut().unwrap();
                metadata.remove("resourceVersion");
                metadata.remove("managedFields");
                value
            })
            .collect()
    }
    let mut objects = Vec::new();
    for mut value in all::<BlockPool>(ctx).await {
        if value["metadata"]["name"] == pool {
            value["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z".into();
        }
        objects.push(object(value));
    }
    objects.extend(all::<k8s_openapi::api::storage::v1::StorageClass>(ctx).await);
    objects.extend(
        all::<VolumeSnapshotClass>(ctx)
            .await
            .into_iter()
            .map(|mut v| {
                v["apiVersion"] = "snapshot.storage.k8s.io/v1".into();
                v["kind"] = "VolumeSnapshotClass".into();
                v
            }),
    );
    objects.extend(all::<k8s_openapi::api::core::v1::ConfigMap>(ctx).await);
    objects.extend(all::<k8s_openapi::api::apps::v1::DaemonSet>(ctx).await);
    objects.extend(all::<k8s_openapi::api::core::v1::PersistentVolume>(ctx).await);
    objects.extend(all::<k8s_openapi::api::core::v1::Node>(ctx).await);
    context(objects, ctx.apis.snapshots(), ctx.apis.cdi()).await
}
