//! The three sides of a KubeVirt disk, side by side: the raw file (what QEMU would get with no
//! storage layer at all), a `device` volume (the loop device QEMU opens for a Block PVC) and a
//! `disk-image` volume (the `disk.img` QEMU opens for a Filesystem PVC of that layout), all in one
//! pool, measured in rotated rounds with 4 KiB random reads and writes at QD1 and QD32 through
//! io_uring and libaio.
//!
//! The layout needs a filesystem that limits directories. This machine's kernel has neither XFS
//! nor ext4 quotas, so the pool is a btrfs with quotas on a preallocated image of the work disk,
//! attached with direct I/O; the three sides share that stack, so their ratios compare the layouts
//! and nothing else. The raw file is no-copy-on-write like the disk image.

use crate::fio::{self, FioResult, Workload};
use crate::kubelet;
use crate::stats::{median, rotated};
use fastvirt_csi::local::{Clients, DriverArgs, DriverProcess, ScratchFs};
use serde::Serialize;
use std::path::{Path, PathBuf};

pub const DOCS_START: &str = "<!-- fastvirt-bench:layouts:start -->";
pub const DOCS_END: &str = "<!-- fastvirt-bench:layouts:end -->";

/// What the disk-image layout aims for against the raw file, in every workload.
pub const DISK_IMAGE_TARGET: f64 = 0.97;

pub const SIDES: [&str; 3] = ["raw file", "device", "disk-image"];

/// The data path's workloads without the SQPOLL diagnostics.
fn workloads() -> impl Iterator<Item = Workload> {
    crate::datapath::WORKLOADS.into_iter().filter(|w| !w.sqpoll)
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub rounds: u32,
    pub runtime_s: u32,
    pub size_bytes: u64,
    pub engines: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub workload: Workload,
    pub engine: String,
    pub label: String,
    /// Samples per side, in the order of [`SIDES`].
    pub samples: Vec<Vec<FioResult>>,
    /// Median IOPS per side.
    pub iops: Vec<f64>,
    /// Median p99 latency per side, µs.
    pub p99_us: Vec<Option<f64>>,
    pub device_ratio: f64,
    pub disk_image_ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LayoutsReport {
    pub started_utc: String,
    pub machine: crate::report::Machine,
    pub pool: String,
    pub plan: Plan,
    pub rows: Vec<Row>,
}

/// A volume published as kubelet would; `disk` is what QEMU opens.
struct Published {
    id: String,
    staging: PathBuf,
    target: PathBuf,
    disk: PathBuf,
    capability: fastvirt_csi::proto::VolumeCapability,
}

async fn publish(
    clients: &mut Clients,
    work_dir: &Path,
    name: &str,
    size: u64,
    layout: &str,
) -> anyhow::Result<Published> {
    let (capability, parameters): (_, &[(&str, &str)]) = if layout == "disk-image" {
        (
            kubelet::mount_capability("ext4"),
            &[("layout", "disk-image")],
        )
    } else {
        (kubelet::block_capability(), &[])
    };
    let id = kubelet::create_as(clients, name, size, parameters, None, capability.clone()).await?;
    let staging = work_dir.join(format!("kubelet/staging/{name}"));
    let target = work_dir.join(format!("kubelet/publish/{name}/pod"));
    kubelet::stage_as(clients, &id, &staging, capability.clone()).await?;
    kubelet::publish_as(clients, &id, &staging, &target, capability.clone()).await?;
    let disk = if layout == "disk-image" {
        target.join("disk.img")
    } else {
        target.clone()
    };
    Ok(Published {
        id,
        staging,
        target,
        disk,
        capability,
    })
}

async fn unpublish(clients: &mut Clients, volume: Published) -> anyhow::Result<()> {
    let _ = volume.capability;
    kubelet::unpublish(clients, &volume.id, &volume.target).await?;
    kubelet::unstage(clients, &volume.id, &volume.staging).await?;
    kubelet::delete(clients, &volume.id).await?;
    Ok(())
}

/// A preallocated no-copy-on-write file of `size` bytes at `path`, like a disk-image volume's.
fn raw_file(path: &Path, size: u64) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)?;
    let handle = std::fs::File::open(dir)?;
    let flags = rustix::fs::ioctl_getflags(&handle)?;
    rustix::fs::ioctl_setflags(&handle, flags | rustix::fs::IFlags::NOCOW)?;
    let file = std::fs::File::create(path)?;
    nix::fcntl::fallocate(&file, nix::fcntl::FallocateFlags::empty(), 0, size as i64)?;
    Ok(())
}

