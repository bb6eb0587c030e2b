//! The StorageClass a BlockPool offers.

use crate::pool_objects::{class_name, owned_metadata};
use fastvirt_api::BlockPool;
use fastvirt_api::block_pool::{FsType, ReclaimPolicy, VolumeBindingMode};
use fastvirt_api::volume_qos::QosChange;
use k8s_openapi::api::storage::v1::StorageClass;
use std::collections::BTreeMap;

/// StorageClass parameters the operator sets itself.
const RESERVED_PARAMETERS: &[&str] = &["pool", "thin", "layout", "csi.storage.k8s.io/fstype"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BuildError {
    #[error("BlockPool has no name")]
    Unnamed,
    #[error("storageClass.parameters.{0} is set by the operator from the pool; remove it")]
    ReservedParameter(String),
    #[error(
        "storageClass.parameters.{0} is not a parameter fastvirt-csi accepts: it takes pool, thin, layout and fsType, which the operator sets from the pool, and the I/O limits readIOPS, writeIOPS, readBPS and writeBPS; a class with another key could never provision nor report capacity"
    )]
    UnknownParameter(String),
    #[error("storageClass.parameters: {0}")]
    BadLimit(String),
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
    // The driver refuses keys it does not know and limits it cannot apply (GetCapacity and
    // CreateVolume alike), and external-provisioner refuses unknown csi.storage.k8s.io/ keys: say
    // so here, not in Pending PVCs.
    let mut limits = QosChange::default();
    for (key, value) in &template.parameters {
        if !limits.take(key, value).map_err(BuildError::BadLimit)? {
            return Err(BuildError::UnknownParameter(key.clone()));
        }
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
    // Only a disk-image class names its layout: a device class stays as it was, since a changed
    // parameter would replace every existing class.
    if !template.layout.is_device() {
        parameters.insert(
            fastvirt_api::volume_layout::PARAMETER.into(),
            template.layout.as_str().into(),
        );
    }
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
    if template.default_virt_class {
        annotations.insert(
            "storageclass.kubevirt.io/is-default-virt-class".into(),
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
        // None: which nodes offer the pool is the node selector's job, enforced by the pool file
        // the node plugins read, and the scheduler sees it through CSIStorageCapacity (a node
        // without the pool reports none). The driver's topology value is the node *name*, which a
        // selector's labels (kubernetes.io/hostname among them) need not equal.
        allowed_topologies: None,
    })
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
