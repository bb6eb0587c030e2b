//! Snapshot, clone and restore times of fully written volumes: an XFS pool with reflink (instant)
//! against the copy fallback on an ext4 pool, measured in the same run.

use crate::fio;
use crate::kubelet;
use crate::stats::median;
use fastvirt_csi::local::Clients;
use fastvirt_csi::proto::volume_content_source::{
    SnapshotSource, Type as SourceType, VolumeSource,
};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

pub const DOCS_START: &str = "<!-- fastvirt-bench:snapshots:start -->";
pub const DOCS_END: &str = "<!-- fastvirt-bench:snapshots:end -->";
/// Target for reflink pools, whatever the size.
pub const TARGET_MS: f64 = 50.0;

/// Median times of one pool and size, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Timing {
    pub snapshot_ms: f64,
    /// The first snapshot of a freshly written volume, which pays for committing its extents.
    pub first_snapshot_ms: f64,
    pub clone_ms: f64,
    pub restore_ms: f64,
    pub rounds: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct SizeResult {
    pub size_gib: u64,
    pub reflink: Timing,
    pub copy: Timing,
}

/// Measures one pool: for each size, a volume is created, published and fully written, then
/// snapshotted, cloned and restored `rounds` times.
pub async fn measure_pool(
    clients: &mut Clients,
    work: &Path,
    pool: &str,
    size_gib: u64,
    rounds: u32,
    engine: &str,
) -> anyhow::Result<Timing> {
    let size = size_gib << 30;
    let name = format!("snapbench-{pool}-{size_gib}g");
    let id = kubelet::create_with(clients, &name, size, &[("pool", pool)], None).await?;
    let staging = work.join(format!("kubelet/staging/{name}"));
    let target = work.join(format!("kubelet/publish/{name}/pod"));
    kubelet::stage(clients, &id, &staging).await?;
    kubelet::publish(clients, &id, &staging, &target).await?;
    fio::fill(&target, size, engine)?;
    // Detached, as a stopped VM's disk: the copy pool can only snapshot a volume nobody writes.
    kubelet::unpublish(clients, &id, &target).await?;
    kubelet::unstage(clients, &id, &staging).await?;
    let (mut snapshots, mut clones, mut restores) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let t = Instant::now();
        let snapshot = kubelet::snapshot(clients, &format!("{name}-snap-{round}"), &id).await?;
        snapshots.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let clone = kubelet::create_with(
            clients,
            &format!("{name}-clone-{round}"),
            size,
            &[("pool", pool)],
            Some(SourceType::Volume(VolumeSource {
                volume_id: id.clone(),
            })),
        )
        .await?;
        clones.push(t.elapsed().as_secs_f64() * 1000.0);
        // Each copy is deleted before the next is made: the copy pool needs room for one at a time.
        kubelet::delete(clients, &clone).await?;
        let t = Instant::now();
        let restored = kubelet::create_with(
            clients,
            &format!("{name}-restore-{round}"),
            size,
            &[("pool", pool)],
            Some(SourceType::Snapshot(SnapshotSource {
                snapshot_id: snapshot.clone(),
            })),
        )
        .await?;
        restores.push(t.elapsed().as_secs_f64() * 1000.0);
        eprintln!(
            "  {pool:<8} {size_gib:>3} GiB round {}: snapshot {:.1} ms, clone {:.1} ms, restore {:.1} ms",
            round + 1,
            snapshots[round as usize],
            clones[round as usize],
            restores[round as usize]
        );
        kubelet::delete(clients, &restored).await?;
        kubelet::delete_snapshot(clients, &snapshot).await?;
    }
    kubelet::delete(clients, &id).await?;
    Ok(Timing {
        snapshot_ms: median(&snapshots).unwrap_or(0.0),
        first_snapshot_ms: snapshots.first().copied().unwrap_or(0.0),
        clone_ms: median(&clones).unwrap_or(0.0),
        restore_ms: median(&restores).unwrap_or(0.0),
        rounds,
    })
}

pub fn markdown(
    results: &[SizeResult],
    started_utc: &str,
    machine: &crate::report::Machine,
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Run {started_utc} on {} × {}, Linux {}. Reflink pool: XFS (`mkfs.xfs -m reflink=1`) in an image on the host disk; copy pool: ext4 on the host disk ({}). Volumes preallocated and fully written with fio before timing; times are client-side RPC latencies, medians of the rounds shown.\n",
        machine.cpus, machine.cpu_model, machine.kernel, machine.pool_device
    );
    let _ = writeln!(
        out,
        "| size | snapshot: reflink / copy | first reflink snapshot | clone: reflink / copy | restore: reflink / copy | reflink median ≤{TARGET_MS:.0} ms | rounds reflink / copy |"
    );
    let _ = writeln!(out, "|---:|---:|---:|---:|---:|---|---:|");
    for r in results {
        let worst = r
            .reflink
            .snapshot_ms
            .max(r.reflink.clone_ms)
            .max(r.reflink.restore_ms);
        let verdict = if worst <= TARGET_MS {
            "met"
        } else {
            "**not met**"
        };
        let _ = writeln!(
            out,
            "| {} GiB | {:.1} ms / {:.0} ms | {:.1} ms | {:.1} ms / {:.0} ms | {:.1} ms / {:.0} ms | {verdict} | {} / {} |",
            r.size_gib,
            r.reflink.snapshot_ms,
            r.copy.snapshot_ms,
            r.reflink.first_snapshot_ms,
            r.reflink.clone_ms,
            r.copy.clone_ms,
            r.reflink.restore_ms,
            r.copy.restore_ms,
            r.reflink.rounds,
            r.copy.rounds
        );
    }
    out
}
