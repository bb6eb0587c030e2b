//! Running fio with an argument vector and reading its JSON report.

use serde::Serialize;
use std::path::Path;
use std::process::Command;

/// One fio workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Workload {
    /// `randread` or `randwrite`.
    pub rw: &'static str,
    pub iodepth: u32,
    /// Submit through an io_uring polling thread, which keeps a CPU busy: a diagnostic that takes
    /// idle-CPU wake-up latency out of the measurement.
    pub sqpoll: bool,
}

impl Workload {
    pub fn label(&self) -> String {
        let poll = if self.sqpoll { ", SQPOLL" } else { "" };
        format!("4k {} QD{}{poll}", self.rw, self.iodepth)
    }
}

/// What one fio run measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FioResult {
    pub iops: f64,
    /// Median completion latency in microseconds; `None` as for `p99_us`.
    pub p50_us: Option<f64>,
    /// 99th percentile completion latency in microseconds; `None` where fio cannot measure it
    /// (with a submission-polling thread it reports garbage).
    pub p99_us: Option<f64>,
    /// Whole-machine CPU time spent per I/O, in microseconds (all CPUs, from /proc/stat).
    pub cpu_us_per_io: f64,
    /// Average number of busy CPUs during the run.
    pub busy_cpus: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum FioError {
    #[error("could not run fio: {0} (install it with scripts/install-deps.sh)")]
    Spawn(std::io::Error),
    #[error("fio failed: {0}")]
    Failed(String),
    #[error("unexpected fio output: {0}")]
    Output(String),
}

/// The fastest asynchronous engine this fio offers.
pub fn engine() -> &'static str {
    let engines = Command::new("fio")
        .arg("--enghelp")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if engines.is_ok_and(|list| list.lines().any(|l| l.trim() == "io_uring")) {
        "io_uring"
    } else {
        "libaio"
    }
}

/// Fills `path` sequentially so later reads hit written blocks, not unwritten extents.
pub fn fill(path: &Path, size_bytes: u64, engine: &str) -> Result<(), FioError> {
    run(&[
        "--name=fill".to_owned(),
        format!("--filename={}", path.display()),
        "--rw=write".to_owned(),
        "--bs=1M".to_owned(),
        format!("--ioengine={engine}"),
        "--direct=1".to_owned(),
        "--iodepth=16".to_owned(),
        format!("--size={size_bytes}"),
        "--output-format=json".to_owned(),
    ])
    .map(drop)
}

/// Runs `workload` against `path` for `runtime_s` seconds after a one-second ramp.
pub fn measure(
    path: &Path,
    size_bytes: u64,
    workload: Workload,
    runtime_s: u32,
    engine: &str,
) -> Result<FioResult, FioError> {
    measure_at(path, size_bytes, workload, runtime_s, engine, None)
}

/// [`measure`] with the submissions held to `rate_iops` I/Os per second (fio's `rate_iops`),
/// unlimited with `None`: the offered load of a latency curve.
pub fn measure_at(
    path: &Path,
    size_bytes: u64,
    workload: Workload,
    runtime_s: u32,
    engine: &str,
    rate_iops: Option<u64>,
) -> Result<FioResult, FioError> {
    let mut args = vec![
        "--name=bench".to_owned(),
        format!("--filename={}", path.display()),
        format!("--rw={}", workload.rw),
        "--bs=4k".to_owned(),
        format!("--ioengine={engine}"),
        "--direct=1".to_owned(),
        format!("--iodepth={}", workload.iodepth),
        format!("--size={size_bytes}"),
        format!("--runtime={runtime_s}"),
        "--time_based=1".to_owned(),
        "--ramp_time=1".to_owned(),
        "--norandommap=1".to_owned(),
        "--randrepeat=0".to_owned(),
        "--group_reporting=1".to_owned(),
        "--output-format=json".to_owned(),
    ];
    if workload.sqpoll && engine == "io_uring" {
        args.push("--sqthread_poll=1".to_owned());
    }
    if let Some(rate) = rate_iops {
        args.push(format!("--rate_iops={}", rate.max(1)));
    }
    let before = CpuTimes::read();
    let report = run(&args)?;
    let after = CpuTimes::read();
    let direction = if workload.rw.contains("read") {
        "read"
    } else {
        "write"
    };
    let parsed = parse(&report, direction)?;
    let iops = parsed.iops;
    let busy_cpus = after.busy_cpus_since(&before);
    Ok(FioResult {
        iops,
        p50_us: (!workload.sqpoll).then_some(parsed.p50_us),
        p99_us: (!workload.sqpoll).then_some(parsed.p99_us),
        cpu_us_per_io: if iops > 0.0 {
            busy_cpus * 1e6 / iops
        } else {
            0.0
        },
        busy_cpus,
    })
}

