//! `BlockPool`: where a node keeps volumes, and the StorageClass that offers them.

use crate::condition::Condition;
use crate::volume_layout::VolumeLayout;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A pool of fast node-local volumes and the way it is offered to users. The operator renders the
/// StorageClass (and, where the APIs exist, a VolumeSnapshotClass and a CDI StorageProfile hint) and
/// the pool configuration the CSI node plugins read.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "fastvirt.io",
    version = "v1alpha1",
    kind = "BlockPool",
    shortname = "bp",
    status = "BlockPoolStatus",
    printcolumn = r#"{"name":"StorageClass","type":"string","jsonPath":".status.storageClassName"}"#,
    printcolumn = r#"{"name":"Nodes","type":"integer","jsonPath":".status.matchedNodes"}"#,
    printcolumn = r#"{"name":"Capacity","type":"integer","format":"int64","jsonPath":".status.capacityBytes"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
// Volume IDs are `fv.<pool>.<key>` and the node plugins refuse other pool names, so a dot here
// would stop every node plugin that reads the pool.
#[kube(validation = Rule::new("self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("a pool name is a DNS label: at most 63 lowercase letters, digits and '-', no dots"))]
#[serde(rename_all = "camelCase")]
pub struct BlockPoolSpec {
    /// Where volumes live on each node.
    pub backend: PoolBackend,
    /// Labels a node must carry to have this pool; empty selects every node.
    #[serde(default)]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 1024}))]
    pub node_selector: BTreeMap<String, String>,
    /// How much the pool may promise, in percent of its usable size: the capacities of its volumes
    /// and the sizes of its snapshots together, since thin volumes, reflinked clones and snapshots
    /// take space only as they are written. 100 (the default) never promises more than the pool
    /// can hold; 300 lets it promise three times that. CreateVolume and expansion beyond it fail
    /// with RESOURCE_EXHAUSTED, and the capacity the pool reports stops at it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub overcommit_percent: Option<u32>,
    /// The StorageClass that offers this pool.
    #[serde(default)]
    pub storage_class: StorageClassTemplate,
    /// A VolumeSnapshotClass for this pool's volumes; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_class: Option<SnapshotClassTemplate>,
    /// Publish a CDI StorageProfile hint (block volume mode, ReadWriteOnce, csi-clone) so KubeVirt's
    /// DataVolumes use the pool well without per-VM settings.
    #[serde(default = "default_true")]
    pub cdi_storage_profile: bool,
    /// Warn when a node's pool has less than this left for new volumes (a quantity such as
    /// `20Gi`), as its CSIStorageCapacity reports: the pool gets a `LowSpace` condition naming
    /// the nodes, and an Event when it starts. A thin or reflink pool that fills up pauses the
    /// VMs writing to it. Unset: no warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub low_space_threshold: Option<String>,
}

fn default_true() -> bool {
    true
}

/// The storage behind a pool.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolBackend {
    /// Volumes as files in a directory on each node, attached as loop devices with direct I/O.
    pub file: FileBackend,
}

/// The file backend.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.path.startsWith('/') && !self.path.contains('..')").message("path must be absolute and must not contain '..'"))]
pub struct FileBackend {
    /// Directory on each node that holds the pool; put it on XFS (reflink) or btrfs for instant
    /// snapshots and clones.
    pub path: String,
    /// Preallocate volume files (guaranteed space, no allocation on first write); `false` makes
    /// volumes sparse.
    #[serde(default = "default_true")]
    pub preallocate: bool,
}

/// What happens to a volume's data when its claim is deleted.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum ReclaimPolicy {
    #[default]
    Delete,
    Retain,
}

/// When a volume is provisioned.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, schemars::JsonSchema,
)]
pub enum VolumeBindingMode {
    /// When a pod using the claim is scheduled: the only sensible mode for node-local volumes.
    #[default]
    WaitForFirstConsumer,
    Immediate,
}

/// Filesystems for filesystem-mode volumes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FsType {
    Ext4,
    Xfs,
}

