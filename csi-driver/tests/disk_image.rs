//! The `disk-image` layout on real pools: a volume is a directory holding one preallocated
//! `disk.img`, bind-mounted for its consumer, and the directory cannot hold more than the volume's
//! capacity. btrfs (quota groups) runs everywhere btrfs-progs is installed; XFS and ext4 need a
//! kernel with their quota support, and a pool without it refuses the layout with the way to
//! enable it. Needs root; skips otherwise.

mod common;

use common::*;
use fastvirt_csi::proto::volume_content_source::Type as SourceType;
use fastvirt_csi::proto::*;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use tonic::Code;

const DISK_IMAGE: &[(&str, &str)] = &[("layout", "disk-image")];

fn skip_reason() -> Option<String> {
    common::skip_reason().or_else(|| {
        let found = |tool: &str| {
            std::env::var_os("PATH").is_some_and(|paths| {
                std::env::split_paths(&paths).any(|dir| dir.join(tool).exists())
            })
        };
        (!found("mkfs.btrfs") || !found("btrfs"))
            .then(|| "btrfs-progs is not installed (run scripts/install-deps.sh)".to_owned())
    })
}

/// A driver whose pool is on a fresh btrfs with quotas on, as an administrator sets it up.
async fn btrfs_env(name: &str) -> (TestEnv, ScratchFs) {
    let root = test_root(name);
    let scratch = ScratchFs::new(&root, 3 << 30, "btrfs");
    scratch.enable_btrfs_quotas();
    let env = TestEnv::start_with_pool(root, scratch.mount_point.join("pool")).await;
    (env, scratch)
}

fn disk_image_req(name: &str, bytes: i64) -> CreateVolumeRequest {
    with_params(create_req(name, bytes, mount_cap("ext4", &[])), DISK_IMAGE)
}

fn volume_dir(env: &TestEnv, volume_id: &str) -> PathBuf {
    let key = volume_id.rsplit('.').next().unwrap();
    env.pool_dir.join(format!("{key}.d"))
}

/// Stages and publishes a disk-image volume the way kubelet does; returns the target.
async fn publish(env: &mut TestEnv, volume_id: &str, tag: &str) -> PathBuf {
    let staging = env.path(&format!("staging-{tag}"));
    let target = env.path(&format!("target-{tag}"));
    env.stage(stage_req(volume_id, &staging, mount_cap("ext4", &[])))
        .await;
    env.publish(publish_req(
        volume_id,
        &staging,
        &target,
        mount_cap("ext4", &[]),
        false,
    ))
    .await;
    target
}

async fn unpublish(env: &mut TestEnv, volume_id: &str, tag: &str) {
    let staging = env.path(&format!("staging-{tag}"));
    let target = env.path(&format!("target-{tag}"));
    env.unpublish(unpublish_req(volume_id, &target)).await;
    env.unstage(unstage_req(volume_id, &staging)).await;
    assert!(!is_mounted(&target) && !is_mounted(&staging));
}

fn open_direct(path: &Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap()
}

/// Writes 4 KiB-aligned `data` at `offset` with O_DIRECT, as QEMU with `cache=none` does.
fn write_direct(path: &Path, offset: u64, data: &[u8]) {
    let mut storage = vec![0u8; data.len() + 4096];
    let start = storage.as_ptr().align_offset(4096);
    let buf = &mut storage[start..start + data.len()];
    buf.copy_from_slice(data);
    let file = open_direct(path);
    file.write_all_at(buf, offset).unwrap();
    file.sync_all().unwrap();
}

fn read_back(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, offset)
        .unwrap();
    buf
}

/// Writes a new file in `dir` until the filesystem refuses; returns the bytes it took and the error.
fn fill(dir: &Path) -> (u64, std::io::Error) {
    let mut file = std::fs::File::create(dir.join("extra")).unwrap();
    let chunk = vec![0x5au8; 1 << 20];
    let mut written = 0u64;
    loop {
        // Bounded: the limit is a few hundred MiB at most here.
        assert!(
            written < 4 << 30,
            "the directory took 4 GiB without a limit"
        );
        match file.write_all(&chunk).and_then(|()| file.sync_data()) {
            Ok(()) => written += chunk.len() as u64,
            Err(error) => return (written, error),
        }
    }
}

fn is_out_of_space(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded
    ) || matches!(error.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT))
}

fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_image_volume_is_one_preallocated_image_its_directory_cannot_outgrow() {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIP disk-image on btrfs: {reason}");
        return;
    }
    let (mut env, _scratch) = btrfs_env("disk-image-btrfs").await;
    assert!(
        env.log()
            .contains("disk-image volumes are limited by btrfs"),
        "{}",
        env.log()
    );
    let volume = env.create(disk_image_req("vm-disk", 256 * MIB)).await;
    assert_eq!(volume.capacity_bytes, 256 * MIB);
    assert_eq!(
        volume.volume_context.get("layout").map(String::as_str),
        Some("disk-image")
    );
    let dir = volume_dir(&env, &volume.volume_id);
    let image = dir.join("disk.img");
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 256 << 20);
    assert!(allocated(&image) >= 256 << 20, "the image is preallocated");
    assert!(
        loops_under(&env.root)
            .iter()
            .all(|d| d.backing_file().is_none_or(|b| b.path != image)),
        "nothing is attached"
    );

    // Published: exactly the image, writable with O_DIRECT the way QEMU opens it.
    let target = publish(&mut env, &volume.volume_id, "a").await;
    let names: Vec<String> = std::fs::read_dir(&target)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["disk.img"]);
    let data = pattern(7);
    write_direct(&target.join("disk.img"), 8 << 20, &data);
    assert_eq!(
        read_back(&image, 8 << 20, data.len()),
        data,
        "the pool's image has the write"
    );

    // The directory holds no more than the capacity: the preallocated image fills it, and a file
    // beside it gets at most the metadata allowance (64 MiB at this size).
    let (extra, error) = fill(&target);
    assert!(is_out_of_space(&error), "{error}");
    assert!(extra <= 64 << 20, "{extra} bytes beside a full image");
    std::fs::remove_file(target.join("extra")).unwrap();

    let stats = env
        .clients
        .node
        .node_get_volume_stats(stats_req(&volume.volume_id, &target))
        .await
        .unwrap()
        .into_inner();
    let bytes = &stats.usage[0];
    assert_eq!(
        bytes.total,
        (256 + 64) * MIB,
        "capacity and the metadata allowance"
    );
    assert!(
        bytes.used >= 256 * MIB && bytes.used <= bytes.total,
        "{bytes:?}"
    );
    assert_eq!(bytes.available, bytes.total - bytes.used);
    assert!(!stats.volume_condition.unwrap().abnormal);

    // Expansion grows the image (preallocated again) and the limit, online, with nothing for
    // kubelet to do on the node.
    let expanded = env
        .clients
        .controller
        .controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: volume.volume_id.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: 384 * MIB,
                limit_bytes: 0,
            }),
            volume_capability: Some(mount_cap("ext4", &[])),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(expanded.capacity_bytes, 384 * MIB);
    assert!(!expanded.node_expansion_required);
    assert_eq!(
        std::fs::metadata(target.join("disk.img")).unwrap().len(),
        384 << 20
    );
    assert!(allocated(&image) >= 384 << 20);
    assert_eq!(read_back(&image, 8 << 20, data.len()), data);
    let (extra, error) = fill(&target);
    assert!(
        is_out_of_space(&error) && extra <= 64 << 20,
        "{extra}: {error}"
    );
    std::fs::remove_file(target.join("extra")).unwrap();

    // A snapshot, a restore into a larger volume and a clone: reflinks of the image, each its
    // own directory with its own limit.
    let snapshot = env
        .clients
        .controller
        .create_snapshot(snapshot_req("vm-snap", &volume.volume_id))
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert!(snapshot.ready_to_use);
    assert_eq!(snapshot.size_bytes, 384 * MIB);
    write_direct(&target.join("disk.img"), 8 << 20, &pattern(8));
    let mut restore = disk_image_req("vm-restored", 512 * MIB);
    restore.volume_content_source = Some(VolumeContentSource {
        r#type: Some(SourceType::Snapshot(
            volume_content_source::SnapshotSource {
                snapshot_id: snapshot.snapshot_id.clone(),
            },
        )),
    });
    let restored = env.create(restore).await;
    assert_eq!(restored.capacity_bytes, 512 * MIB);
    let restored_image = volume_dir(&env, &restored.volume_id).join("disk.img");
    assert_eq!(std::fs::metadata(&restored_image).unwrap().len(), 512 << 20);
    assert_eq!(
        read_back(&restored_image, 8 << 20, data.len()),
        data,
        "the data at the cut"
    );
    let mut clone = disk_image_req("vm-clone", 384 * MIB);
    clone.volume_content_source = Some(VolumeContentSource {
        r#type: Some(SourceType::Volume(volume_content_source::VolumeSource {
            volume_id: volume.volume_id.clone(),
        })),
    });
    let cloned = env.create(clone).await;
    let cloned_image = volume_dir(&env, &cloned.volume_id).join("disk.img");
    assert_eq!(read_back(&cloned_image, 8 << 20, data.len()), pattern(8));
    let target_b = publish(&mut env, &restored.volume_id, "b").await;
    let (extra, error) = fill(&target_b);
    assert!(
        is_out_of_space(&error) && extra <= 64 << 20,
        "{extra}: {error}"
    );
    unpublish(&mut env, &restored.volume_id, "b").await;

    // Deleting a published volume is refused; once unpublished it goes with its directory.
    assert_code(
        env.clients
            .controller
            .delete_volume(DeleteVolumeRequest {
                volume_id: volume.volume_id.clone(),
                ..Default::default()
            })
            .await,
        Code::FailedPrecondition,
    );
    unpublish(&mut env, &volume.volume_id, "a").await;
    for id in [&volume.volume_id, &restored.volume_id, &cloned.volume_id] {
        env.clients
            .controller
            .delete_volume(DeleteVolumeRequest {
                volume_id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(!volume_dir(&env, id).exists(), "{id}'s directory is gone");
    }
    env.clients
        .controller
        .delete_snapshot(DeleteSnapshotRequest {
            snapshot_id: snapshot.snapshot_id,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        pool_files(&env.pool_dir).is_empty(),
        "{:?}",
        pool_files(&env.pool_dir)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_driver_keeps_serving_disk_image_volumes_and_reclaims_leftovers() {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIP disk-image restart: {reason}");
        return;
    }
    let (mut env, _scratch) = btrfs_env("disk-image-restart").await;
    let volume = env.create(disk_image_req("vm-disk", 128 * MIB)).await;
    let target = publish(&mut env, &volume.volume_id, "a").await;
    write_direct(&target.join("disk.img"), 0, &pattern(3));
    // A create killed before its record was written leaves a directory with no record.
    let leftover = env.pool_dir.join(format!("{}.d", "ab".repeat(16)));
    std::fs::create_dir(&leftover).unwrap();
    std::fs::write(leftover.join("disk.img"), b"half made").unwrap();

    env.crash_and_restart().await;
    assert!(!leftover.exists(), "the leftover directory is reclaimed");
    // Publishing again is idempotent; the data is there; unpublishing still finds its mounts.
    let again = publish(&mut env, &volume.volume_id, "a").await;
    assert_eq!(again, target);
    assert_eq!(read_back(&target.join("disk.img"), 0, 1 << 20), pattern(3));
    unpublish(&mut env, &volume.volume_id, "a").await;
    env.clients
        .controller
        .delete_volume(DeleteVolumeRequest {
            volume_id: volume.volume_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(!volume_dir(&env, &volume.volume_id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_disk_image_requests_and_pools_without_quotas_are_refused() {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIP disk-image refusals: {reason}");
        return;
    }
    let (mut env, _scratch) = btrfs_env("disk-image-refusals").await;
    // Block against the layout, an unknown layout: INVALID_ARGUMENT, and nothing is made.
    let block = with_params(create_req("b", 64 * MIB, block_cap()), DISK_IMAGE);
    let status = assert_code(
        env.clients.controller.create_volume(block).await,
        Code::InvalidArgument,
    );
    assert!(
        status.message().contains("Filesystem"),
        "{}",
        status.message()
    );
    let bad = with_params(
        create_req("c", 64 * MIB, mount_cap("ext4", &[])),
        &[("layout", "qcow2")],
    );
    assert_code(
        env.clients.controller.create_volume(bad).await,
        Code::InvalidArgument,
    );
    assert!(pool_files(&env.pool_dir).is_empty());
    // Device volumes on btrfs overwrite in place too (no copy-on-write), as VM images want.
    let device = env.create(create_req("dev", 64 * MIB, block_cap())).await;
    let key = device.volume_id.rsplit('.').next().unwrap();
    let file = std::fs::File::open(env.pool_dir.join(format!("{key}.img"))).unwrap();
    assert!(
        rustix::fs::ioctl_getflags(&file)
            .unwrap()
            .contains(rustix::fs::IFlags::NOCOW),
        "a new device volume on btrfs is no-copy-on-write"
    );
    // The same name with another layout is another volume.
    env.create(disk_image_req("d", 64 * MIB)).await;
    assert_code(
        env.clients
            .controller
            .create_volume(create_req("d", 64 * MIB, mount_cap("ext4", &[])))
            .await,
        Code::AlreadyExists,
    );
    drop(env);

    // Pools whose filesystem cannot limit a directory: btrfs with quotas off, ext4 and XFS on
    // this kernel if it lacks their quota support (or without prjquota), the host's disk.
    let root = test_root("disk-image-no-quota");
    let mut cases: Vec<(String, PathBuf, Option<ScratchFs>)> = Vec::new();
    for fs in ["btrfs", "xfs", "ext4"] {
        let scratch = ScratchFs::new(&root, 1 << 30, fs);
        cases.push((
            fs.to_owned(),
            scratch.mount_point.join("pool"),
            Some(scratch),
        ));
    }
    for (fs, pool, _scratch) in cases {
        let env_root = root.join(format!("env-{fs}"));
        std::fs::create_dir_all(&env_root).unwrap();
        let mut env = TestEnv::start_with_pool(env_root, pool).await;
        let refused = env
            .clients
            .controller
            .create_volume(disk_image_req("v", 64 * MIB))
            .await;
        let status = assert_code(refused, Code::ResourceExhausted);
        let how = match fs.as_str() {
            "btrfs" => "btrfs quota enable",
            "xfs" => "prjquota",
            _ => "prjquota",
        };
        assert!(
            status.message().contains(how) || status.message().contains("no quota support"),
            "{fs}: {}",
            status.message()
        );
        let capacity = env
            .clients
            .controller
            .get_capacity(GetCapacityRequest {
                parameters: DISK_IMAGE
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            capacity.available_capacity, 0,
            "{fs}: no capacity for the layout"
        );
        // Device volumes are unaffected.
        env.create(create_req("dev", 64 * MIB, block_cap())).await;
    }
}