/// Measures the three sides on a btrfs pool made under `work_dir`.
pub async fn measure(
    driver: PathBuf,
    work_dir: &Path,
    plan: Plan,
) -> anyhow::Result<LayoutsReport> {
    let started_utc = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    // Room for three sides and btrfs's metadata.
    let scratch = ScratchFs::on_disk(work_dir, plan.size_bytes * 3 + (1 << 30), "btrfs");
    scratch.enable_btrfs_quotas();
    let pool = scratch.mount_point.join("pool");
    let args = DriverArgs {
        binary: driver,
        socket: work_dir.join("csi.sock"),
        node_id: "bench-node".into(),
        mode: "all",
        pools: vec![("default".into(), pool.clone())],
        state_dir: work_dir.join("state"),
        log_file: Some(work_dir.join("driver.log")),
        extra_args: Vec::new(),
    };
    let (mut process, mut clients) = DriverProcess::start(args).await?;
    let outcome = async {
        let device = publish(
            &mut clients,
            work_dir,
            "bench-device",
            plan.size_bytes,
            "device",
        )
        .await?;
        let image = publish(
            &mut clients,
            work_dir,
            "bench-image",
            plan.size_bytes,
            "disk-image",
        )
        .await?;
        let raw = scratch.mount_point.join("raw/disk.img");
        raw_file(&raw, plan.size_bytes)?;
        let paths = [raw.clone(), device.disk.clone(), image.disk.clone()];
        eprintln!("filling the three sides with data");
        nix::unistd::sync();
        for path in &paths {
            fio::fill(path, plan.size_bytes, "libaio")?;
        }
        let rows = measure_rows(&paths, &plan);
        unpublish(&mut clients, device).await?;
        unpublish(&mut clients, image).await?;
        std::fs::remove_file(&raw)?;
        rows
    }
    .await;
    let stopped = process.terminate();
    fastvirt_csi::local::release_all_under(&scratch.mount_point);
    drop(scratch);
    let rows = outcome?;
    stopped?;
    Ok(LayoutsReport {
        started_utc,
        machine: crate::report::machine(work_dir),
        pool:
            "btrfs (quotas on) on a preallocated image of the work disk, attached with direct I/O"
                .into(),
        plan,
        rows,
    })
}

fn measure_rows(paths: &[PathBuf; 3], plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for engine in &plan.engines {
        for workload in workloads() {
            let samples = rotated(plan.rounds, SIDES.len(), |side| {
                let sample = fio::measure(
                    &paths[side],
                    plan.size_bytes,
                    workload,
                    plan.runtime_s,
                    engine,
                )?;
                eprintln!(
                    "  {:<20} {:<8} {:<10} {:>9.0} IOPS",
                    workload.label(),
                    engine,
                    SIDES[side],
                    sample.iops
                );
                Ok::<_, fio::FioError>(sample)
            })?;
            let iops: Vec<f64> = samples
                .iter()
                .map(|s| median(&s.iter().map(|r| r.iops).collect::<Vec<_>>()).unwrap_or(0.0))
                .collect();
            let p99_us = samples
                .iter()
                .map(|s| median(&s.iter().filter_map(|r| r.p99_us).collect::<Vec<_>>()))
                .collect();
            let ratio = |side: usize| {
                if iops[0] > 0.0 {
                    iops[side] / iops[0]
                } else {
                    0.0
                }
            };
            rows.push(Row {
                workload,
                engine: engine.clone(),
                label: workload.label(),
                device_ratio: ratio(1),
                disk_image_ratio: ratio(2),
                samples,
                iops,
                p99_us,
            });
        }
    }
    Ok(rows)
}

/// The Markdown section for `docs/benchmarks.md`.
pub fn markdown(report: &LayoutsReport) -> String {
    let mut out = format!(
        "Run {} on {}; the three sides on {}; {} MiB per side, {} rotated rounds of {} s per workload.\n\n",
        report.started_utc,
        report.machine.describe(),
        report.pool,
        report.plan.size_bytes >> 20,
        report.plan.rounds,
        report.plan.runtime_s,
    );
    out.push_str("| workload | engine | raw file IOPS | device IOPS | disk-image IOPS | device / raw | disk-image / raw | disk-image target |\n");
    out.push_str("|---|---|---:|---:|---:|---:|---:|---|\n");
    for row in &report.rows {
        let met = if row.disk_image_ratio >= DISK_IMAGE_TARGET {
            "met"
        } else {
            "missed"
        };
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.2}× | {:.2}× | ≥{DISK_IMAGE_TARGET}× {met} |\n",
            row.label,
            row.engine,
            row.iops[0],
            row.iops[1],
            row.iops[2],
            row.device_ratio,
            row.disk_image_ratio,
        ));
    }
    out
}

impl LayoutsReport {
    /// Writes `layouts.json` and `layouts.md` into `dir`; returns the Markdown.
    pub fn write(&self, dir: &Path) -> anyhow::Result<String> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("layouts.json"), serde_json::to_vec_pretty(self)?)?;
        let summary = markdown(self);
        std::fs::write(dir.join("layouts.md"), &summary)?;
        Ok(summary)
    }
}
