//! Typed views of the other projects' resources the operator writes: the external-snapshotter's
//! VolumeSnapshotClass and CDI's StorageProfile (KubeVirt's are in `kubevirt::types`). Both are
//! optional APIs; the operator only touches them where discovery finds them served.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Implements `kube::Resource` for a cluster-scoped type with a `metadata` field.
macro_rules! cluster_resource {
    ($type:ty, $group:literal, $version:literal, $kind:literal, $plural:literal) => {
        impl kube::Resource for $type {
            type DynamicType = ();
            type Scope = kube::core::ClusterResourceScope;

            fn kind(_: &()) -> std::borrow::Cow<'_, str> {
                $kind.into()
            }
            fn group(_: &()) -> std::borrow::Cow<'_, str> {
                $group.into()
            }
            fn version(_: &()) -> std::borrow::Cow<'_, str> {
                $version.into()
            }
            fn plural(_: &()) -> std::borrow::Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &self.metadata
            }
            fn meta_mut(
                &mut self,
            ) -> &mut k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                &mut self.metadata
            }
        }
    };
}
pub(crate) use cluster_resource;

/// `snapshot.storage.k8s.io/v1` VolumeSnapshotClass (it has no spec: its fields are top-level).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSnapshotClass {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub driver: String,
    pub deletion_policy: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, String>,
}
cluster_resource!(
    VolumeSnapshotClass,
    "snapshot.storage.k8s.io",
    "v1",
    "VolumeSnapshotClass",
    "volumesnapshotclasses"
);

/// `cdi.kubevirt.io/v1beta1` StorageProfile: CDI creates one per StorageClass; the operator sets
/// the spec fields that tell CDI how to use the class best.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageProfile {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: StorageProfileSpec,
}
cluster_resource!(
    StorageProfile,
    "cdi.kubevirt.io",
    "v1beta1",
    "StorageProfile",
    "storageprofiles"
);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StorageProfileSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone_strategy: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claim_property_sets: Vec<ClaimPropertySet>,
    /// The VolumeSnapshotClass CDI uses for the class's snapshots (golden images, snapshot clones).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_class: Option<String>,
    /// How DataImportCrons keep golden images: `snapshot` (a VolumeSnapshot, restored by reflink)
    /// or `pvc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_import_cron_source_format: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimPropertySet {
    pub access_modes: Vec<String>,
    pub volume_mode: String,
}
