//! CSI conformance suite: drives the real `fastvirt-csi` binary over its unix socket, as kubelet and
//! the sidecars would, with real loop devices, real mkfs and real mounts. Covers what the Kubernetes
//! csi-sanity suite covers, in both access types. Needs root; skips with a message otherwise.

mod common;

use common::*;
use fastvirt_csi::proto::controller_service_capability::rpc::Type as CtrlCap;
use fastvirt_csi::proto::node_service_capability::rpc::Type as NodeCap;
use fastvirt_csi::proto::plugin_capability::service::Type as PluginCap;
use fastvirt_csi::proto::volume_capability::access_mode::Mode;
use fastvirt_csi::proto::volume_capability::{AccessType, BlockVolume};
use fastvirt_csi::proto::*;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use tonic::Code;

#[tokio::test]
async fn identity_and_capabilities() {
    require_host!();
    let mut env = TestEnv::start("identity").await;
    let info = env
        .clients
        .identity
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, "block.fastvirt.io");
    assert_eq!(info.vendor_version, env!("CARGO_PKG_VERSION"));

    let caps = env
        .clients
        .identity
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    let services: Vec<i32> = caps
        .capabilities
        .iter()
        .filter_map(|c| match &c.r#type {
            Some(plugin_capability::Type::Service(s)) => Some(s.r#type),
            _ => None,
        })
        .collect();
    assert!(services.contains(&(PluginCap::ControllerService as i32)));
    assert!(services.contains(&(PluginCap::VolumeAccessibilityConstraints as i32)));

    let probe = env
        .clients
        .identity
        .probe(ProbeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(probe.ready, Some(true));

    let ctrl = env.controller_capabilities().await;
    for want in [
        CtrlCap::CreateDeleteVolume,
        CtrlCap::ListVolumes,
        CtrlCap::GetCapacity,
        CtrlCap::SingleNodeMultiWriter,
        // The default, `--expansion controller`.
        CtrlCap::ExpandVolume,
    ] {
        assert!(ctrl.contains(&(want as i32)), "{want:?}");
    }

    let node = env.node_capabilities().await;
    for want in [
        NodeCap::StageUnstageVolume,
        NodeCap::GetVolumeStats,
        NodeCap::VolumeCondition,
        NodeCap::SingleNodeMultiWriter,
    ] {
        assert!(node.contains(&(want as i32)), "{want:?}");
    }

    let info = env
        .clients
        .node
        .node_get_info(NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, NODE);
    let topology = info.accessible_topology.unwrap();
    assert_eq!(
        topology
            .segments
            .get("topology.block.fastvirt.io/node")
            .map(String::as_str),
        Some(NODE)
    );

    // RPCs this driver does not offer answer UNIMPLEMENTED, as the spec asks.
    let publish = env
        .clients
        .controller
        .controller_publish_volume(ControllerPublishVolumeRequest::default())
        .await;
    assert_code(publish, Code::Unimplemented);
}

#[tokio::test]
async fn create_is_idempotent_and_refuses_incompatible_requests() {
    require_host!();
    let mut env = TestEnv::start("create").await;
    let c = &mut env.clients.controller;
    let first = c
        .create_volume(create_req("pvc-a", 10 * MIB, block_cap()))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let again = c
        .create_volume(create_req("pvc-a", 10 * MIB, block_cap()))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(first.capacity_bytes, 10 * MIB);
    assert_eq!(
        first.accessible_topology[0].segments["topology.block.fastvirt.io/node"],
        NODE
    );
    assert_eq!(first.volume_context["pool"], "default");

    // A compatible range (10 MiB fits 5..20 MiB) gets the same volume; an incompatible one does not.
    let mut ranged = create_req("pvc-a", 5 * MIB, block_cap());
    ranged.capacity_range.as_mut().unwrap().limit_bytes = 20 * MIB;
    assert_eq!(
        c.create_volume(ranged)
            .await
            .unwrap()
            .into_inner()
            .volume
            .unwrap()
            .volume_id,
        first.volume_id
    );
    assert_code(
        c.create_volume(create_req("pvc-a", 11 * MIB, block_cap()))
            .await,
        Code::AlreadyExists,
    );
    let thin = with_params(
        create_req("pvc-a", 10 * MIB, block_cap()),
        &[("thin", "true")],
    );
    assert_code(c.create_volume(thin).await, Code::AlreadyExists);

    // Thick volumes are preallocated, thin ones are sparse.
    let key = first.volume_id.rsplit('.').next().unwrap();
    let thick_blocks = std::fs::metadata(env.pool_dir.join(format!("{key}.img")))
        .unwrap()
        .blocks();
    assert!(
        thick_blocks * 512 >= 10 * MIB as u64,
        "thick volume has {thick_blocks} blocks"
    );
    let thin = c
        .create_volume(with_params(
            create_req("pvc-thin", 64 * MIB, block_cap()),
            &[("thin", "true")],
        ))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let key = thin.volume_id.rsplit('.').next().unwrap();
    let meta = std::fs::metadata(env.pool_dir.join(format!("{key}.img"))).unwrap();
    assert_eq!(meta.len(), 64 << 20);
    assert!(
        meta.blocks() * 512 < 1 << 20,
        "thin volume allocated {} bytes",
        meta.blocks() * 512
    );

    // Sizes: default 1 GiB, rounding up to whole MiB, ranges honoured.
    let unsized_req = CreateVolumeRequest {
        name: "pvc-default".into(),
        volume_capabilities: vec![block_cap()],
        ..Default::default()
    };
    let default_sized = c
        .create_volume(with_params(unsized_req, &[("thin", "true")]))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(default_sized.capacity_bytes, 1 << 30);
    let odd = c
        .create_volume(create_req("pvc-odd", 3 * MIB + 1, block_cap()))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(odd.capacity_bytes, 4 * MIB);

    // Sidecar parameters are accepted, unknown ones refused.
    let sidecar = with_params(
        create_req("pvc-side", MIB, block_cap()),
        &[("csi.storage.k8s.io/pvc/name", "x"), ("pool", "default")],
    );
    c.create_volume(sidecar).await.unwrap();
    let status = assert_code(
        c.create_volume(with_params(
            create_req("pvc-x", MIB, block_cap()),
            &[("pol", "default")],
        ))
        .await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("pol"), "{}", status.message());
    // A pool this node lacks may be on another: RESOURCE_EXHAUSTED makes the provisioner
    // reschedule.
    assert_code(
        c.create_volume(with_params(
            create_req("pvc-x", MIB, block_cap()),
            &[("pool", "nope")],
        ))
        .await,
        Code::ResourceExhausted,
    );
    assert_code(
        c.create_volume(with_params(
            create_req("pvc-x", MIB, block_cap()),
            &[("thin", "yes")],
        ))
        .await,
        Code::InvalidArgument,
    );
}

