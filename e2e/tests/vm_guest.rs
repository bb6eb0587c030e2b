//! A VM guest proves the data path: a volume published by fastvirt-csi is attached to a QEMU guest
//! exactly as KubeVirt's virt-launcher attaches a block PVC (the device) and a Filesystem PVC of
//! the disk-image layout (its `disk.img`, opened with the file driver); the guest writes a pattern
//! and powers off; the test unpublishes, publishes again, snapshots, clones and restores, and
//! checks the data in the volume, the snapshot and the clone, the last one from a second guest
//! boot.

mod common;

use fastvirt_csi::local::{Clients, DriverArgs, DriverProcess};
use fastvirt_csi::proto::volume_content_source::{
    SnapshotSource, Type as SourceType, VolumeSource,
};
use fastvirt_csi::proto::*;
use fastvirt_e2e::kubelet;
use fastvirt_e2e::vm::{self, GuestMode, PATTERN_OFFSET};
use sha2::{Digest, Sha256};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const GUEST_TIMEOUT: Duration = Duration::from_secs(240);
const SIZE: u64 = 64 << 20;

fn read_pattern_region(device: &Path) -> Vec<u8> {
    let mut buf = vec![0u8; 1 << 20];
    std::fs::File::open(device)
        .unwrap()
        .read_exact_at(&mut buf, PATTERN_OFFSET)
        .unwrap();
    buf
}

/// How a layout's volumes are asked for and where QEMU finds the disk in a published one.
struct Layout {
    name: &'static str,
    parameters: &'static [(&'static str, &'static str)],
    capability: fn() -> VolumeCapability,
    /// The disk QEMU opens in a publish target.
    disk: fn(&Path) -> PathBuf,
    /// The pool's filesystem (with what makes the layout work there).
    pool_fs: &'static str,
}

const DEVICE: Layout = Layout {
    name: "device",
    parameters: &[],
    capability: kubelet::block_capability,
    disk: |target| target.to_owned(),
    pool_fs: "xfs",
};

const DISK_IMAGE: Layout = Layout {
    name: "disk-image",
    parameters: &[("layout", "disk-image")],
    capability: || kubelet::mount_capability("ext4"),
    disk: |target| target.join("disk.img"),
    pool_fs: "btrfs",
};

async fn create_from(
    clients: &mut Clients,
    layout: &Layout,
    name: &str,
    source: Option<SourceType>,
) -> String {
    kubelet::create_as(
        clients,
        name,
        SIZE,
        layout.parameters,
        source,
        (layout.capability)(),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_writes_through_virtio_blk_and_data_survives_republish_snapshot_and_clone() {
    if let Some(reason) = common::skip_reason(&["qemu-system-x86_64", "mkfs.xfs"]) {
        eprintln!("SKIP guest_writes_through_virtio_blk: {reason}");
        return;
    }
    guest_on(&DEVICE).await;
}

/// The same for a disk-image volume, on a btrfs pool with quotas (this kernel has no XFS quotas).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_runs_from_a_disk_image_and_its_data_survives_republish_snapshot_and_clone() {
    if let Some(reason) = common::skip_reason(&["qemu-system-x86_64", "mkfs.btrfs", "btrfs"]) {
        eprintln!("SKIP guest_runs_from_a_disk_image: {reason}");
        return;
    }
    guest_on(&DISK_IMAGE).await;
}

async fn guest_on(layout: &Layout) {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cache = manifest.join("../target/vm-guest");
    let assets =
        vm::build_assets(&manifest.join("vm/build-guest.sh"), &cache).expect("guest assets build");

    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("vm-guest-{}", layout.name));
    fastvirt_csi::local::release_all_under(&work);
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).unwrap();
    // A pool with reflink, so the volume can be snapshotted and cloned while the VM has it.
    let pool = fastvirt_csi::local::ScratchFs::new(&work, 1 << 30, layout.pool_fs);
    if layout.pool_fs == "btrfs" {
        pool.enable_btrfs_quotas();
    }
    let args = DriverArgs {
        binary: common::driver_binary(),
        socket: work.join("csi.sock"),
        node_id: "vm-node".into(),
        mode: "all",
        pools: vec![("default".into(), pool.mount_point.join("pool"))],
        state_dir: work.join("state"),
        log_file: Some(work.join("driver.log")),
        extra_args: Vec::new(),
    };
    let (mut driver, mut clients) = DriverProcess::start(args).await.unwrap();
    let result = scenario(&mut clients, layout, &work, &assets, &cache).await;
    let _ = driver.terminate();
    fastvirt_csi::local::release_all_under(&work);
    drop(pool);
    result.unwrap();
}

