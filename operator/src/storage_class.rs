//! The StorageClass a BlockPool offers.

use crate::pool_objects::{class_name, owned_metadata};
use fastvirt_api::BlockPool;
use fastvirt_api::block_pool::{FsType, ReclaimPolicy, VolumeBindingMode};
use k8s_openapi::api::core::v1::{TopologySelectorLabelRequirement, TopologySelectorTerm};
use k8s_openapi::api::storage::v1::StorageClass;
use std::collections::BTreeMap;

/// The driver's topology key, one value per node.
pub const TOPOLOGY_NODE_KEY: &str = "topology.block.fastvirt.io/node";
/// StorageClass parameters the operator sets itself.
const RESERVED_PARAMETERS: &[&str] = &["pool", "thin", "csi.storage.k8s.io/fstype"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    #[error("BlockPool has no name")]
    Unnamed,
    #[error("storageClass.parameters.{0} is set by the operator from the pool; remove it")]
    ReservedParameter(String),
    #[error("storageClass.mountOptions apply to filesystem volumes, but the class is blockOnly")]
    MountOptionsOnBlockOnly,
}

/// Builds the StorageClass for `pool`, owned by it so that deleting the pool removes the class.
pub fn build(pool: &BlockPool) -> Result<StorageClass, BuildError> {
    let pool_name = pool.metadata.name.clone().ok_or(BuildError::Unnamed)?;
    let template = &pool.spec.storage_class;
    if let Some(key) = template
        .parameters
        .keys()
        .find(|k| RESERVED_PARAMETERS.contains(&k.as_str()))
    {
        return Err(BuildError::ReservedParameter(key.clone()));
    }
    if template.block_only && !template.mount_options.is_empty() {
        return Err(BuildError::MountOptionsOnBlockOnly);
    }
    let mut parameters = template.parameters.clone();
    parameters.insert("pool".into(), pool_name.clone());
    parameters.insert(
        "thin".into(),
        (!pool.spec.backend.file.preallocate).to_string(),
    );
    if let Some(fs) = template.fs_type {
        let fs = match fs {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
        };
        parameters.insert("csi.storage.k8s.io/fstype".into(), fs.into());
    }
    let mut annotations = BTreeMap::new();
    if template.default_class {
        annotations.insert(
            "storageclass.kubernetes.io/is-default-class".into(),
            "true".into(),
        );
    }
    Ok(StorageClass {
        metadata: owned_metadata(pool, class_name(pool), annotations),
        provisioner: crate::PROVISIONER.into(),
        parameters: Some(parameters),
        reclaim_policy: Some(match template.reclaim_policy {
            ReclaimPolicy::Delete => "Delete".into(),
            ReclaimPolicy::Retain => "Retain".into(),
        }),
        volume_binding_mode: Some(match template.volume_binding_mode {
            VolumeBindingMode::WaitForFirstConsumer => "WaitForFirstConsumer".into(),
            VolumeBindingMode::Immediate => "Immediate".into(),
        }),
        allow_volume_expansion: Some(template.allow_volume_expansion),
        mount_options: (!template.mount_options.is_empty()).then(|| template.mount_options.clone()),
        allowed_topologies: allowed_topologies(&pool.spec.node_selector),
    })
}

/// A node selector can become allowed topologies only where it names nodes: the driver's only
/// topology key is the node name. Other labels are enforced by the node plugins' pool config.
fn allowed_topologies(selector: &BTreeMap<String, String>) -> Option<Vec<TopologySelectorTerm>> {
    let node = selector.get("kubernetes.io/hostname")?;
    Some(vec![TopologySelectorTerm {
        match_label_expressions: Some(vec![TopologySelectorLabelRequirement {
            key: TOPOLOGY_NODE_KEY.into(),
            values: vec![node.clone()],
        }]),
    }])
}

/// StorageClass fields the API server refuses to change: when any differs, the class must be
/// replaced (deleted and created again; existing volumes keep working, they only name it).
pub fn needs_replacement(existing: &StorageClass, desired: &StorageClass) -> Option<&'static str> {
    if existing.provisioner != desired.provisioner {
        return Some("provisioner");
    }
    if existing.parameters.clone().unwrap_or_default()
        != desired.parameters.clone().unwrap_or_default()
    {
        return Some("parameters");
    }
    if existing.reclaim_policy.as_deref().unwrap_or("Delete")
        != desired.reclaim_policy.as_deref().unwrap_or("Delete")
    {
        return Some("reclaimPolicy");
    }
    if existing
        .volume_binding_mode
        .as_deref()
        .unwrap_or("Immediate")
        != desired
            .volume_binding_mode
            .as_deref()
            .unwrap_or("Immediate")
    {
        return Some("volumeBindingMode");
    }
    if existing.allowed_topologies != desired.allowed_topologies {
        return Some("allowedTopologies");
    }
    None
}
