//! The real binary's `/metrics` (`--metrics-port`), scraped over loopback while it serves: calls
//! by method and gRPC code with their latency, the pool's space and volume count, and a published
//! volume's writes from its loop device's counters, labelled with the PersistentVolume name.

mod common;

use common::scrape::{free_port, sample, scrape};
use common::*;
use fastvirt_csi::proto::*;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use tonic::Code;

#[tokio::test]
async fn calls_pools_and_volume_io_are_scraped_while_the_plugin_serves() {
    require_host!();
    let port = free_port();
    let port_flag = port.to_string();
    let mut flags: Vec<&str> = ON_THE_HOST_DISK.to_vec();
    flags.extend(["--metrics-port", &port_flag]);
    let root = test_root("metrics");
    let pool_dir = root.join("pool");
    let mut env = TestEnv::start_with_flags(root, pool_dir, &flags).await;

    let mut first = None;
    for _ in 0..50 {
        first = scrape(port);
        if first.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let first = first.expect("/metrics answers");
    assert_eq!(
        sample(&first, "fastvirt_csi_pool_healthy", &["pool=\"default\""]),
        Some(1.0),
        "{first}"
    );
    assert_eq!(
        sample(&first, "fastvirt_csi_pool_volumes", &["pool=\"default\""]),
        Some(0.0)
    );
    let capacity = sample(
        &first,
        "fastvirt_csi_pool_capacity_bytes",
        &["pool=\"default\""],
    )
    .expect("the pool's capacity");
    let free = sample(
        &first,
        "fastvirt_csi_pool_free_bytes",
        &["pool=\"default\""],
    )
    .unwrap();
    assert!(capacity > 0.0 && free <= capacity, "{capacity} {free}");

    // A refused call and a created volume, counted by method and code.
    let refused = env
        .clients
        .controller
        .create_volume(CreateVolumeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let volume = env
        .create(create_req("pvc-metrics", 16 * MIB, block_cap()))
        .await;
    let (_staging, target) = env.stage_and_publish(&volume.volume_id, block_cap()).await;
    // Four MiB written straight to the device.
    let mut device = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&target)
        .unwrap();
    let block = vec![0x5au8; 1 << 20];
    let mut aligned = vec![0u8; (1 << 20) + 4096];
    let offset = aligned.as_ptr().align_offset(4096);
    aligned[offset..offset + block.len()].copy_from_slice(&block);
    for _ in 0..4 {
        device
            .write_all(&aligned[offset..offset + block.len()])
            .unwrap();
    }
    drop(device);

    let text = scrape(port).expect("scraped again");
    assert_eq!(
        sample(
            &text,
            "fastvirt_csi_rpc_requests_total",
            &["method=\"CreateVolume\"", "code=\"InvalidArgument\""]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "fastvirt_csi_rpc_requests_total",
            &["method=\"CreateVolume\"", "code=\"OK\""]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "fastvirt_csi_rpc_duration_seconds_count",
            &["method=\"NodeStageVolume\""]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, "fastvirt_csi_pool_volumes", &["pool=\"default\""]),
        Some(1.0)
    );
    let written = sample(
        &text,
        "fastvirt_csi_volume_written_bytes_total",
        &["persistentvolume=\"pvc-metrics\""],
    )
    .expect("the volume's writes");
    assert!(written >= (4 << 20) as f64, "{written}: {text}");
    let writes = sample(
        &text,
        "fastvirt_csi_volume_write_ops_total",
        &["persistentvolume=\"pvc-metrics\""],
    )
    .unwrap();
    assert!(writes >= 1.0);
    assert_eq!(
        sample(
            &text,
            "fastvirt_csi_volume_capacity_bytes",
            &["persistentvolume=\"pvc-metrics\""]
        ),
        Some((16 * MIB) as f64)
    );
}
