//! Per-volume I/O limits on the real binary, on this host's cgroups: a volume created with a
//! limit caps fio run from a pod's cgroup, ControllerModifyVolume changes the cap while fio runs,
//! a pod published later and a process that only holds the device open (KubeVirt's hot-plugged
//! disk, used by QEMU in another pod) get the limit too, `unlimited` removes it, and the metrics
//! show what is in force. The "pods" are cgroups named as kubelet names them, and the volume is
//! published where kubelet would publish it, under a kubelet directory of the test's own.

mod common;

use common::scrape::{free_port, sample, scrape};
use common::*;
use fastvirt_csi::local::ScratchFs;
use fastvirt_csi::local::pod_cgroups::{
    PodCgroups, block_publish_path, mount_publish_path, spawn_in,
};
use fastvirt_csi::proto::*;
use fastvirt_csi::qos::QosLimits;
use fastvirt_csi::qos::cgroup::DeviceNumber;
use fastvirt_csi::qos::consumers::Hierarchies;
use std::collections::HashMap;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const PV: &str = "pvc-qos-0001";
const POD_A: &str = "0a0a0a0a-1111-4222-8333-444444444401";
const POD_B: &str = "0b0b0b0b-1111-4222-8333-444444444402";
const POD_C: &str = "0c0c0c0c-1111-4222-8333-444444444403";
const POD_D: &str = "0d0d0d0d-1111-4222-8333-444444444404";
const POD_E: &str = "0e0e0e0e-1111-4222-8333-444444444405";
const POD_F: &str = "0f0f0f0f-1111-4222-8333-444444444406";
const IMAGE_PV: &str = "pvc-qos-image-0001";

/// A process in `pod` that holds `path` open for 30 s, as QEMU holds a hot-plugged disk.
fn hold_open(pod: &PodCgroups, path: &Path) -> std::process::Child {
    spawn_in(
        pod,
        "sh",
        &[
            "-c".into(),
            "exec 3<\"$0\"; exec sleep 30".into(),
            path.display().to_string(),
        ],
    )
}

fn fio_available() -> bool {
    Command::new("fio")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// 4 KiB random reads against `device_path` for `seconds`, with the IOPS of every half second in
/// `<log_prefix>_iops.1.log`.
fn fio_args(device_path: &Path, seconds: u32, log_prefix: &Path) -> Vec<String> {
    vec![
        "--name=qos".into(),
        format!("--filename={}", device_path.display()),
        "--rw=randread".into(),
        "--bs=4k".into(),
        "--direct=1".into(),
        // Submitted from the process itself, so the I/O is counted in its cgroup.
        "--ioengine=libaio".into(),
        "--iodepth=16".into(),
        format!("--runtime={seconds}"),
        "--time_based".into(),
        format!("--write_iops_log={}", log_prefix.display()),
        "--log_avg_msec=500".into(),
        "--output-format=json".into(),
    ]
}

/// (milliseconds since fio started, IOPS over the window ending there).
fn iops_log(log_prefix: &Path) -> Vec<(u64, f64)> {
    let path = PathBuf::from(format!("{}_iops.1.log", log_prefix.display()));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(',').map(str::trim);
            let time = fields.next()?.parse().ok()?;
            let value = fields.next()?.parse().ok()?;
            Some((time, value))
        })
        .collect()
}

