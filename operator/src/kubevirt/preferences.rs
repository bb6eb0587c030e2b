//! The cluster preference of a BlockPool (pure): `fastvirt.<pool>`, the disk settings that suit
//! its volumes. A VM that names it gets virtio disks with `io: native` and `cache: none` (the
//! volumes take O_DIRECT), the volume's own block size (`matchVolume` reads the loop device's
//! sector size), a queue per vCPU and a dedicated IO thread per disk, and claims from the pool's
//! StorageClass. KubeVirt applies a preference only to fields the VM leaves unset.

use super::types::{
    BlockSize, ClusterPreference, DevicePreferences, MatchVolume, PreferenceSpec, VolumePreferences,
};
use crate::pool_objects::{class_name, owned_metadata};
use fastvirt_api::BlockPool;
use kube::ResourceExt;
use std::collections::BTreeMap;

/// `fastvirt.<pool>`.
pub fn name(pool: &BlockPool) -> String {
    format!("fastvirt.{}", pool.name_any())
}

pub fn build(pool: &BlockPool) -> ClusterPreference {
    let class = class_name(pool);
    let annotations = BTreeMap::from([(
        "instancetype.kubevirt.io/description".to_owned(),
        format!(
            "Disks on the fastvirt pool {}: virtio, io=native, cache=none, the volume's block size, multiqueue, a dedicated IO thread each; claims from StorageClass {class}.",
            pool.name_any()
        ),
    )]);
    ClusterPreference {
        metadata: owned_metadata(pool, name(pool), annotations),
        spec: PreferenceSpec {
            devices: DevicePreferences {
                preferred_disk_bus: "virtio".to_owned(),
                preferred_disk_io: "native".to_owned(),
                preferred_disk_cache: "none".to_owned(),
                preferred_disk_block_size: BlockSize {
                    match_volume: MatchVolume { enabled: true },
                },
                preferred_block_multi_queue: true,
                preferred_disk_dedicated_io_thread: true,
            },
            volumes: Some(VolumePreferences {
                preferred_storage_class_name: class,
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_settings_for_the_pools_volumes() {
        let mut pool = BlockPool::new(
            "fast",
            serde_yaml::from_str(
                "backend: {file: {path: /var/lib/fastvirt/fast}}\nstorageClass: {name: fast-rwo}",
            )
            .unwrap(),
        );
        pool.metadata.uid = Some("uid-p".into());
        let preference = build(&pool);
        assert_eq!(preference.metadata.name.as_deref(), Some("fastvirt.fast"));
        assert_eq!(
            serde_json::to_value(&preference.spec).unwrap(),
            serde_json::json!({
                "devices": {
                    "preferredDiskBus": "virtio",
                    "preferredDiskIO": "native",
                    "preferredDiskCache": "none",
                    "preferredDiskBlockSize": {"matchVolume": {"enabled": true}},
                    "preferredBlockMultiQueue": true,
                    "preferredDiskDedicatedIoThread": true
                },
                "volumes": {"preferredStorageClassName": "fast-rwo"}
            })
        );
        let owner = &preference.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("BlockPool", "uid-p")
        );
        assert_eq!(
            preference.metadata.labels.as_ref().unwrap()["fastvirt.io/pool"],
            "fast"
        );
    }
}
