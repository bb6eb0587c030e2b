//! Writes the prost-encoded seed requests of the RPC targets into `corpus/rpc_*/` (the text targets'
//! seeds are committed files). Run from `fuzz/` after changing the requests below or the seed
//! objects in `src/lib.rs`:
//!
//! ```sh
//! cargo +nightly run --bin seeds
//! ```
//!
//! Every request names the objects a fresh fuzz driver holds (`pvc-seed`, `snap-seed`, ...), so the
//! fuzzer starts from requests that get past validation as well as from ones that do not. prost
//! writes map fields in hash order, so a rerun may change the bytes of requests with maps (not
//! the requests): commit only the seeds you meant to change.

use fastvirt_csi::proto::volume_capability::access_mode::Mode;
use fastvirt_csi::proto::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use fastvirt_csi::proto::*;
use fastvirt_fuzz::{
    GIB, NODE_ID, SEED_CLONE, SEED_FAST_VOLUME, SEED_SNAPSHOT, SEED_VOLUME, snapshot_id, volume_id,
};
use prost::Message;
use std::collections::HashMap;
use std::path::Path;

fn block(mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

fn mount(fs_type: &str, flags: &[&str], mode: Mode) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs_type.to_owned(),
            mount_flags: flags.iter().map(|f| (*f).to_owned()).collect(),
            volume_mount_group: String::new(),
        })),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn range(required: i64, limit: i64) -> Option<CapacityRange> {
    Some(CapacityRange {
        required_bytes: required,
        limit_bytes: limit,
    })
}

fn this_node() -> Topology {
    Topology {
        segments: map(&[(fastvirt_csi::TOPOLOGY_NODE_KEY, NODE_ID)]),
    }
}

struct Seeds {
    root: &'static Path,
    written: usize,
}

impl Seeds {
    fn write(&mut self, target: &str, name: &str, message: &impl Message) {
        let dir = self.root.join(target);
        std::fs::create_dir_all(&dir).expect("creating a corpus directory");
        std::fs::write(dir.join(name), message.encode_to_vec()).expect("writing a seed");
        self.written += 1;
    }
}