#[tokio::test]
async fn create_error_codes() {
    require_host!();
    let mut env = TestEnv::start("create-errors").await;
    let c = &mut env.clients.controller;
    assert_code(
        c.create_volume(create_req("", MIB, block_cap())).await,
        Code::InvalidArgument,
    );
    let mut no_caps = create_req("v", MIB, block_cap());
    no_caps.volume_capabilities.clear();
    assert_code(c.create_volume(no_caps).await, Code::InvalidArgument);
    let rwx = capability(
        Mode::MultiNodeMultiWriter,
        AccessType::Block(BlockVolume {}),
    );
    let status = assert_code(
        c.create_volume(create_req("v", MIB, rwx)).await,
        Code::InvalidArgument,
    );
    assert!(status.message().contains("node-local"));
    assert_code(
        c.create_volume(create_req("v", -1, block_cap())).await,
        Code::InvalidArgument,
    );
    let mut inverted = create_req("v", 10 * MIB, block_cap());
    inverted.capacity_range.as_mut().unwrap().limit_bytes = 5 * MIB;
    assert_code(c.create_volume(inverted).await, Code::InvalidArgument);
    assert_code(
        c.create_volume(create_req("v", i64::MAX, block_cap()))
            .await,
        Code::OutOfRange,
    );
    let mut tiny_limit = create_req("v", 0, block_cap());
    tiny_limit.capacity_range.as_mut().unwrap().limit_bytes = 1000;
    assert_code(c.create_volume(tiny_limit).await, Code::OutOfRange);
    let status = assert_code(
        c.create_volume(create_req("v", 100 * MIB, mount_cap("xfs", &[])))
            .await,
        Code::OutOfRange,
    );
    assert!(status.message().contains("300 MiB"), "{}", status.message());
    let mut elsewhere = create_req("v", MIB, block_cap());
    elsewhere.accessibility_requirements = Some(TopologyRequirement {
        requisite: vec![Topology {
            segments: [(
                "topology.block.fastvirt.io/node".to_string(),
                "node-b".to_string(),
            )]
            .into(),
        }],
        preferred: vec![],
    });
    assert_code(c.create_volume(elsewhere).await, Code::ResourceExhausted);
    let mut source = create_req("v", MIB, block_cap());
    source.volume_content_source = Some(VolumeContentSource { r#type: None });
    assert_code(c.create_volume(source).await, Code::InvalidArgument);
    // Nothing was created by any of the refused requests.
    let listed = c
        .list_volumes(ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.entries.is_empty(), "{listed:?}");
}

#[tokio::test]
async fn out_of_space_is_resource_exhausted_and_capacity_tracks_the_pool() {
    require_host!();
    let root = test_root("space");
    let scratch = ScratchFs::new(&root, 96 << 20, "ext4");
    let mut env = TestEnv::start_with_pool(root.clone(), scratch.mount_point.join("pool")).await;
    let c = &mut env.clients.controller;
    let capacity = |c: &mut fastvirt_csi::proto::controller_client::ControllerClient<_>| {
        let mut c = c.clone();
        async move {
            c.get_capacity(GetCapacityRequest::default())
                .await
                .unwrap()
                .into_inner()
        }
    };
    let before = capacity(c).await;
    // Capacity leaves the configured reserve (5 % by default) free.
    let stat = nix::sys::statvfs::statvfs(&env.pool_dir).unwrap();
    let (total, free) = (
        stat.blocks() * stat.fragment_size(),
        stat.blocks_available() * stat.fragment_size(),
    );
    let expected = (free - total / 100 * 5) as i64;
    assert!(
        (before.available_capacity - expected).abs() <= MIB,
        "{before:?} vs {expected}"
    );
    assert!(
        before.available_capacity > 60 * MIB && before.available_capacity < 96 * MIB,
        "{before:?}"
    );
    assert_eq!(before.minimum_volume_size, Some(MIB));
    c.create_volume(create_req("fill", 48 * MIB, block_cap()))
        .await
        .unwrap();
    let after = capacity(c).await;
    let used = before.available_capacity - after.available_capacity;
    assert!(
        (48 * MIB..=50 * MIB).contains(&used),
        "creating 48 MiB used {used} bytes"
    );
    let status = assert_code(
        c.create_volume(create_req("overflow", 48 * MIB, block_cap()))
            .await,
        Code::ResourceExhausted,
    );
    assert!(status.message().contains("free"), "{}", status.message());
    assert_code(
        c.create_volume(create_req("huge", 1 << 30, block_cap()))
            .await,
        Code::OutOfRange,
    );
    // The failed create left nothing behind.
    let files = pool_files(&env.pool_dir);
    assert_eq!(files.len(), 2, "{files:?}");

    // Capacity is zero for another node's topology and for a pool this node does not have.
    let other = GetCapacityRequest {
        accessible_topology: Some(Topology {
            segments: [(
                "topology.block.fastvirt.io/node".to_string(),
                "node-b".to_string(),
            )]
            .into(),
        }),
        ..Default::default()
    };
    assert_eq!(
        c.get_capacity(other)
            .await
            .unwrap()
            .into_inner()
            .available_capacity,
        0
    );
    let unknown_pool = GetCapacityRequest {
        parameters: [("pool".to_string(), "elsewhere".to_string())].into(),
        ..Default::default()
    };
    assert_eq!(
        c.get_capacity(unknown_pool)
            .await
            .unwrap()
            .into_inner()
            .available_capacity,
        0
    );
    let bad_param = GetCapacityRequest {
        parameters: [("speed".to_string(), "max".to_string())].into(),
        ..Default::default()
    };
    assert_code(c.get_capacity(bad_param).await, Code::InvalidArgument);
    drop(env);
    drop(scratch);
    cleanup_under(&root);
}

#[tokio::test]
async fn delete_is_idempotent_and_refuses_attached_volumes() {
    require_host!();
    let mut env = TestEnv::start("delete").await;
    let vol = env
        .create(create_req("pvc-del", 8 * MIB, block_cap()))
        .await;
    let staging = env.path("staging");
    env.stage(stage_req(&vol.volume_id, &staging, block_cap()))
        .await;
    let delete = |id: &str| DeleteVolumeRequest {
        volume_id: id.into(),
        secrets: Default::default(),
    };
    let status = assert_code(
        env.clients
            .controller
            .delete_volume(delete(&vol.volume_id))
            .await,
        Code::FailedPrecondition,
    );
    assert!(
        status.message().contains("attached"),
        "{}",
        status.message()
    );
    env.unstage(unstage_req(&vol.volume_id, &staging)).await;
    env.clients
        .controller
        .delete_volume(delete(&vol.volume_id))
        .await
        .unwrap();
    env.clients
        .controller
        .delete_volume(delete(&vol.volume_id))
        .await
        .unwrap();
    assert!(pool_files(&env.pool_dir).is_empty());
    for unknown in [
        "fv.default.00000000000000000000000000000000",
        "not-a-volume",
        "fv.other-pool.00000000000000000000000000000000",
        "../../etc",
    ] {
        env.clients
            .controller
            .delete_volume(delete(unknown))
            .await
            .unwrap();
    }
    assert_code(
        env.clients.controller.delete_volume(delete("")).await,
        Code::InvalidArgument,
    );
}

#[tokio::test]
async fn list_volumes_paginates() {
    require_host!();
    let mut env = TestEnv::start("list").await;
    let c = &mut env.clients.controller;
    let mut created = Vec::new();
    for i in 0..7 {
        let req = with_params(
            create_req(&format!("pvc-{i}"), MIB, block_cap()),
            &[("thin", "true")],
        );
        created.push(
            c.create_volume(req)
                .await
                .unwrap()
                .into_inner()
                .volume
                .unwrap()
                .volume_id,
        );
    }
    created.sort();
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = c
            .list_volumes(ListVolumesRequest {
                max_entries: 3,
                starting_token: token.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.entries.len() <= 3);
        seen.extend(
            page.entries
                .iter()
                .map(|e| e.volume.as_ref().unwrap().volume_id.clone()),
        );
        pages += 1;
        if page.next_token.is_empty() {
            break;
        }
        token = page.next_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, created);
    let all = c
        .list_volumes(ListVolumesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.entries.len(), 7);
    assert!(all.next_token.is_empty());
    assert_code(
        c.list_volumes(ListVolumesRequest {
            max_entries: -1,
            starting_token: String::new(),
        })
        .await,
        Code::InvalidArgument,
    );
    assert_code(
        c.list_volumes(ListVolumesRequest {
            max_entries: 1,
            starting_token: "bogus".into(),
        })
        .await,
        Code::Aborted,
    );
}

#[tokio::test]
async fn validate_volume_capabilities() {
    require_host!();
    let mut env = TestEnv::start("validate").await;
    let c = &mut env.clients.controller;
    let vol = c
        .create_volume(create_req("pvc-v", MIB, block_cap()))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let req = |caps: Vec<VolumeCapability>| ValidateVolumeCapabilitiesRequest {
        volume_id: vol.volume_id.clone(),
        volume_capabilities: caps,
        ..Default::default()
    };
    let ok = c
        .validate_volume_capabilities(req(vec![block_cap(), mount_cap("xfs", &[])]))
        .await
        .unwrap()
        .into_inner();
    assert!(ok.confirmed.is_some(), "{ok:?}");
    // ReadOnlyMany is served: the topology keeps every reader on this node.
    let rox = capability(Mode::MultiNodeReaderOnly, AccessType::Block(BlockVolume {}));
    let rox = c
        .validate_volume_capabilities(req(vec![rox]))
        .await
        .unwrap()
        .into_inner();
    assert!(rox.confirmed.is_some(), "{rox:?}");
    let rwx = capability(
        Mode::MultiNodeSingleWriter,
        AccessType::Block(BlockVolume {}),
    );
    let refused = c
        .validate_volume_capabilities(req(vec![rwx]))
        .await
        .unwrap()
        .into_inner();
    assert!(refused.confirmed.is_none());
    assert!(
        refused.message.contains("node-local"),
        "{}",
        refused.message
    );
    assert_code(
        c.validate_volume_capabilities(req(vec![])).await,
        Code::InvalidArgument,
    );
    let unknown = ValidateVolumeCapabilitiesRequest {
        volume_id: "fv.default.00000000000000000000000000000000".into(),
        volume_capabilities: vec![block_cap()],
        ..Default::default()
    };
    assert_code(
        c.validate_volume_capabilities(unknown).await,
        Code::NotFound,
    );
}

#[tokio::test]
async fn block_volume_lifecycle() {
    require_host!();
    let mut env = TestEnv::start("block").await;
    let vol = env
        .create(create_req("pvc-block", 16 * MIB, block_cap()))
        .await;
    let id = vol.volume_id.clone();
    let staging = env.path("staging/pv");
    let target_a = env.path("publish/pod-a/dev");
    let target_b = env.path("publish/pod-b/dev");
    let n = &mut env.clients.node;

    n.node_stage_volume(stage_req(&id, &staging, block_cap()))
        .await
        .unwrap();
    n.node_stage_volume(stage_req(&id, &staging, block_cap()))
        .await
        .unwrap();
    let loops = loops_under(&env.pool_dir);
    assert_eq!(loops.len(), 1, "staging twice must attach once");
    let device = loops[0];
    assert!(device.direct_io(), "loop device must use direct I/O");
    let fs_block = std::fs::metadata(&env.pool_dir).unwrap().blksize() as u32;
    assert_eq!(
        device.logical_block_size().unwrap(),
        fs_block.clamp(512, 4096)
    );
    assert_eq!(device.scheduler().as_deref(), Some("none"));
    assert_eq!(device.size_bytes().unwrap(), 16 << 20);

    // Publishing before staging the other volume, or with a relative path, is refused.
    assert_code(
        n.node_publish_volume(publish_req(
            &id,
            &staging,
            Path::new("relative/dev"),
            block_cap(),
            false,
        ))
        .await,
        Code::InvalidArgument,
    );

    n.node_publish_volume(publish_req(&id, &staging, &target_a, block_cap(), false))
        .await
        .unwrap();
    n.node_publish_volume(publish_req(&id, &staging, &target_a, block_cap(), false))
        .await
        .unwrap();
    assert_code(
        n.node_publish_volume(publish_req(&id, &staging, &target_a, block_cap(), true))
            .await,
        Code::AlreadyExists,
    );
    let data = pattern(7);
    {
        let mut dev = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&target_a)
            .unwrap();
        dev.write_all_at(&data, 3 << 20).unwrap();
        dev.sync_all().unwrap();
        assert_eq!(dev.seek(SeekFrom::End(0)).unwrap(), 16 << 20);
    }
    let stats = n
        .node_get_volume_stats(stats_req(&id, &target_a))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stats.usage[0].total, 16 * MIB);
    assert!(
        !stats.volume_condition.as_ref().unwrap().abnormal,
        "{stats:?}"
    );

    // Unstaging while published is refused and changes nothing.
    let status = assert_code(
        n.node_unstage_volume(unstage_req(&id, &staging)).await,
        Code::Unavailable,
    );
    assert!(
        status.message().contains("in use") || status.message().contains("published"),
        "{}",
        status.message()
    );
    assert_eq!(loops_under(&env.pool_dir), vec![device]);

    n.node_unpublish_volume(unpublish_req(&id, &target_a))
        .await
        .unwrap();
    n.node_unpublish_volume(unpublish_req(&id, &target_a))
        .await
        .unwrap();
    assert!(!target_a.exists());

    // The data written through one publish is read through the next, here read-only.
    n.node_publish_volume(publish_req(&id, &staging, &target_b, block_cap(), true))
        .await
        .unwrap();
    let mut read_back = vec![0u8; data.len()];
    let dev = std::fs::File::open(&target_b).unwrap();
    dev.read_exact_at(&mut read_back, 3 << 20).unwrap();
    assert!(read_back == data, "data differs after republish");
    let table = fastvirt_csi::mountinfo::read().unwrap();
    assert!(
        fastvirt_csi::mountinfo::mounted_at(&table, &target_b)
            .unwrap()
            .read_only()
    );
    drop(dev);
    n.node_unpublish_volume(unpublish_req(&id, &target_b))
        .await
        .unwrap();

    n.node_unstage_volume(unstage_req(&id, &staging))
        .await
        .unwrap();
    n.node_unstage_volume(unstage_req(&id, &staging))
        .await
        .unwrap();
    assert!(loops_under(&env.pool_dir).is_empty());
    assert_code(
        n.node_publish_volume(publish_req(&id, &staging, &target_a, block_cap(), false))
            .await,
        Code::FailedPrecondition,
    );

    // The data survives a full unstage and stage cycle.
    n.node_stage_volume(stage_req(&id, &staging, block_cap()))
        .await
        .unwrap();
    n.node_publish_volume(publish_req(&id, &staging, &target_a, block_cap(), false))
        .await
        .unwrap();
    let mut again = vec![0u8; data.len()];
    std::fs::File::open(&target_a)
        .unwrap()
        .read_exact_at(&mut again, 3 << 20)
        .unwrap();
    assert!(again == data);
    n.node_unpublish_volume(unpublish_req(&id, &target_a))
        .await
        .unwrap();
    n.node_unstage_volume(unstage_req(&id, &staging))
        .await
        .unwrap();
    env.clients
        .controller
        .delete_volume(DeleteVolumeRequest {
            volume_id: id,
            secrets: Default::default(),
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn reader_only_access_mode_is_enforced_by_the_kernel() {
    require_host!();
    let mut env = TestEnv::start("reader-only").await;
    let writer = env.create(create_req("pvc-ro", 8 * MIB, block_cap())).await;
    let id = writer.volume_id;
    let (staging, target) = (env.path("staging"), env.path("target"));
    let reader = capability(
        Mode::SingleNodeReaderOnly,
        AccessType::Block(BlockVolume {}),
    );
    let n = &mut env.clients.node;
    n.node_stage_volume(stage_req(&id, &staging, reader.clone()))
        .await
        .unwrap();
    // The same volume cannot be staged for writing while it is attached read-only.
    assert_code(
        n.node_stage_volume(stage_req(&id, &staging, block_cap()))
            .await,
        Code::AlreadyExists,
    );
    n.node_publish_volume(publish_req(&id, &staging, &target, reader.clone(), false))
        .await
        .unwrap();
    // Depending on the kernel version the open or the write fails; either way nothing is written.
    let write = std::fs::OpenOptions::new()
        .write(true)
        .open(&target)
        .and_then(|dev| dev.write_at(&[1u8; 4096], 0));
    assert!(write.is_err(), "a reader-only volume must refuse writes");
    std::fs::File::open(&target).unwrap();
    n.node_unpublish_volume(unpublish_req(&id, &target))
        .await
        .unwrap();
    n.node_unstage_volume(unstage_req(&id, &staging))
        .await
        .unwrap();
    // A reader-only filesystem stage on an empty volume cannot create a filesystem, and says so.
    let ro_mount = capability(
        Mode::SingleNodeReaderOnly,
        mount_cap("ext4", &[]).access_type.unwrap(),
    );
    let status = assert_code(
        n.node_stage_volume(stage_req(&id, &staging, ro_mount))
            .await,
        Code::FailedPrecondition,
    );
    assert!(
        status.message().contains("read-only"),
        "{}",
        status.message()
    );
}

async fn mount_lifecycle(fs: &str) {
    let mut env = TestEnv::start(&format!("mount-{fs}")).await;
    let size = if fs == "xfs" { 320 * MIB } else { 32 * MIB };
    let cap = mount_cap(fs, &["noatime"]);
    let vol = env
        .create(create_req(&format!("pvc-{fs}"), size, cap.clone()))
        .await;
    let id = vol.volume_id.clone();
    let staging = env.path("staging/pv");
    let target = env.path("pods/p1/volumes/v");
    let target_ro = env.path("pods/p2/volumes/v");
    let n = &mut env.clients.node;

    n.node_stage_volume(stage_req(&id, &staging, cap.clone()))
        .await
        .unwrap();
    n.node_stage_volume(stage_req(&id, &staging, cap.clone()))
        .await
        .unwrap();
    let table = fastvirt_csi::mountinfo::read().unwrap();
    let staged =
        fastvirt_csi::mountinfo::mounted_at(&table, &staging).expect("staging path is mounted");
    assert_eq!(staged.fs_type, fs);
    assert_eq!(
        table.iter().filter(|e| e.mount_point == staging).count(),
        1,
        "stage twice must mount once"
    );
    // Staging the same path as another filesystem type is refused.
    let other = if fs == "xfs" { "ext4" } else { "xfs" };
    assert_code(
        n.node_stage_volume(stage_req(&id, &staging, mount_cap(other, &[])))
            .await,
        Code::AlreadyExists,
    );

    n.node_publish_volume(publish_req(&id, &staging, &target, cap.clone(), false))
        .await
        .unwrap();
    n.node_publish_volume(publish_req(&id, &staging, &target, cap.clone(), false))
        .await
        .unwrap();
    let table = fastvirt_csi::mountinfo::read().unwrap();
    let published = fastvirt_csi::mountinfo::mounted_at(&table, &target).unwrap();
    assert!(
        published.mount_options.iter().any(|o| o == "noatime"),
        "{:?}",
        published.mount_options
    );
    std::fs::write(
        target.join("hello.txt"),
        b"written through the first publish",
    )
    .unwrap();
    std::fs::File::open(target.join("hello.txt"))
        .unwrap()
        .sync_all()
        .unwrap();

    let stats = n
        .node_get_volume_stats(stats_req(&id, &target))
        .await
        .unwrap()
        .into_inner();
    let bytes = stats
        .usage
        .iter()
        .find(|u| u.unit == volume_usage::Unit::Bytes as i32)
        .unwrap();
    let inodes = stats
        .usage
        .iter()
        .find(|u| u.unit == volume_usage::Unit::Inodes as i32)
        .unwrap();
    assert!(
        bytes.total > 0 && bytes.total <= size && bytes.used > 0 && bytes.available > 0,
        "{bytes:?}"
    );
    assert!(inodes.total > 0 && inodes.used > 0, "{inodes:?}");
    assert!(!stats.volume_condition.unwrap().abnormal);

    n.node_publish_volume(publish_req(&id, &staging, &target_ro, cap.clone(), true))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(target_ro.join("hello.txt")).unwrap(),
        b"written through the first publish"
    );
    let err = std::fs::write(target_ro.join("nope.txt"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));

    assert_code(
        n.node_unstage_volume(unstage_req(&id, &staging)).await,
        Code::Unavailable,
    );
    assert!(
        is_mounted(&staging),
        "a refused unstage must leave the staging mount in place"
    );
    n.node_unpublish_volume(unpublish_req(&id, &target))
        .await
        .unwrap();
    n.node_unpublish_volume(unpublish_req(&id, &target_ro))
        .await
        .unwrap();
    assert!(!target.exists() && !target_ro.exists());
    n.node_unstage_volume(unstage_req(&id, &staging))
        .await
        .unwrap();
    n.node_unstage_volume(unstage_req(&id, &staging))
        .await
        .unwrap();
    assert!(!is_mounted(&staging));
    assert!(loops_under(&env.pool_dir).is_empty());

    // Staging again keeps the filesystem and its data: no second mkfs.
    n.node_stage_volume(stage_req(&id, &staging, cap.clone()))
        .await
        .unwrap();
    n.node_publish_volume(publish_req(&id, &staging, &target, cap.clone(), false))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(target.join("hello.txt")).unwrap(),
        b"written through the first publish"
    );
    n.node_unpublish_volume(unpublish_req(&id, &target))
        .await
        .unwrap();
    n.node_unstage_volume(unstage_req(&id, &staging))
        .await
        .unwrap();

    // A filesystem of the other type is never reformatted.
    let status = assert_code(
        n.node_stage_volume(stage_req(&id, &staging, mount_cap(other, &[])))
            .await,
        Code::FailedPrecondition,
    );
    assert!(status.message().contains(fs), "{}", status.message());
    assert!(
        loops_under(&env.pool_dir).is_empty(),
        "a failed stage must not leak its loop device"
    );
}

#[tokio::test]
async fn mount_volume_lifecycle_ext4() {
    require_host!();
    mount_lifecycle("ext4").await;
}

#[tokio::test]
async fn mount_volume_lifecycle_xfs() {
    require_host!();
    mount_lifecycle("xfs").await;
}

#[tokio::test]
async fn block_volume_with_data_is_not_formatted_by_a_mount_stage() {
    require_host!();
    let mut env = TestEnv::start("no-format").await;
    let vol = env
        .create(create_req("pvc-raw", 32 * MIB, block_cap()))
        .await;
    let id = vol.volume_id;
    let staging = env.path("staging");
    let target = env.path("target");
    let n = &mut env.clients.node;
    n.node_stage_volume(stage_req(&id, &staging, block_cap()))
        .await
        .unwrap();
    n.node_publish_volume(publish_req(&id, &staging, &target, block_cap(), false))
        .await
        .unwrap();
    // The consumer put swap space on its disk: a signature that is not a filesystem.
    let mkswap = std::process::Command::new("mkswap")
        .arg(&target)
        .output()
        .expect("mkswap from util-linux");
    assert!(mkswap.status.success(), "{mkswap:?}");
    n.node_unpublish_volume(unpublish_req(&id, &target))
        .await
        .unwrap();
    n.node_unstage_volume(unstage_req(&id, &staging))
        .await
        .unwrap();
    let status = assert_code(
        n.node_stage_volume(stage_req(&id, &staging, mount_cap("ext4", &[])))
            .await,
        Code::FailedPrecondition,
    );
    assert!(
        status.message().contains("refusing to format"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn bad_input_gets_spec_codes_and_touches_nothing_outside_the_pool() {
    require_host!();
    let mut env = TestEnv::start("bad-input").await;
    let long = "x".repeat(10 * 1024);
    let unknown = "fv.default.0123456789abcdef0123456789abcdef";
    let c = &mut env.clients.controller;
    for name in ["../../../../tmp/escape", "a/b", "..", "."] {
        let vol = c
            .create_volume(with_params(
                create_req(name, MIB, block_cap()),
                &[("thin", "true")],
            ))
            .await
            .unwrap()
            .into_inner()
            .volume
            .unwrap();
        assert!(vol.volume_id.starts_with("fv.default."));
    }
    assert_code(
        c.create_volume(create_req("nul\0name", MIB, block_cap()))
            .await,
        Code::InvalidArgument,
    );
    assert_code(
        c.create_volume(create_req(&long, MIB, block_cap())).await,
        Code::InvalidArgument,
    );
    assert_code(
        c.create_volume(with_params(
            create_req("v", MIB, block_cap()),
            &[(long.as_str(), "x")],
        ))
        .await,
        Code::InvalidArgument,
    );
    assert_code(
        c.create_volume(create_req("v", MIB, mount_cap("ext4", &["bind"])))
            .await,
        Code::InvalidArgument,
    );
    assert_code(
        c.create_volume(create_req("v", MIB, mount_cap("btrfs-not", &[])))
            .await,
        Code::InvalidArgument,
    );
    assert_code(
        c.create_volume(create_req("v", 0, VolumeCapability::default()))
            .await,
        Code::InvalidArgument,
    );
    // Every file the driver made is a volume file in the pool: 4 volumes, 2 files each.
    let pool_files = pool_files(&env.pool_dir);
    assert_eq!(pool_files.len(), 8, "{pool_files:?}");
    assert!(
        pool_files
            .iter()
            .all(|f| f.len() == 32 + 4 || f.len() == 32 + 5),
        "{pool_files:?}"
    );
    assert!(!Path::new("/tmp/escape").exists());

    let staging = env.path("staging");
    let target = env.path("target");
    let pool_dir = env.pool_dir.clone();
    let vol = env.create(create_req("real", MIB, block_cap())).await;
    let n = &mut env.clients.node;
    for id in [
        "",
        unknown,
        "garbage",
        "../../etc/passwd",
        &long,
        "fv.default.0123456789abcdef0123456789abcde\0",
    ] {
        let expected = if id.is_empty() {
            Code::InvalidArgument
        } else {
            Code::NotFound
        };
        assert_code(
            n.node_stage_volume(stage_req(id, &staging, block_cap()))
                .await,
            expected,
        );
        assert_code(
            n.node_publish_volume(publish_req(id, &staging, &target, block_cap(), false))
                .await,
            expected,
        );
        assert_code(
            n.node_unstage_volume(unstage_req(id, &staging)).await,
            expected,
        );
        assert_code(
            n.node_unpublish_volume(unpublish_req(id, &target)).await,
            expected,
        );
        assert_code(
            n.node_get_volume_stats(stats_req(id, &target)).await,
            expected,
        );
    }
    let id = vol.volume_id.as_str();
    for path in [
        "",
        "relative/path",
        "/a/../../etc",
        &format!("/{long}"),
        "/tmp/nul\0path",
    ] {
        let p = Path::new(path);
        assert_code(
            n.node_stage_volume(stage_req(id, p, block_cap())).await,
            Code::InvalidArgument,
        );
        assert_code(
            n.node_publish_volume(publish_req(id, &staging, p, block_cap(), false))
                .await,
            Code::InvalidArgument,
        );
        assert_code(
            n.node_unpublish_volume(unpublish_req(id, p)).await,
            Code::InvalidArgument,
        );
        assert_code(
            n.node_unstage_volume(unstage_req(id, p)).await,
            Code::InvalidArgument,
        );
        // A path that cannot hold the volume is where the volume is not (csi-sanity checks this).
        let stats_code = if path.is_empty() {
            Code::InvalidArgument
        } else {
            Code::NotFound
        };
        assert_code(n.node_get_volume_stats(stats_req(id, p)).await, stats_code);
    }
    assert_code(
        n.node_stage_volume(NodeStageVolumeRequest {
            volume_id: id.into(),
            staging_target_path: staging.display().to_string(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
    assert_code(
        n.node_get_volume_stats(stats_req(id, &staging.join("does-not-exist")))
            .await,
        Code::NotFound,
    );
    assert!(
        loops_under(&pool_dir).is_empty(),
        "refused requests must not attach anything"
    );
    // The driver is still alive and well after all of it.
    assert_eq!(
        env.clients
            .identity
            .probe(ProbeRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready,
        Some(true)
    );
    assert!(!env.log().contains("panicked"), "{}", env.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_on_one_volume_are_aborted() {
    require_host!();
    let mut env = TestEnv::start("concurrency").await;
    let cap = mount_cap("xfs", &[]);
    let vol = env
        .create(create_req("pvc-busy", 1 << 30, cap.clone()))
        .await;
    let staging = env.path("staging");
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let mut node = env.clients.node.clone();
            let req = stage_req(&vol.volume_id, &staging, cap.clone());
            tokio::spawn(async move { node.node_stage_volume(req).await })
        })
        .collect();
    let mut ok = 0;
    let mut aborted = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => ok += 1,
            Err(status) if status.code() == Code::Aborted => aborted += 1,
            Err(status) => panic!("unexpected {status:?}"),
        }
    }
    assert!(ok >= 1 && aborted >= 1, "ok={ok} aborted={aborted}");
    let table = fastvirt_csi::mountinfo::read().unwrap();
    assert_eq!(table.iter().filter(|e| e.mount_point == staging).count(), 1);
    assert_eq!(loops_under(&env.pool_dir).len(), 1);
    // Once the first call is done, a retry succeeds: ABORTED is transient.
    env.stage(stage_req(&vol.volume_id, &staging, cap.clone()))
        .await;
    env.unstage(unstage_req(&vol.volume_id, &staging)).await;
}

#[tokio::test]
async fn restart_after_kill9_recovers_attached_volumes() {
    require_host!();
    let mut env = TestEnv::start("restart").await;
    let block = env.create(create_req("pvc-b", 8 * MIB, block_cap())).await;
    let fs_cap = mount_cap("ext4", &[]);
    let fs = env
        .create(create_req("pvc-f", 16 * MIB, fs_cap.clone()))
        .await;
    let (b_staging, b_target) = (env.path("b/staging"), env.path("b/target"));
    let (f_staging, f_target) = (env.path("f/staging"), env.path("f/target"));
    let n = &mut env.clients.node;
    n.node_stage_volume(stage_req(&block.volume_id, &b_staging, block_cap()))
        .await
        .unwrap();
    n.node_publish_volume(publish_req(
        &block.volume_id,
        &b_staging,
        &b_target,
        block_cap(),
        false,
    ))
    .await
    .unwrap();
    n.node_stage_volume(stage_req(&fs.volume_id, &f_staging, fs_cap.clone()))
        .await
        .unwrap();
    n.node_publish_volume(publish_req(
        &fs.volume_id,
        &f_staging,
        &f_target,
        fs_cap.clone(),
        false,
    ))
    .await
    .unwrap();
    std::fs::write(f_target.join("before-crash"), b"kept").unwrap();

    env.crash_and_restart().await;
    assert!(
        env.log().contains("serving"),
        "the new driver logs its start"
    );
    let n = &mut env.clients.node;
    // The new process finds both volumes from the kernel's state: stats are healthy, and repeated
    // stage/publish calls are recognised as already done.
    for (id, path) in [(&block.volume_id, &b_target), (&fs.volume_id, &f_target)] {
        let stats = n
            .node_get_volume_stats(stats_req(id, path))
            .await
            .unwrap()
            .into_inner();
        assert!(!stats.volume_condition.unwrap().abnormal, "{id}");
    }
    n.node_stage_volume(stage_req(&block.volume_id, &b_staging, block_cap()))
        .await
        .unwrap();
    n.node_publish_volume(publish_req(
        &fs.volume_id,
        &f_staging,
        &f_target,
        fs_cap.clone(),
        false,
    ))
    .await
    .unwrap();
    assert_eq!(loops_under(&env.pool_dir).len(), 2);

    n.node_unpublish_volume(unpublish_req(&block.volume_id, &b_target))
        .await
        .unwrap();
    n.node_unstage_volume(unstage_req(&block.volume_id, &b_staging))
        .await
        .unwrap();
    n.node_unpublish_volume(unpublish_req(&fs.volume_id, &f_target))
        .await
        .unwrap();
    n.node_unstage_volume(unstage_req(&fs.volume_id, &f_staging))
        .await
        .unwrap();
    assert!(loops_under(&env.pool_dir).is_empty());
    assert!(!is_mounted(&f_staging));
}

#[tokio::test]
async fn stats_report_an_abnormal_condition_when_the_backing_file_is_gone() {
    require_host!();
    let mut env = TestEnv::start("condition").await;
    let vol = env.create(create_req("pvc-c", 8 * MIB, block_cap())).await;
    let (_staging, target) = env.stage_and_publish(&vol.volume_id, block_cap()).await;
    let key = vol.volume_id.rsplit('.').next().unwrap();
    std::fs::remove_file(env.pool_dir.join(format!("{key}.img"))).unwrap();
    let condition = volume_condition(&mut env.clients, &vol.volume_id, &target).await;
    assert!(condition.abnormal);
    assert!(
        condition.message.contains("backing file"),
        "{}",
        condition.message
    );
}

#[tokio::test]
async fn stats_report_filesystem_errors_and_a_replaced_device() {
    require_host!();
    let mut env = TestEnv::start("condition-fs").await;
    let cap = mount_cap("ext4", &[]);
    let vol = env
        .create(create_req("pvc-err", 32 * MIB, cap.clone()))
        .await;
    let (staging, target) = (env.path("staging"), env.path("target"));
    env.stage(stage_req(&vol.volume_id, &staging, cap.clone()))
        .await;
    env.unstage(unstage_req(&vol.volume_id, &staging)).await;
    // The kernel found errors on this filesystem at some point: its superblock counts them.
    let key = vol.volume_id.rsplit('.').next().unwrap();
    let image = env.pool_dir.join(format!("{key}.img"));
    let debugfs = std::process::Command::new("debugfs")
        .args(["-w", "-R", "ssv error_count 3"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(debugfs.status.success(), "{debugfs:?}");
    env.stage(stage_req(&vol.volume_id, &staging, cap.clone()))
        .await;
    env.publish(publish_req(
        &vol.volume_id,
        &staging,
        &target,
        cap.clone(),
        false,
    ))
    .await;
    let stats = env
        .clients
        .node
        .node_get_volume_stats(stats_req(&vol.volume_id, &target))
        .await
        .unwrap()
        .into_inner();
    let condition = stats.volume_condition.unwrap();
    assert!(
        condition.abnormal && condition.message.contains("3 errors"),
        "{condition:?}"
    );
    env.unpublish(unpublish_req(&vol.volume_id, &target)).await;
    env.unstage(unstage_req(&vol.volume_id, &staging)).await;

    // A block target that shows some other device is reported with what it really is.
    let block = env
        .create(create_req("pvc-blk", 8 * MIB, block_cap()))
        .await;
    let other = env
        .create(create_req("pvc-other", 8 * MIB, block_cap()))
        .await;
    let (s1, t1, s2, t2) = (
        env.path("s1"),
        env.path("t1"),
        env.path("s2"),
        env.path("t2"),
    );
    for (id, s, t) in [(&block.volume_id, &s1, &t1), (&other.volume_id, &s2, &t2)] {
        env.stage(stage_req(id, s, block_cap())).await;
        env.publish(publish_req(id, s, t, block_cap(), false)).await;
    }
    let stats = env
        .clients
        .node
        .node_get_volume_stats(stats_req(&block.volume_id, &t2))
        .await
        .unwrap()
        .into_inner();
    let condition = stats.volume_condition.unwrap();
    let other_key = other.volume_id.rsplit('.').next().unwrap();
    assert!(
        condition.abnormal && condition.message.contains(other_key),
        "{condition:?}"
    );
}

#[tokio::test]
async fn socket_handling_and_graceful_shutdown() {
    require_host!();
    let mut env = TestEnv::start("socket").await;
    let socket = env.driver.args().socket.clone();
    let mode = std::fs::metadata(&socket).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket must be private to root");
    // A second driver on the same live socket refuses to start and leaves the first one serving.
    let mut second_args = env.driver.args().clone();
    second_args.state_dir = env.path("state-2");
    second_args.pools = vec![("default".into(), env.path("pool-2"))];
    let mut second = fastvirt_csi::local::DriverProcess::spawn(second_args).unwrap();
    let exit = tokio::task::spawn_blocking(move || second.wait())
        .await
        .unwrap();
    assert!(!exit.unwrap().success());
    env.clients.identity.probe(ProbeRequest {}).await.unwrap();
    // SIGTERM stops it cleanly and removes the socket.
    let status = env.driver.terminate().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!socket.exists());
    // A stale socket left by a killed process is replaced on start.
    let mut args = env.driver.args().clone();
    args.state_dir = env.path("state-3");
    let (mut third, _) = fastvirt_csi::local::DriverProcess::start(args.clone())
        .await
        .unwrap();
    third.kill9().unwrap();
    assert!(socket.exists(), "kill -9 leaves the socket behind");
    let (_fourth, mut clients2) = fastvirt_csi::local::DriverProcess::start(args)
        .await
        .unwrap();
    clients2.identity.probe(ProbeRequest {}).await.unwrap();
    let mut buf = String::new();
    std::fs::File::open(env.path("driver.log"))
        .unwrap()
        .read_to_string(&mut buf)
        .unwrap();
    assert!(
        buf.contains("is served by another running process"),
        "{buf}"
    );
}

#[test]
fn a_read_only_pool_makes_its_volumes_abnormal() {
    require_host!();
    use fastvirt_csi::backend::Backend;
    use fastvirt_csi::backend::file::FilePool;
    use fastvirt_csi::ids::{PoolName, VolumeId};
    let root = test_root("ro-pool");
    let (dir, view) = (root.join("pool"), root.join("view"));
    std::fs::create_dir_all(&view).unwrap();
    let pool_name = PoolName::new("default").unwrap();
    let writable = FilePool::open(pool_name.clone(), &dir, 0).unwrap();
    let id = VolumeId::for_name(&pool_name, "pvc-ro").unwrap();
    let spec = fastvirt_csi::backend::CreateSpec {
        id: id.clone(),
        name: "pvc-ro".into(),
        capacity_bytes: 4 << 20,
        thin: true,
        source: None,
        qos: Default::default(),
        layout: Default::default(),
    };
    let record = writable.create(&spec).unwrap();
    assert_eq!(writable.abnormal(&record), None);
    // One process manages a pool at a time.
    let second = FilePool::open(pool_name.clone(), &dir, 0).unwrap_err();
    assert!(
        second.to_string().contains("another fastvirt-csi"),
        "{second}"
    );
    drop(writable);
    // The same pool seen through a read-only mount, as after the kernel remounts a failing disk.
    let flags = nix::mount::MsFlags::MS_BIND;
    nix::mount::mount(Some(&dir), &view, None::<&str>, flags, None::<&str>).unwrap();
    let read_only = nix::mount::MsFlags::MS_BIND
        | nix::mount::MsFlags::MS_REMOUNT
        | nix::mount::MsFlags::MS_RDONLY;
    nix::mount::mount(None::<&str>, &view, None::<&str>, read_only, None::<&str>).unwrap();
    let seen_read_only = FilePool::open(pool_name, &view, 0).unwrap();
    let message = seen_read_only.abnormal(&record).expect("abnormal");
    assert!(message.contains("read-only"), "{message}");
    assert!(seen_read_only.check_ready().is_err());
    cleanup_under(&root);
}

#[tokio::test]
async fn unpublish_leaves_what_is_not_the_volumes_alone() {
    require_host!();
    let mut env = TestEnv::start("unpublish-foreign").await;
    let vol = env.create(create_req("pvc-u", 8 * MIB, block_cap())).await;
    // Another filesystem mounted at the target path is not this volume's to unmount.
    let foreign = env.path("foreign-target");
    std::fs::create_dir_all(&foreign).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &foreign,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let status = assert_code(
        env.clients
            .node
            .node_unpublish_volume(unpublish_req(&vol.volume_id, &foreign))
            .await,
        Code::FailedPrecondition,
    );
    assert!(
        status.message().contains("left alone"),
        "{}",
        status.message()
    );
    assert!(is_mounted(&foreign));
    nix::mount::umount2(&foreign, nix::mount::MntFlags::MNT_DETACH).unwrap();
    // A file with content is never deleted.
    let file = env.path("file-target");
    std::fs::write(&file, b"precious").unwrap();
    assert_code(
        env.clients
            .node
            .node_unpublish_volume(unpublish_req(&vol.volume_id, &file))
            .await,
        Code::FailedPrecondition,
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"precious");
    // Publishing needs a staging path (the driver stages), a required field: INVALID_ARGUMENT.
    let mut no_staging = publish_req(
        &vol.volume_id,
        &env.path("s"),
        &env.path("t"),
        block_cap(),
        false,
    );
    no_staging.staging_target_path.clear();
    assert_code(
        env.clients.node.node_publish_volume(no_staging).await,
        Code::InvalidArgument,
    );
}

/// The driver runs in a container: after it restarts in a new mount namespace, sysfs shows the
/// files of loop devices it attached earlier by a path that no longer exists. Simulated here by
/// serving the pool through a bind mount that is replaced while the driver is down.
#[tokio::test]
async fn restart_in_a_new_mount_namespace_still_finds_attached_volumes() {
    require_host!();
    let root = test_root("new-namespace");
    let (real, view) = (root.join("real"), root.join("view"));
    std::fs::create_dir_all(&real).unwrap();
    std::fs::create_dir_all(&view).unwrap();
    let bind = |from: &Path, to: &Path| {
        nix::mount::mount(
            Some(from),
            to,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap()
    };
    bind(&real, &view);
    let mut env = TestEnv::start_with_flags(root.clone(), view.clone(), ON_THE_HOST_DISK).await;
    let vol = env.create(create_req("pvc-ns", 8 * MIB, block_cap())).await;
    let (staging, target) = (root.join("staging"), root.join("target"));
    env.stage(stage_req(&vol.volume_id, &staging, block_cap()))
        .await;
    env.publish(publish_req(
        &vol.volume_id,
        &staging,
        &target,
        block_cap(),
        false,
    ))
    .await;
    env.driver.kill9().unwrap();
    nix::mount::umount2(&view, nix::mount::MntFlags::MNT_DETACH).unwrap();
    bind(&real, &view);
    let key = vol.volume_id.rsplit('.').next().unwrap();
    let shown = fastvirt_csi::loopdev::all_bound()
        .into_iter()
        .find(|(_, b)| b.path.to_string_lossy().ends_with(&format!("{key}.img")))
        .unwrap()
        .1
        .path;
    assert!(
        !shown.starts_with(&view),
        "sysfs now shows {shown:?}, not a path below the pool"
    );
    let args = env.driver.args().clone();
    let (driver, clients) = fastvirt_csi::local::DriverProcess::start(args)
        .await
        .unwrap();
    env.driver = driver;
    env.clients = clients;
    // The volume is still recognised as attached: stage and publish are no-ops, delete is refused.
    env.stage(stage_req(&vol.volume_id, &staging, block_cap()))
        .await;
    let stats = env
        .clients
        .node
        .node_get_volume_stats(stats_req(&vol.volume_id, &target))
        .await
        .unwrap()
        .into_inner();
    let condition = stats.volume_condition.unwrap();
    assert!(!condition.abnormal, "{condition:?}");
    let delete = DeleteVolumeRequest {
        volume_id: vol.volume_id.clone(),
        secrets: Default::default(),
    };
    assert_code(
        env.clients.controller.delete_volume(delete.clone()).await,
        Code::FailedPrecondition,
    );
    env.unpublish(unpublish_req(&vol.volume_id, &target)).await;
    env.unstage(unstage_req(&vol.volume_id, &staging)).await;
    let still_bound = fastvirt_csi::loopdev::all_bound()
        .into_iter()
        .any(|(_, b)| b.path.to_string_lossy().ends_with(&format!("{key}.img")));
    assert!(
        !still_bound,
        "unstage must detach the device attached before the restart"
    );
    env.clients.controller.delete_volume(delete).await.unwrap();
}

#[tokio::test]
async fn pools_come_from_the_operators_pool_file() {
    require_host!();
    use fastvirt_api::pool_config::{PoolConfigFile, PoolEntry};
    let root = common::test_root("operator-pools");
    let pool_file = root.join("pools.yaml");
    let mut args = driver_args(&root, Vec::new());
    args.extra_args = vec!["--pool-config".into(), pool_file.to_str().unwrap().into()];
    args.extra_args
        .extend(fastvirt_csi::local::on_the_host_disk());

    // No BlockPool yet: the plugin runs, registers, and says why it cannot provision.
    let (mut driver, mut clients) = fastvirt_csi::local::DriverProcess::start(args.clone())
        .await
        .expect("starts without pools");
    clients
        .node
        .node_get_info(NodeGetInfoRequest {})
        .await
        .expect("NodeGetInfo");
    let status = assert_code(
        clients
            .controller
            .create_volume(create_req("v", MIB, block_cap()))
            .await,
        Code::FailedPrecondition,
    );
    assert!(
        status.message().contains("no pools"),
        "{}",
        status.message()
    );
    driver.kill9().unwrap();

    // The operator renders two pools, one for this node; the plugin restarts and serves it only.
    let file = PoolConfigFile {
        pools: vec![
            PoolEntry {
                name: "mine".into(),
                path: root.join("mine").to_str().unwrap().into(),
                nodes: Some(vec![common::NODE.into()]),
                overcommit_percent: None,
            },
            PoolEntry {
                name: "theirs".into(),
                path: root.join("theirs").to_str().unwrap().into(),
                nodes: Some(vec!["another-node".into()]),
                overcommit_percent: None,
            },
        ],
    };
    std::fs::write(&pool_file, file.render()).unwrap();
    let (mut driver, mut clients) = fastvirt_csi::local::DriverProcess::start(args)
        .await
        .expect("restarts");
    let mut mine = create_req("v", MIB, block_cap());
    mine.parameters.insert("pool".into(), "mine".into());
    let volume = clients
        .controller
        .create_volume(mine)
        .await
        .expect("CreateVolume in the node's pool")
        .into_inner()
        .volume
        .unwrap();
    assert!(volume.volume_id.starts_with("fv.mine."));
    let mut theirs = create_req("w", MIB, block_cap());
    theirs.parameters.insert("pool".into(), "theirs".into());
    assert!(clients.controller.create_volume(theirs).await.is_err());
    assert!(
        !root.join("theirs").exists(),
        "another node's pool is never created here"
    );
    driver.kill9().unwrap();
    common::cleanup_under(&root);
}

/// Argument errors come before existence (CSI "Error Scheme"): a request that lacks a required
/// field is INVALID_ARGUMENT even when its volume is unknown, as csi-sanity checks with made-up IDs.
#[tokio::test]
async fn missing_fields_are_invalid_before_unknown_volumes_are_not_found() {
    require_host!();
    let mut env = TestEnv::start("argument-order").await;
    let unknown = "no-such-volume";
    let staging = env.path("staging");
    let target = env.path("target");
    let node = &mut env.clients.node;

    let mut no_staging = stage_req(unknown, &staging, block_cap());
    no_staging.staging_target_path.clear();
    assert_code(
        node.node_stage_volume(no_staging).await,
        Code::InvalidArgument,
    );
    let mut no_cap = stage_req(unknown, &staging, block_cap());
    no_cap.volume_capability = None;
    assert_code(node.node_stage_volume(no_cap).await, Code::InvalidArgument);
    assert_code(
        node.node_stage_volume(stage_req(unknown, &staging, block_cap()))
            .await,
        Code::NotFound,
    );

    assert_code(
        node.node_unstage_volume(unstage_req(unknown, Path::new("")))
            .await,
        Code::InvalidArgument,
    );
    assert_code(
        node.node_unstage_volume(unstage_req(unknown, &staging))
            .await,
        Code::NotFound,
    );

    for strip in ["target", "staging", "capability"] {
        let mut req = publish_req(unknown, &staging, &target, block_cap(), false);
        match strip {
            "target" => req.target_path.clear(),
            "staging" => req.staging_target_path.clear(),
            _ => req.volume_capability = None,
        }
        let status = assert_code(node.node_publish_volume(req).await, Code::InvalidArgument);
        assert!(!status.message().is_empty());
    }
    assert_code(
        node.node_publish_volume(publish_req(unknown, &staging, &target, block_cap(), false))
            .await,
        Code::NotFound,
    );

    assert_code(
        node.node_unpublish_volume(unpublish_req(unknown, Path::new("")))
            .await,
        Code::InvalidArgument,
    );

    assert_code(
        node.node_get_volume_stats(stats_req(unknown, Path::new("")))
            .await,
        Code::InvalidArgument,
    );
    assert_code(
        node.node_expand_volume(NodeExpandVolumeRequest {
            volume_id: unknown.into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
    );
}

/// NodeGetVolumeStats on a path where the (existing) volume is not answers NOT_FOUND, whatever
/// the path looks like.
#[tokio::test]
async fn volume_stats_on_a_path_without_the_volume_is_not_found() {
    require_host!();
    let mut env = TestEnv::start("stats-path").await;
    let volume = env
        .create(create_req("stats-path", 16 << 20, block_cap()))
        .await;
    for path in ["some/relative/path", "/path/does/not/exist"] {
        assert_code(
            env.clients
                .node
                .node_get_volume_stats(stats_req(&volume.volume_id, Path::new(path)))
                .await,
            Code::NotFound,
        );
    }
}

/// A gRPC client that sends the socket path as `:authority` (kubelet's plugin watcher, grpcio,
/// grpc-java do) gets answers, not PROTOCOL_ERROR: raw HTTP/2 frames of GetPluginInfo, as such a
/// client writes them, against the real binary.
#[tokio::test]
async fn a_client_sending_the_socket_path_as_authority_is_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    require_host!();
    let env = TestEnv::start("authority").await;
    let socket = env.driver.args().socket.clone();
    let mut stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    use fastvirt_csi::grpc_authority::frame;
    let path = socket.display().to_string();
    let headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/csi.v1.Identity/GetPluginInfo"),
        (":authority", path.as_str()),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ];
    let block = fluke_hpack::Encoder::new()
        .encode(headers.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())));
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    out.extend(frame(0x1, 0x4, 1, &block));
    // An empty GetPluginInfoRequest: not compressed, length 0.
    out.extend(frame(0x0, 0x1, 1, &[0, 0, 0, 0, 0]));
    stream.write_all(&out).await.unwrap();

    let mut decoder = fluke_hpack::Decoder::new();
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let mut head = [0u8; 9];
        tokio::time::timeout_at(deadline, stream.read_exact(&mut head))
            .await
            .expect("the driver answers in time")
            .expect("the connection stays open");
        let len = usize::from(head[0]) << 16 | usize::from(head[1]) << 8 | usize::from(head[2]);
        let mut payload = vec![0u8; len];
        stream.read_exact(&mut payload).await.unwrap();
        match head[3] {
            0x3 => panic!("stream reset (RST_STREAM {:?})", payload),
            0x7 => panic!("connection refused (GOAWAY {:?})", payload),
            0x1 => {
                for (name, value) in decoder.decode(&payload).unwrap() {
                    seen.push((
                        String::from_utf8_lossy(&name).into_owned(),
                        String::from_utf8_lossy(&value).into_owned(),
                    ));
                }
                if head[4] & 0x1 != 0 {
                    break;
                }
            }
            _ => {}
        }
    }
    assert!(seen.contains(&(":status".into(), "200".into())), "{seen:?}");
    assert!(
        seen.contains(&("grpc-status".into(), "0".into())),
        "{seen:?}"
    );
}