async fn scenario(
    clients: &mut Clients,
    layout: &Layout,
    work: &Path,
    assets: &vm::GuestAssets,
    cache: &Path,
) -> Result<(), String> {
    let staging = |n: &str| work.join(format!("kubelet/staging/{n}"));
    let target = |n: &str, pod: &str| work.join(format!("kubelet/publish/{n}/{pod}"));
    let c = clients;
    let cap = layout.capability;
    let disk = create_from(c, layout, "vm-disk", None).await;
    kubelet::stage_as(c, &disk, &staging("disk"), cap())
        .await
        .unwrap();
    kubelet::publish_as(
        c,
        &disk,
        &staging("disk"),
        &target("disk", "launcher-1"),
        cap(),
    )
    .await
    .unwrap();
    let device = (layout.disk)(&target("disk", "launcher-1"));
    let logical = logical_block_size(&device);

    // Pick KVM only where it really runs a guest; the probe boots once on a scratch disk.
    let scratch = work.join("scratch.img");
    std::fs::File::create(&scratch)
        .unwrap()
        .set_len(SIZE)
        .unwrap();
    let accel = vm::choose_accel(assets, cache, &scratch, 512);
    eprintln!("guest accelerator: {accel:?}");

    let run = vm::boot(
        assets,
        &device,
        GuestMode::Write,
        accel,
        logical,
        GUEST_TIMEOUT,
    )
    .map_err(|e| e.to_string())?;
    eprintln!("first boot took {:?}", run.elapsed);
    let expect = |cond: bool, what: &str| {
        if cond {
            Ok(())
        } else {
            Err(format!("{what}; guest console:\n{}", run.console))
        }
    };
    expect(run.has("WRITE-OK"), "the guest did not report its write")?;
    expect(
        run.value("QUEUES").as_deref() == Some("2"),
        "virtio-blk should have 2 queues",
    )?;
    expect(
        run.value("SIZE-SECTORS") == Some((SIZE / 512).to_string()),
        "guest disk size",
    )?;
    expect(
        run.value("LOGICAL-BLOCK") == Some(logical.to_string()),
        "guest sees the volume's logical block size",
    )?;

    // Unpublish, publish again for another pod, and read the guest's data from the host.
    kubelet::unpublish(c, &disk, &target("disk", "launcher-1"))
        .await
        .unwrap();
    kubelet::publish_as(
        c,
        &disk,
        &staging("disk"),
        &target("disk", "launcher-2"),
        cap(),
    )
    .await
    .unwrap();
    let device = (layout.disk)(&target("disk", "launcher-2"));
    let pattern = vm::guest_pattern();
    if read_pattern_region(&device) != pattern {
        return Err("the data the guest wrote is not on the volume after republishing".into());
    }

    // Snapshot and clone the volume while it is published.
    let snapshot = c
        .controller
        .create_snapshot(CreateSnapshotRequest {
            name: "vm-snap".into(),
            source_volume_id: disk.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    let clone = create_from(
        c,
        layout,
        "vm-clone",
        Some(SourceType::Volume(VolumeSource {
            volume_id: disk.clone(),
        })),
    )
    .await;
    let restored = create_from(
        c,
        layout,
        "vm-restored",
        Some(SourceType::Snapshot(SnapshotSource {
            snapshot_id: snapshot.snapshot_id.clone(),
        })),
    )
    .await;
    // Later writes to the source reach neither the snapshot nor the clone.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&device)
        .unwrap()
        .write_all_at(&vec![0u8; 1 << 20], PATTERN_OFFSET)
        .unwrap();
    kubelet::unpublish(c, &disk, &target("disk", "launcher-2"))
        .await
        .unwrap();
    kubelet::unstage(c, &disk, &staging("disk")).await.unwrap();

    // The restored snapshot, checked from the host.
    kubelet::stage_as(c, &restored, &staging("restored"), cap())
        .await
        .unwrap();
    kubelet::publish_as(
        c,
        &restored,
        &staging("restored"),
        &target("restored", "pod"),
        cap(),
    )
    .await
    .unwrap();
    if read_pattern_region(&(layout.disk)(&target("restored", "pod"))) != pattern {
        return Err("the volume restored from the snapshot lacks the guest's data".into());
    }
    kubelet::unpublish(c, &restored, &target("restored", "pod"))
        .await
        .unwrap();
    kubelet::unstage(c, &restored, &staging("restored"))
        .await
        .unwrap();

    // The clone, checked by a second guest boot.
    kubelet::stage_as(c, &clone, &staging("clone"), cap())
        .await
        .unwrap();
    kubelet::publish_as(
        c,
        &clone,
        &staging("clone"),
        &target("clone", "launcher"),
        cap(),
    )
    .await
    .unwrap();
    let run = vm::boot(
        assets,
        &(layout.disk)(&target("clone", "launcher")),
        GuestMode::Verify,
        accel,
        logical,
        GUEST_TIMEOUT,
    )
    .map_err(|e| e.to_string())?;
    let expected: String = Sha256::digest(&pattern)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if run.value("SHA256") != Some(expected) {
        return Err(format!(
            "the clone's data as the guest reads it differs; console:\n{}",
            run.console
        ));
    }
    kubelet::unpublish(c, &clone, &target("clone", "launcher"))
        .await
        .unwrap();
    kubelet::unstage(c, &clone, &staging("clone"))
        .await
        .unwrap();
    for id in [&disk, &clone, &restored] {
        kubelet::delete(c, id).await.unwrap();
    }
    Ok(())
}

/// The volume's logical block size: the device's, or for an image file its filesystem's block
/// size (what KubeVirt's `blockSize.matchVolume` gives the guest), at most 4 KiB.
fn logical_block_size(device: &Path) -> u32 {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(device).unwrap();
    if !meta.file_type().is_block_device() {
        return meta.blksize().clamp(512, 4096) as u32;
    }
    let rdev = meta.rdev();
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    let sysfs = PathBuf::from(format!(
        "/sys/dev/block/{major}:{minor}/queue/logical_block_size"
    ));
    std::fs::read_to_string(sysfs)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}
