//! The data path: 4k random I/O on a published volume against the raw backing file in the same pool,
//! interleaved round by round so that drift in the machine hits both sides alike.

use crate::fio::{self, FioResult, Workload};
use crate::stats::{interleaved, median};
use serde::Serialize;
use std::path::Path;

pub const WORKLOADS: [Workload; 6] = [
    Workload {
        rw: "randread",
        iodepth: 1,
        sqpoll: false,
    },
    Workload {
        rw: "randread",
        iodepth: 32,
        sqpoll: false,
    },
    Workload {
        rw: "randwrite",
        iodepth: 1,
        sqpoll: false,
    },
    Workload {
        rw: "randwrite",
        iodepth: 32,
        sqpoll: false,
    },
    Workload {
        rw: "randread",
        iodepth: 1,
        sqpoll: true,
    },
    Workload {
        rw: "randwrite",
        iodepth: 1,
        sqpoll: true,
    },
];

#[derive(Debug, Clone, Serialize)]
pub struct DataPathResult {
    pub workload: Workload,
    pub label: String,
    /// One sample per round on the published volume.
    pub volume: Vec<FioResult>,
    /// One sample per round on the raw file.
    pub raw: Vec<FioResult>,
    pub volume_iops: f64,
    pub raw_iops: f64,
    /// Median volume IOPS over median raw IOPS.
    pub ratio: f64,
    pub volume_p99_us: Option<f64>,
    pub raw_p99_us: Option<f64>,
    /// Median whole-machine CPU time per I/O, µs.
    pub volume_cpu_us_per_io: f64,
    pub raw_cpu_us_per_io: f64,
    /// Median number of busy CPUs.
    pub volume_busy_cpus: f64,
    pub raw_busy_cpus: f64,
    /// The ratio the project aims for; `None` for diagnostic workloads.
    pub target_ratio: Option<f64>,
}

pub fn target_ratio(workload: Workload) -> Option<f64> {
    match (workload.sqpoll, workload.iodepth) {
        (true, _) => None,
        (false, 1) => Some(0.95),
        (false, _) => Some(0.90),
    }
}

pub fn run(
    volume: &Path,
    raw: &Path,
    size_bytes: u64,
    rounds: u32,
    runtime_s: u32,
    engine: &str,
) -> Result<Vec<DataPathResult>, fio::FioError> {
    let mut results = Vec::new();
    for workload in WORKLOADS {
        let (on_volume, on_raw) = interleaved(rounds, |is_volume| {
            let path = if is_volume { volume } else { raw };
            let sample = fio::measure(path, size_bytes, workload, runtime_s, engine)?;
            eprintln!(
                "  {:<24} {:<7} {:>9.0} IOPS  p99 {:>7} µs  {:>5.1} µs CPU/IO  {:.2} CPUs busy",
                workload.label(),
                if is_volume { "volume" } else { "raw" },
                sample.iops,
                sample
                    .p99_us
                    .map(|p| format!("{p:.0}"))
                    .unwrap_or_else(|| "-".into()),
                sample.cpu_us_per_io,
                sample.busy_cpus
            );
            Ok(sample)
        })?;
        let med = |s: &[FioResult], f: fn(&FioResult) -> f64| {
            median(&s.iter().map(f).collect::<Vec<_>>()).unwrap_or(0.0)
        };
        let iops = |s: &[FioResult]| med(s, |r| r.iops);
        let p99 = |s: &[FioResult]| median(&s.iter().filter_map(|r| r.p99_us).collect::<Vec<_>>());
        let (volume_iops, raw_iops) = (iops(&on_volume), iops(&on_raw));
        results.push(DataPathResult {
            workload,
            label: workload.label(),
            volume_p99_us: p99(&on_volume),
            raw_p99_us: p99(&on_raw),
            volume_cpu_us_per_io: med(&on_volume, |r| r.cpu_us_per_io),
            raw_cpu_us_per_io: med(&on_raw, |r| r.cpu_us_per_io),
            volume_busy_cpus: med(&on_volume, |r| r.busy_cpus),
            raw_busy_cpus: med(&on_raw, |r| r.busy_cpus),
            volume: on_volume,
            raw: on_raw,
            volume_iops,
            raw_iops,
            ratio: if raw_iops > 0.0 {
                volume_iops / raw_iops
            } else {
                0.0
            },
            target_ratio: target_ratio(workload),
        });
    }
    Ok(results)
}