/// The StorageClass the operator creates for a pool.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.blockOnly) && self.blockOnly && has(self.fsType))").message("blockOnly and fsType exclude each other"))]
#[x_kube(validation = Rule::new("!(has(self.layout) && self.layout == 'disk-image' && has(self.blockOnly) && self.blockOnly)").message("the disk-image layout makes Filesystem volumes only, so it excludes blockOnly"))]
#[x_kube(validation = Rule::new("!(has(self.layout) && self.layout == 'disk-image' && has(self.fsType))").message("a disk-image volume has no filesystem of its own (its image lies on the pool's), so fsType does not apply"))]
pub struct StorageClassTemplate {
    /// Name of the StorageClass; the pool's name when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Make it the cluster's default StorageClass.
    #[serde(default)]
    pub default_class: bool,
    /// Make it KubeVirt's default class for VM disks
    /// (`storageclass.kubevirt.io/is-default-virt-class`), which CDI and KubeVirt prefer over
    /// the cluster default for DataVolumes and VM disks.
    #[serde(default)]
    pub default_virt_class: bool,
    /// What happens to volumes when their claims are deleted.
    #[serde(default)]
    pub reclaim_policy: ReclaimPolicy,
    /// Allow growing volumes (online).
    #[serde(default = "default_true")]
    pub allow_volume_expansion: bool,
    /// When volumes are provisioned.
    #[serde(default)]
    pub volume_binding_mode: VolumeBindingMode,
    /// Filesystem of filesystem-mode volumes (ext4 when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_type: Option<FsType>,
    /// Offer raw block volumes only (VM disks).
    #[serde(default)]
    pub block_only: bool,
    /// How the class's volumes lie in the pool. `device` (the default): a file attached as a
    /// loop device, for Block volumes or a filesystem made on it. `disk-image`: Filesystem
    /// volumes only, each a directory holding one preallocated `disk.img` that KubeVirt's QEMU
    /// opens directly (no loop device, no second filesystem); the pool's filesystem needs project
    /// quotas (XFS, ext4 with `-o prjquota`) or btrfs quotas, which keep each directory within
    /// its capacity.
    #[serde(default, skip_serializing_if = "VolumeLayout::is_device")]
    pub layout: VolumeLayout,
    /// Mount options of filesystem volumes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 1024)))]
    pub mount_options: Vec<String>,
    /// Further StorageClass parameters for the driver: the I/O limits every volume of the class
    /// starts with (`readIOPS`, `writeIOPS`, `readBPS`, `writeBPS`; a VolumeAttributesClass
    /// overrides them). `pool`, `thin` and `fsType` are set by the operator from the pool; any
    /// other key makes the pool not Ready with a message instead of a class whose claims would
    /// stay Pending.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 1024}))]
    pub parameters: BTreeMap<String, String>,
}

/// What an absent `storageClass` means: the same as `storageClass: {}`, field by field (the CRD's
/// default for the whole object is generated from this, so the two cannot drift apart).
impl Default for StorageClassTemplate {
    fn default() -> Self {
        Self {
            name: None,
            default_class: false,
            default_virt_class: false,
            reclaim_policy: ReclaimPolicy::default(),
            allow_volume_expansion: default_true(),
            volume_binding_mode: VolumeBindingMode::default(),
            fs_type: None,
            block_only: false,
            layout: VolumeLayout::Device,
            mount_options: Vec::new(),
            parameters: BTreeMap::new(),
        }
    }
}

/// The VolumeSnapshotClass the operator creates for a pool.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotClassTemplate {
    /// Name of the VolumeSnapshotClass; the pool's name when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What happens to snapshot data when the VolumeSnapshot is deleted.
    #[serde(default)]
    pub deletion_policy: ReclaimPolicy,
    /// Make it the default class for this driver.
    #[serde(default)]
    pub default_class: bool,
}

/// What the operator observed and did for a pool.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlockPoolStatus {
    /// Ready (the StorageClass is in place) and Degraded conditions.
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub conditions: Vec<Condition>,
    /// The StorageClass that offers the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Nodes the node selector matches.
    #[serde(default)]
    #[schemars(range(min = 0, max = u32::MAX))]
    pub matched_nodes: u32,
    /// Free capacity summed over the driver's CSIStorageCapacity objects for this pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub capacity_bytes: Option<i64>,
    /// The `.metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
}

#[cfg(test)]
mod default_tests {
    use super::*;

    #[test]
    fn an_absent_storage_class_means_the_same_as_an_empty_one() {
        let empty: StorageClassTemplate = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, StorageClassTemplate::default());
        assert!(StorageClassTemplate::default().allow_volume_expansion);
    }
}