/// The aggregate `cpu` line of /proc/stat, in clock ticks.
#[derive(Debug, Clone, Copy, Default)]
struct CpuTimes {
    busy: u64,
    total: u64,
    cpus: usize,
}

impl CpuTimes {
    fn read() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        Self::parse(&stat)
    }

    fn parse(stat: &str) -> Self {
        let cpus = stat
            .lines()
            .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
            .count();
        let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
            return Self::default();
        };
        let fields: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal …; idle and iowait are not busy.
        let total: u64 = fields.iter().take(8).sum();
        let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
        Self {
            busy: total - idle,
            total,
            cpus,
        }
    }

    fn busy_cpus_since(&self, earlier: &Self) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0.0;
        }
        self.busy.saturating_sub(earlier.busy) as f64 / total as f64 * self.cpus as f64
    }
}

fn run(args: &[String]) -> Result<String, FioError> {
    let output = Command::new("fio")
        .args(args)
        .output()
        .map_err(FioError::Spawn)?;
    if !output.status.success() {
        return Err(FioError::Failed(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// What a fio report says of one direction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Parsed {
    pub iops: f64,
    /// Completion latency percentiles, µs.
    pub p50_us: f64,
    pub p99_us: f64,
}

/// Extracts IOPS and the p50 and p99 latency (µs) of `direction` (`read` or `write`) from fio's
/// JSON output.
pub fn parse(report: &str, direction: &str) -> Result<Parsed, FioError> {
    // fio may print notes before the JSON document.
    let start = report
        .find('{')
        .ok_or_else(|| FioError::Output("no JSON document".into()))?;
    let json: serde_json::Value =
        serde_json::from_str(&report[start..]).map_err(|e| FioError::Output(e.to_string()))?;
    let stats = &json["jobs"][0][direction];
    let iops = stats["iops"]
        .as_f64()
        .ok_or_else(|| FioError::Output(format!("no {direction}.iops")))?;
    let percentile = |p: &str| stats["clat_ns"]["percentile"][p].as_f64().unwrap_or(0.0) / 1000.0;
    Ok(Parsed {
        iops,
        p50_us: percentile("50.000000"),
        p99_us: percentile("99.000000"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fio_json() {
        let report = r#"note: both iodepth >= 1 and synchronous I/O engine are selected
{"fio version":"fio-3.33","jobs":[{"jobname":"bench","read":{"iops":12345.6,"clat_ns":{"percentile":{"50.000000":1000,"99.000000":250000}}},"write":{"iops":0.0}}]}"#;
        assert_eq!(
            parse(report, "read").unwrap(),
            Parsed {
                iops: 12345.6,
                p50_us: 1.0,
                p99_us: 250.0
            }
        );
        assert_eq!(parse(report, "write").unwrap().iops, 0.0);
        assert!(parse("garbage", "read").is_err());
        assert!(parse("{\"jobs\":[]}", "read").is_err());
    }

    #[test]
    fn cpu_accounting() {
        let before = CpuTimes::parse(
            "cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 50 0 50 350 50 0 0 0 0 0\ncpu1 50 0 50 350 50 0 0 0 0 0\n",
        );
        let after = CpuTimes::parse("cpu  200 0 200 800 100 0 0 0 0 0\ncpu0 0\ncpu1 0\n");
        assert_eq!(before.cpus, 2);
        // 200 of 300 ticks busy on 2 CPUs: 1.33 CPUs busy.
        assert!((after.busy_cpus_since(&before) - 4.0 / 3.0).abs() < 1e-9);
    }
}