fn median(mut values: Vec<f64>) -> f64 {
    assert!(!values.is_empty(), "no samples");
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Polls `check` every 100 ms for up to 10 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn read_iops(value: u64) -> QosLimits {
    QosLimits {
        read_iops: Some(value),
        ..QosLimits::default()
    }
}

/// Where kubelet publishes the test's volume for a pod.
fn block_target(kubelet: &Path, uid: &str) -> PathBuf {
    block_publish_path(kubelet, PV, uid)
}

#[tokio::test]
async fn a_limit_caps_fio_and_a_modify_changes_the_cap_while_it_runs() {
    require_host!();
    if !fio_available() {
        eprintln!("SKIP qos: fio is not installed (run scripts/install-deps.sh)");
        return;
    }
    let hierarchies = Hierarchies::discover(Path::new(CGROUP_ROOT));
    if hierarchies.0.is_empty() {
        eprintln!(
            "SKIP qos: no cgroup hierarchy here can throttle block I/O (no v1 blkio, no io controller in cgroup v2)"
        );
        return;
    }
    eprintln!("throttling hierarchies: {:?}", hierarchies.0);
    let port = free_port();
    let port_flag = port.to_string();
    let root = test_root("qos");
    let kubelet = root.join("kubelet");
    let kubelet_flag = kubelet.display().to_string();
    let mut flags: Vec<&str> = ON_THE_HOST_DISK.to_vec();
    flags.extend([
        "--metrics-port",
        &port_flag,
        "--kubelet-dir",
        &kubelet_flag,
        "--cgroup-root",
        CGROUP_ROOT,
    ]);
    let pool_dir = root.join("pool");
    let mut env = TestEnv::start_with_flags(root, pool_dir, &flags).await;

    // The StorageClass says 400, the VolumeAttributesClass 200: the class the PVC names wins.
    let mut create = with_params(
        create_req(PV, 256 * MIB, block_cap()),
        &[("readIOPS", "400"), ("thin", "true")],
    );
    create.mutable_parameters = params(&[("readIOPS", "200")]);
    let volume = env.create(create).await;
    let id = volume.volume_id.clone();

    // Bad values are refused before anything changes.
    for bad in [
        params(&[("readIOPS", "0")]),
        params(&[("writeBPS", "lots")]),
        params(&[("noSuchLimit", "1")]),
    ] {
        let status = env
            .clients
            .controller
            .controller_modify_volume(ControllerModifyVolumeRequest {
                volume_id: id.clone(),
                mutable_parameters: bad.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{bad:?}");
    }

    let pod_a = PodCgroups::create(&hierarchies, "qos-a", POD_A);
    let staging = env.path("staging");
    env.stage(stage_req(&id, &staging, block_cap())).await;
    let target_a = block_target(&kubelet, POD_A);
    env.publish(publish_req(&id, &staging, &target_a, block_cap(), false))
        .await;
    let meta = std::fs::metadata(&target_a).unwrap();
    assert!(meta.file_type().is_block_device());
    let device = DeviceNumber::from_rdev(meta.rdev());

    eventually("the limit reaches pod A's cgroups", || {
        pod_a.limits(device).iter().all(|l| *l == read_iops(200))
    })
    .await;

    // fio for 8 s under 200 IOPS; 3 s in, the class changes to 800.
    let log_prefix = env.path("fio");
    let started = Instant::now();
    let fio = spawn_in(&pod_a, "fio", &fio_args(&target_a, 8, &log_prefix));
    tokio::time::sleep(Duration::from_secs(3)).await;
    env.clients
        .controller
        .controller_modify_volume(ControllerModifyVolumeRequest {
            volume_id: id.clone(),
            mutable_parameters: params(&[("readIOPS", "800"), ("csi.storage.k8s.io/pv/name", PV)]),
            ..Default::default()
        })
        .await
        .expect("ControllerModifyVolume");
    eventually("the new limit reaches pod A's cgroups", || {
        pod_a.limits(device).iter().all(|l| *l == read_iops(800))
    })
    .await;
    let changed_ms = started.elapsed().as_millis() as u64;
    let output = fio.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "fio: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let log = iops_log(&log_prefix);
    // Whole windows only, clear of start-up and of the change (the log's clock starts with fio).
    let before: Vec<f64> = log
        .iter()
        .filter(|(t, _)| (1000..=2500).contains(t))
        .map(|(_, v)| *v)
        .collect();
    let after: Vec<f64> = log
        .iter()
        .filter(|(t, _)| *t >= changed_ms + 1000 && *t <= 7500)
        .map(|(_, v)| *v)
        .collect();
    let (before, after) = (median(before), median(after));
    eprintln!("fio under the limit: {before:.0} IOPS at 200, {after:.0} IOPS at 800; log {log:?}");
    assert!(
        (160.0..=230.0).contains(&before),
        "{before:.0} IOPS under a 200 IOPS limit"
    );
    assert!(
        (640.0..=920.0).contains(&after),
        "{after:.0} IOPS under an 800 IOPS limit"
    );

    // A pod published later gets the limit at publish, before its containers run.
    let pod_c = PodCgroups::create(&hierarchies, "qos-c", POD_C);
    let target_c = block_target(&kubelet, POD_C);
    env.publish(publish_req(&id, &staging, &target_c, block_cap(), false))
        .await;
    eventually("the limit reaches pod C, published later", || {
        pod_c.limits(device).iter().all(|l| *l == read_iops(800))
    })
    .await;

    // A process of another pod that holds the device open without kubelet publishing the volume
    // for its pod: QEMU in virt-launcher with a hot-plugged disk.
    let pod_b = PodCgroups::create(&hierarchies, "qos-b", POD_B);
    let device_node = std::fs::canonicalize(format!("/sys/dev/block/{device}"))
        .ok()
        .and_then(|sys| sys.file_name().map(|n| PathBuf::from("/dev").join(n)))
        .expect("the loop device's node");
    let mut holder = hold_open(&pod_b, &device_node);
    eventually(
        "the limit reaches the pod that holds the device open",
        || pod_b.limits(device).iter().all(|l| *l == read_iops(800)),
    )
    .await;

    // The limits in force, as the metrics show them.
    let volume_label = format!("persistentvolume=\"{PV}\"");
    let text = scrape(port).expect("/metrics answers");
    assert_eq!(
        sample(
            &text,
            "fastvirt_csi_volume_qos_limit",
            &[&volume_label, "limit=\"read_iops\""]
        ),
        Some(800.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "fastvirt_csi_volume_qos_limit",
            &[&volume_label, "limit=\"write_iops\""]
        ),
        None,
        "an unset limit has no sample"
    );
    let cgroups = sample(&text, "fastvirt_csi_volume_qos_cgroups", &[&volume_label]).unwrap();
    assert!(
        cgroups >= 3.0 * hierarchies.0.len() as f64,
        "{cgroups} cgroups carry the limits: {text}"
    );

    // `unlimited` removes the limit everywhere.
    env.clients
        .controller
        .controller_modify_volume(ControllerModifyVolumeRequest {
            volume_id: id.clone(),
            mutable_parameters: params(&[("readIOPS", "unlimited")]),
            ..Default::default()
        })
        .await
        .expect("ControllerModifyVolume");
    eventually("the limit is gone from every pod", || {
        [&pod_a, &pod_b, &pod_c]
            .iter()
            .all(|pod| pod.limits(device).iter().all(QosLimits::is_unlimited))
    })
    .await;
    let text = scrape(port).expect("/metrics answers");
    assert_eq!(
        sample(&text, "fastvirt_csi_volume_qos_cgroups", &[&volume_label]),
        None,
        "a volume without limits is not listed: {text}"
    );

    let _ = holder.kill();
    let _ = holder.wait();
    for target in [&target_a, &target_c] {
        env.unpublish(unpublish_req(&id, target)).await;
    }
    env.unstage(unstage_req(&id, &staging)).await;
    env.clients
        .controller
        .delete_volume(DeleteVolumeRequest {
            volume_id: id,
            ..Default::default()
        })
        .await
        .expect("DeleteVolume");
}

/// A disk-image volume has no device of its own: its limits go on the pool's disk, in the cgroups
/// of the pod it is published for and of a pod whose process holds its `disk.img` open, and fio
/// on the image runs at the limit. The pool is btrfs with quotas on a loop device (the "disk").
#[tokio::test]
async fn a_disk_image_volume_is_limited_on_the_pools_disk() {
    require_host!();
    if !fio_available() {
        eprintln!("SKIP qos disk-image: fio is not installed (run scripts/install-deps.sh)");
        return;
    }
    if Command::new("mkfs.btrfs")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "SKIP qos disk-image: btrfs-progs is not installed (run scripts/install-deps.sh)"
        );
        return;
    }
    let hierarchies = Hierarchies::discover(Path::new(CGROUP_ROOT));
    if hierarchies.0.is_empty() {
        eprintln!("SKIP qos disk-image: no cgroup hierarchy here can throttle block I/O");
        return;
    }
    let root = test_root("qos-disk-image");
    let scratch = ScratchFs::on_disk(&root, 1 << 30, "btrfs");
    scratch.enable_btrfs_quotas();
    let kubelet = root.join("kubelet");
    let kubelet_flag = kubelet.display().to_string();
    let flags = ["--kubelet-dir", &kubelet_flag, "--cgroup-root", CGROUP_ROOT];
    let mut env = TestEnv::start_with_flags(root, scratch.mount_point.join("pool"), &flags).await;
    let cap = mount_cap("ext4", &[]);
    let mut create = with_params(
        create_req(IMAGE_PV, 128 * MIB, cap.clone()),
        &[("layout", "disk-image")],
    );
    create.mutable_parameters = params(&[("readIOPS", "200")]);
    let id = env.create(create).await.volume_id;

    // The pool's disk: the loop device under the scratch filesystem.
    let table = fastvirt_csi::mountinfo::read().unwrap();
    let source = &fastvirt_csi::mountinfo::mounted_at(&table, &scratch.mount_point)
        .expect("the scratch filesystem")
        .source;
    let device = DeviceNumber::from_rdev(std::fs::metadata(source).unwrap().rdev());

    let pod_d = PodCgroups::create(&hierarchies, "qos-d", POD_D);
    let staging = env.path("staging");
    env.stage(stage_req(&id, &staging, cap.clone())).await;
    let target = mount_publish_path(&kubelet, IMAGE_PV, POD_D);
    env.publish(publish_req(&id, &staging, &target, cap.clone(), false))
        .await;
    let image = target.join("disk.img");
    eventually(
        "the limit reaches the publishing pod's cgroups on the pool's disk",
        || pod_d.limits(device).iter().all(|l| *l == read_iops(200)),
    )
    .await;

    // Written first, from outside the pod: reads of preallocated, never-written extents are
    // answered without any I/O, so nothing would be throttled.
    let filled = Command::new("fio")
        .args([
            "--name=fill",
            &format!("--filename={}", image.display()),
            "--rw=write",
            "--bs=1M",
            "--direct=1",
            "--size=128M",
            "--output-format=json",
        ])
        .output()
        .unwrap();
    assert!(
        filled.status.success(),
        "{}",
        String::from_utf8_lossy(&filled.stderr)
    );
    let log_prefix = env.path("fio-image");
    let fio = spawn_in(&pod_d, "fio", &fio_args(&image, 4, &log_prefix));
    let output = fio.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "fio: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let windows: Vec<f64> = iops_log(&log_prefix)
        .iter()
        .filter(|(t, _)| (1000..=3500).contains(t))
        .map(|(_, v)| *v)
        .collect();
    let achieved = median(windows);
    eprintln!("fio on the disk image under a 200 IOPS limit: {achieved:.0} IOPS");
    assert!(
        (160.0..=230.0).contains(&achieved),
        "{achieved:.0} IOPS under a 200 IOPS limit"
    );

    // A process of another pod holding the image open (a hot-plugged disk) gets it too; a pod
    // holding another file on the same device (in the volume's own directory, so a match by
    // device alone would take it) does not.
    let pod_f = PodCgroups::create(&hierarchies, "qos-f", POD_F);
    let other_file = target.join("other");
    std::fs::write(&other_file, b"not the volume").unwrap();
    let mut bystander = hold_open(&pod_f, &other_file);
    let pod_e = PodCgroups::create(&hierarchies, "qos-e", POD_E);
    let mut holder = hold_open(&pod_e, &image);
    eventually(
        "the limit reaches the pod that holds the image open",
        || pod_e.limits(device).iter().all(|l| *l == read_iops(200)),
    )
    .await;
    // Pod F's holder started first, so the pass that reached pod E looked at it too.
    assert!(
        pod_f.limits(device).iter().all(QosLimits::is_unlimited),
        "a pod holding another file of the pool's filesystem got the volume's limit"
    );
    let _ = bystander.kill();
    let _ = bystander.wait();
    std::fs::remove_file(&other_file).unwrap();

    env.clients
        .controller
        .controller_modify_volume(ControllerModifyVolumeRequest {
            volume_id: id.clone(),
            mutable_parameters: params(&[("readIOPS", "unlimited")]),
            ..Default::default()
        })
        .await
        .expect("ControllerModifyVolume");
    eventually("the limit is gone from both pods", || {
        [&pod_d, &pod_e]
            .iter()
            .all(|pod| pod.limits(device).iter().all(QosLimits::is_unlimited))
    })
    .await;
    let _ = holder.kill();
    let _ = holder.wait();
    env.unpublish(unpublish_req(&id, &target)).await;
    env.unstage(unstage_req(&id, &staging)).await;
    env.clients
        .controller
        .delete_volume(DeleteVolumeRequest {
            volume_id: id,
            ..Default::default()
        })
        .await
        .expect("DeleteVolume");
    drop(env);
    drop(scratch);
}
