//! Typed views of KubeVirt's `instancetype.kubevirt.io/v1beta1` cluster instancetypes and
//! preferences: only the fields the operator sets. KubeVirt applies an instancetype's fields to
//! a VM that references it, and a preference's only where the VM leaves a field unset.

use crate::foreign::cluster_resource;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The API group both kinds are served in.
pub const GROUP: &str = "instancetype.kubevirt.io";
/// The version the operator writes.
pub const VERSION: &str = "v1beta1";

/// `VirtualMachineClusterInstancetype`: a VM size with the placement it needs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterInstancetype {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: InstancetypeSpec,
}
cluster_resource!(
    ClusterInstancetype,
    "instancetype.kubevirt.io",
    "v1beta1",
    "VirtualMachineClusterInstancetype",
    "virtualmachineclusterinstancetypes"
);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstancetypeSpec {
    pub cpu: CpuInstancetype,
    pub memory: MemoryInstancetype,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_threads_policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_threads: Option<IoThreads>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuInstancetype {
    pub guest: u32,
    #[serde(rename = "dedicatedCPUPlacement", default)]
    pub dedicated_cpu_placement: bool,
    #[serde(default)]
    pub isolate_emulator_thread: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub numa: Option<Numa>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Numa {
    /// An empty object turns passthrough on.
    pub guest_mapping_passthrough: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryInstancetype {
    pub guest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugepages: Option<Hugepages>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hugepages {
    pub page_size: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IoThreads {
    pub supplemental_pool_thread_count: u32,
}

/// `VirtualMachineClusterPreference`: defaults for the VM's devices.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterPreference {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PreferenceSpec,
}
cluster_resource!(
    ClusterPreference,
    "instancetype.kubevirt.io",
    "v1beta1",
    "VirtualMachineClusterPreference",
    "virtualmachineclusterpreferences"
);

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreferenceSpec {
    pub devices: DevicePreferences,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<VolumePreferences>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DevicePreferences {
    pub preferred_disk_bus: String,
    #[serde(rename = "preferredDiskIO")]
    pub preferred_disk_io: String,
    pub preferred_disk_cache: String,
    pub preferred_disk_block_size: BlockSize,
    pub preferred_block_multi_queue: bool,
    pub preferred_disk_dedicated_io_thread: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BlockSize {
    pub match_volume: MatchVolume,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MatchVolume {
    pub enabled: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumePreferences {
    pub preferred_storage_class_name: String,
}
