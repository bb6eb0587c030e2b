//! The control path as kubelet drives it: create, stage, publish, unpublish, unstage, delete.

use crate::kubelet;
use crate::stats::percentile;
use fastvirt_csi::local::Clients;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

pub const RPCS: [&str; 6] = [
    "CreateVolume",
    "NodeStageVolume",
    "NodePublishVolume",
    "NodeUnpublishVolume",
    "NodeUnstageVolume",
    "DeleteVolume",
];

/// Latency of one RPC over all volumes, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct RpcLatency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LifecycleResult {
    pub volumes: usize,
    pub volume_size_bytes: u64,
    pub volumes_per_second: f64,
    pub rpcs: BTreeMap<String, RpcLatency>,
    /// p99 of NodePublishVolume + NodeUnpublishVolume per volume.
    pub publish_unpublish_p99_ms: f64,
}

/// Runs `count` full lifecycles of block volumes one after another, as a node with one pod at a time would.
pub async fn run(
    clients: &mut Clients,
    work_dir: &Path,
    count: usize,
    size_bytes: u64,
) -> anyhow::Result<LifecycleResult> {
    let mut samples: BTreeMap<&str, Vec<f64>> = RPCS
        .iter()
        .map(|r| (*r, Vec::with_capacity(count)))
        .collect();
    let mut publish_pairs = Vec::with_capacity(count);
    let started = Instant::now();
    for i in 0..count {
        let staging = work_dir.join(format!("kubelet/staging/lifecycle-{i}"));
        let target = work_dir.join(format!("kubelet/publish/lifecycle-{i}/pod"));
        let mut timed = |rpc: &'static str, at: Instant| {
            samples
                .get_mut(rpc)
                .expect("known rpc")
                .push(at.elapsed().as_secs_f64() * 1000.0)
        };

        let t = Instant::now();
        let id = kubelet::create(clients, &format!("bench-lifecycle-{i}"), size_bytes).await?;
        timed("CreateVolume", t);

        let t = Instant::now();
        kubelet::stage(clients, &id, &staging).await?;
        timed("NodeStageVolume", t);

        let publish_started = Instant::now();
        kubelet::publish(clients, &id, &staging, &target).await?;
        timed("NodePublishVolume", publish_started);
        let publish_ms = publish_started.elapsed().as_secs_f64() * 1000.0;

        let t = Instant::now();
        kubelet::unpublish(clients, &id, &target).await?;
        timed("NodeUnpublishVolume", t);
        publish_pairs.push(publish_ms + t.elapsed().as_secs_f64() * 1000.0);

        let t = Instant::now();
        kubelet::unstage(clients, &id, &staging).await?;
        timed("NodeUnstageVolume", t);

        let t = Instant::now();
        kubelet::delete(clients, &id).await?;
        timed("DeleteVolume", t);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rpcs = samples
        .into_iter()
        .map(|(rpc, s)| {
            let latency = RpcLatency {
                p50_ms: percentile(&s, 50.0).unwrap_or(0.0),
                p99_ms: percentile(&s, 99.0).unwrap_or(0.0),
                max_ms: percentile(&s, 100.0).unwrap_or(0.0),
            };
            (rpc.to_owned(), latency)
        })
        .collect();
    Ok(LifecycleResult {
        volumes: count,
        volume_size_bytes: size_bytes,
        volumes_per_second: count as f64 / elapsed,
        rpcs,
        publish_unpublish_p99_ms: percentile(&publish_pairs, 99.0).unwrap_or(0.0),
    })
}
