//! The objects besides the StorageClass that a BlockPool stands for: its VolumeSnapshotClass and
//! its CDI StorageProfile hint, and the metadata all of them share.

use crate::foreign::{ClaimPropertySet, StorageProfile, StorageProfileSpec, VolumeSnapshotClass};
use fastvirt_api::BlockPool;
use fastvirt_api::block_pool::ReclaimPolicy;
use fastvirt_api::volume_layout::VolumeLayout;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use std::collections::BTreeMap;

/// Label naming the pool on every object built for it.
pub const POOL_LABEL: &str = "fastvirt.io/pool";

/// Metadata of an object that belongs to `pool`: labelled with it, and owned by it so that the
/// garbage collector removes what the operator does not.
pub fn owned_metadata(
    pool: &BlockPool,
    name: String,
    annotations: BTreeMap<String, String>,
) -> ObjectMeta {
    let labels = BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_owned(),
            crate::MANAGER.to_owned(),
        ),
        (
            POOL_LABEL.to_owned(),
            pool.metadata.name.clone().unwrap_or_default(),
        ),
    ]);
    ObjectMeta {
        name: Some(name),
        labels: Some(labels),
        annotations: (!annotations.is_empty()).then_some(annotations),
        owner_references: pool.controller_owner_ref(&()).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

/// The StorageClass name the pool's objects are named after.
pub fn class_name(pool: &BlockPool) -> String {
    pool.spec
        .storage_class
        .name
        .clone()
        .unwrap_or_else(|| pool.metadata.name.clone().unwrap_or_default())
}

/// The VolumeSnapshotClass, when the pool asks for one.
pub fn snapshot_class(pool: &BlockPool) -> Option<VolumeSnapshotClass> {
    let template = pool.spec.snapshot_class.as_ref()?;
    let mut annotations = BTreeMap::new();
    if template.default_class {
        annotations.insert(
            "snapshot.storage.kubernetes.io/is-default-class".to_owned(),
            "true".to_owned(),
        );
    }
    let name = template
        .name
        .clone()
        .unwrap_or_else(|| pool.metadata.name.clone().unwrap_or_default());
    Some(VolumeSnapshotClass {
        metadata: owned_metadata(pool, name, annotations),
        driver: crate::PROVISIONER.to_owned(),
        deletion_policy: match template.deletion_policy {
            ReclaimPolicy::Delete => "Delete",
            ReclaimPolicy::Retain => "Retain",
        }
        .to_owned(),
        parameters: BTreeMap::new(),
    })
}

/// The spec CDI should use for the pool's StorageClass: block volumes first on a device class
/// (what VMs want, and what CDI picks when a DataVolume names no mode), filesystem volumes only on
/// a disk-image class, ReadWriteOnce (volumes are node-local), and
/// clones through the driver (instant reflink copies instead of CDI's host-assisted copy). Not
/// owned by the pool: CDI owns the StorageProfile and deletes it with the StorageClass.
///
/// `snapshot_class`: the pool's VolumeSnapshotClass where one exists. With it CDI keeps
/// DataImportCron golden images as VolumeSnapshots (`dataImportCronSourceFormat: snapshot`) and
/// restores VMs' disks from them by reflink; without it, as PVCs that it clones.
pub fn storage_profile(pool: &BlockPool, snapshot_class: Option<String>) -> Option<StorageProfile> {
    if !pool.spec.cdi_storage_profile {
        return None;
    }
    let set = |mode: &str| ClaimPropertySet {
        access_modes: vec!["ReadWriteOnce".into()],
        volume_mode: mode.into(),
    };
    let template = &pool.spec.storage_class;
    let claim_property_sets = match template.layout {
        // A disk-image class has Filesystem volumes only: QEMU opens their disk.img directly.
        VolumeLayout::DiskImage => vec![set("Filesystem")],
        VolumeLayout::Device if template.block_only => vec![set("Block")],
        VolumeLayout::Device => vec![set("Block"), set("Filesystem")],
    };
    Some(StorageProfile {
        metadata: ObjectMeta {
            name: Some(class_name(pool)),
            ..ObjectMeta::default()
        },
        spec: StorageProfileSpec {
            clone_strategy: Some("csi-clone".into()),
            claim_property_sets,
            data_import_cron_source_format: Some(
                if snapshot_class.is_some() {
                    "snapshot"
                } else {
                    "pvc"
                }
                .into(),
            ),
            snapshot_class,
        },
    })
}