fn main() {
    let mut seeds = Seeds {
        root: Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/corpus")),
        written: 0,
    };
    let seed = volume_id("default", SEED_VOLUME);
    let clone = volume_id("default", SEED_CLONE);
    let fast = volume_id("fast", SEED_FAST_VOLUME);
    let snapshot = snapshot_id("default", SEED_SNAPSHOT);
    let unknown = volume_id("default", "pvc-unknown");
    let gib = GIB as i64;

    let t = "rpc_create_volume";
    seeds.write(
        t,
        "block",
        &CreateVolumeRequest {
            name: "pvc-new".into(),
            capacity_range: range(gib, 0),
            volume_capabilities: vec![block(Mode::SingleNodeWriter)],
            parameters: map(&[("pool", "fast"), ("csi.storage.k8s.io/pv/name", "pvc-new")]),
            accessibility_requirements: Some(TopologyRequirement {
                requisite: vec![this_node()],
                preferred: vec![this_node()],
            }),
            ..Default::default()
        },
    );
    seeds.write(
        t,
        "xfs-thin",
        &CreateVolumeRequest {
            name: "pvc-xfs".into(),
            capacity_range: range(300 << 20, 2 * gib),
            volume_capabilities: vec![mount("xfs", &["noatime"], Mode::SingleNodeSingleWriter)],
            parameters: map(&[("thin", "true"), ("fsType", "xfs")]),
            ..Default::default()
        },
    );
    seeds.write(
        t,
        "from-snapshot",
        &CreateVolumeRequest {
            name: "pvc-restored".into(),
            capacity_range: range(2 * gib, 0),
            volume_capabilities: vec![mount("", &[], Mode::SingleNodeWriter)],
            parameters: map(&[("pool", "default"), ("fsType", "ext4")]),
            volume_content_source: Some(VolumeContentSource {
                r#type: Some(volume_content_source::Type::Snapshot(
                    volume_content_source::SnapshotSource {
                        snapshot_id: snapshot.clone(),
                    },
                )),
            }),
            ..Default::default()
        },
    );
    seeds.write(
        t,
        "clone-of-volume",
        &CreateVolumeRequest {
            name: "pvc-cloned".into(),
            volume_capabilities: vec![block(Mode::SingleNodeReaderOnly)],
            volume_content_source: Some(VolumeContentSource {
                r#type: Some(volume_content_source::Type::Volume(
                    volume_content_source::VolumeSource {
                        volume_id: seed.clone(),
                    },
                )),
            }),
            ..Default::default()
        },
    );
    seeds.write(
        t,
        "existing",
        &CreateVolumeRequest {
            name: SEED_VOLUME.into(),
            capacity_range: range(gib, gib),
            volume_capabilities: vec![block(Mode::SingleNodeWriter)],
            ..Default::default()
        },
    );

    let t = "rpc_delete_volume";
    for (name, id) in [("existing", &seed), ("unknown", &unknown), ("fast", &fast)] {
        seeds.write(
            t,
            name,
            &DeleteVolumeRequest {
                volume_id: id.clone(),
                secrets: HashMap::new(),
            },
        );
    }

    let t = "rpc_create_snapshot";
    seeds.write(
        t,
        "new",
        &CreateSnapshotRequest {
            source_volume_id: seed.clone(),
            name: "snap-new".into(),
            parameters: map(&[("csi.storage.k8s.io/volumesnapshot/name", "s1")]),
            ..Default::default()
        },
    );
    seeds.write(
        t,
        "existing",
        &CreateSnapshotRequest {
            source_volume_id: seed.clone(),
            name: SEED_SNAPSHOT.into(),
            ..Default::default()
        },
    );

    let t = "rpc_delete_snapshot";
    seeds.write(
        t,
        "existing",
        &DeleteSnapshotRequest {
            snapshot_id: snapshot.clone(),
            secrets: HashMap::new(),
        },
    );
    seeds.write(
        t,
        "a-volume-id",
        &DeleteSnapshotRequest {
            snapshot_id: seed.clone(),
            secrets: HashMap::new(),
        },
    );

    let t = "rpc_controller_expand_volume";
    seeds.write(
        t,
        "mount",
        &ControllerExpandVolumeRequest {
            volume_id: seed.clone(),
            capacity_range: range(3 * gib, 0),
            volume_capability: Some(mount("xfs", &[], Mode::SingleNodeWriter)),
            ..Default::default()
        },
    );
    seeds.write(
        t,
        "block",
        &ControllerExpandVolumeRequest {
            volume_id: fast.clone(),
            capacity_range: range(2 * gib + 1, 4 * gib),
            volume_capability: Some(block(Mode::SingleNodeWriter)),
            ..Default::default()
        },
    );

    let t = "rpc_controller_modify_volume";
    seeds.write(
        t,
        "limits",
        &ControllerModifyVolumeRequest {
            volume_id: seed.clone(),
            mutable_parameters: HashMap::from([
                ("readIOPS".to_owned(), "500".to_owned()),
                ("writeBPS".to_owned(), "10485760".to_owned()),
                ("csi.storage.k8s.io/pv/name".to_owned(), "pvc-1".to_owned()),
            ]),
            ..Default::default()
        },
    );
    seeds.write(
        t,
        "unlimited",
        &ControllerModifyVolumeRequest {
            volume_id: fast.clone(),
            mutable_parameters: HashMap::from([("writeIOPS".to_owned(), "unlimited".to_owned())]),
            ..Default::default()
        },
    );

    let t = "rpc_validate_volume_capabilities";
    seeds.write(
        t,
        "block",
        &ValidateVolumeCapabilitiesRequest {
            volume_id: seed.clone(),
            volume_context: map(&[("pool", "default"), ("thin", "false")]),
            volume_capabilities: vec![block(Mode::SingleNodeWriter)],
            parameters: map(&[("pool", "default"), ("thin", "false")]),
            ..Default::default()
        },
    );
    seeds.write(
        t,
        "multi-node",
        &ValidateVolumeCapabilitiesRequest {
            volume_id: clone.clone(),
            volume_capabilities: vec![
                mount("ext4", &["discard"], Mode::MultiNodeReaderOnly),
                block(Mode::MultiNodeMultiWriter),
            ],
            ..Default::default()
        },
    );

    let t = "rpc_list_volumes";
    seeds.write(
        t,
        "first-page",
        &ListVolumesRequest {
            max_entries: 2,
            starting_token: String::new(),
        },
    );
    seeds.write(
        t,
        "after-token",
        &ListVolumesRequest {
            max_entries: 1,
            starting_token: seed.clone(),
        },
    );

    let t = "rpc_list_snapshots";
    seeds.write(
        t,
        "all",
        &ListSnapshotsRequest {
            max_entries: 0,
            ..Default::default()
        },
    );
    seeds.write(
        t,
        "by-source",
        &ListSnapshotsRequest {
            max_entries: 1,
            source_volume_id: seed.clone(),
            starting_token: snapshot.clone(),
            ..Default::default()
        },
    );
    seeds.write(
        t,
        "by-id",
        &ListSnapshotsRequest {
            snapshot_id: snapshot.clone(),
            ..Default::default()
        },
    );

    let t = "rpc_get_capacity";
    seeds.write(
        t,
        "pool",
        &GetCapacityRequest {
            volume_capabilities: vec![block(Mode::SingleNodeWriter)],
            parameters: map(&[("pool", "fast"), ("thin", "true")]),
            accessible_topology: Some(this_node()),
        },
    );
    seeds.write(
        t,
        "default-mount",
        &GetCapacityRequest {
            volume_capabilities: vec![mount(
                "xfs",
                &["noatime,nodiratime"],
                Mode::SingleNodeWriter,
            )],
            parameters: map(&[("csi.storage.k8s.io/fstype", "xfs")]),
            accessible_topology: None,
        },
    );

    let staging = "/var/lib/kubelet/plugins/kubernetes.io/csi/block.fastvirt.io/abc/globalmount";
    let target = "/var/lib/kubelet/pods/1234/volumes/kubernetes.io~csi/pvc-seed/mount";
    let t = "rpc_node_stage_volume";
    seeds.write(
        t,
        "mount",
        &NodeStageVolumeRequest {
            volume_id: seed.clone(),
            staging_target_path: staging.into(),
            volume_capability: Some(mount("", &["noatime"], Mode::SingleNodeWriter)),
            volume_context: map(&[("pool", "default"), ("fsType", "xfs")]),
            ..Default::default()
        },
    );
    seeds.write(
        t,
        "block",
        &NodeStageVolumeRequest {
            volume_id: fast.clone(),
            staging_target_path: staging.into(),
            volume_capability: Some(block(Mode::SingleNodeReaderOnly)),
            ..Default::default()
        },
    );

    let t = "rpc_node_unstage_volume";
    seeds.write(
        t,
        "existing",
        &NodeUnstageVolumeRequest {
            volume_id: seed.clone(),
            staging_target_path: staging.into(),
        },
    );

    let t = "rpc_node_publish_volume";
    seeds.write(
        t,
        "mount",
        &NodePublishVolumeRequest {
            volume_id: seed.clone(),
            staging_target_path: staging.into(),
            target_path: target.into(),
            volume_capability: Some(mount("ext4", &["ro"], Mode::SingleNodeWriter)),
            readonly: true,
            ..Default::default()
        },
    );
    seeds.write(
        t,
        "block",
        &NodePublishVolumeRequest {
            volume_id: fast.clone(),
            staging_target_path: staging.into(),
            target_path: format!("{target}/dev"),
            volume_capability: Some(block(Mode::SingleNodeSingleWriter)),
            ..Default::default()
        },
    );

    let t = "rpc_node_unpublish_volume";
    seeds.write(
        t,
        "existing",
        &NodeUnpublishVolumeRequest {
            volume_id: seed.clone(),
            target_path: target.into(),
        },
    );

    let t = "rpc_node_get_volume_stats";
    seeds.write(
        t,
        "existing",
        &NodeGetVolumeStatsRequest {
            volume_id: seed.clone(),
            volume_path: target.into(),
            staging_target_path: staging.into(),
        },
    );
    seeds.write(
        t,
        "mounted-root",
        &NodeGetVolumeStatsRequest {
            volume_id: seed.clone(),
            volume_path: "/".into(),
            staging_target_path: String::new(),
        },
    );

    let t = "rpc_node_expand_volume";
    seeds.write(
        t,
        "mount",
        &NodeExpandVolumeRequest {
            volume_id: seed.clone(),
            volume_path: target.into(),
            capacity_range: range(2 * gib, 0),
            staging_target_path: staging.into(),
            volume_capability: Some(mount("xfs", &[], Mode::SingleNodeWriter)),
            ..Default::default()
        },
    );

    println!(
        "wrote {} seed requests below {}",
        seeds.written,
        seeds.root.display()
    );
}
