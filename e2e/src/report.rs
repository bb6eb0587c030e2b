//! The benchmark report: JSON for machines, Markdown for people, and the section of
//! `docs/benchmarks.md` that shows the latest run.

use crate::datapath::DataPathResult;
use crate::lifecycle::{LifecycleResult, RPCS};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::Path;

pub const DOCS_START: &str = "<!-- fastvirt-bench:csi:start -->";
pub const DOCS_END: &str = "<!-- fastvirt-bench:csi:end -->";

/// Lifecycle targets from the project's goals.
pub const TARGET_VOLUMES_PER_SECOND: f64 = 60.0;
pub const TARGET_PUBLISH_UNPUBLISH_P99_MS: f64 = 5.0;

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
    pub pool_filesystem: String,
    pub pool_device: String,
    pub pool_device_rotational: Option<bool>,
}

impl Machine {
    /// "2 × CPU model, 24 GiB, Linux 6.18, pool on /dev/vda (ext4)", for the reports' first line.
    pub fn describe(&self) -> String {
        format!(
            "{} × {}, {:.0} GiB, Linux {}, pool on {} ({})",
            self.cpus,
            self.cpu_model,
            self.memory_gib,
            self.kernel,
            self.pool_device,
            self.pool_filesystem
        )
    }
}

/// A machine for the reports' unit tests.
#[cfg(test)]
pub(crate) fn example_machine() -> Machine {
    Machine {
        cpus: 2,
        cpu_model: "test".into(),
        memory_gib: 24.0,
        kernel: "6.18".into(),
        pool_filesystem: "ext4".into(),
        pool_device: "vda".into(),
        pool_device_rotational: Some(false),
    }
}

/// Copies the plot at `plot` to `copy` if asked, and returns the name the Markdown links it by:
/// the copy's file name, or the plot's own.
pub fn copy_plot(plot: &Path, copy: Option<&Path>) -> anyhow::Result<String> {
    use anyhow::Context;
    let named = match copy {
        Some(copy) => {
            std::fs::copy(plot, copy)
                .with_context(|| format!("copying the plot to {}", copy.display()))?;
            copy
        }
        None => plot,
    };
    Ok(named
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default())
}

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub volume_size_bytes: u64,
    pub rounds: u32,
    pub fio_runtime_s: u32,
    pub fio_engine: String,
    pub fio_version: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub started_utc: String,
    pub fastvirt_version: String,
    pub machine: Machine,
    pub settings: Settings,
    pub data_path: Vec<DataPathResult>,
    pub lifecycle: LifecycleResult,
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Describes this machine and the filesystem that holds `pool`.
pub fn machine(pool: &Path) -> Machine {
    let cpuinfo = read_trimmed("/proc/cpuinfo");
    let cpu_model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let meminfo = read_trimmed("/proc/meminfo");
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    let table = fastvirt_csi::mountinfo::read().unwrap_or_default();
    let pool = pool.canonicalize().unwrap_or_else(|_| pool.to_owned());
    let mount = table
        .iter()
        .filter(|e| pool.starts_with(&e.mount_point))
        .max_by_key(|e| e.mount_point.as_os_str().len());
    let (pool_filesystem, pool_device) = mount
        .map(|e| (e.fs_type.clone(), e.source.clone()))
        .unwrap_or_default();
    let device_name = Path::new(&pool_device)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let rotational =
        std::fs::read_to_string(format!("/sys/class/block/{device_name}/queue/rotational"))
            .ok()
            .map(|v| v.trim() == "1");
    Machine {
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        cpu_model,
        memory_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        kernel: read_trimmed("/proc/sys/kernel/osrelease"),
        pool_filesystem,
        pool_device,
        pool_device_rotational: rotational,
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**not met**" }
}

/// The Markdown summary of a run.
pub fn markdown(report: &Report) -> String {
    let m = &report.machine;
    let s = &report.settings;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Run {} with fastvirt {}, on {} × {} ({} GiB RAM), Linux {}.",
        report.started_utc, report.fastvirt_version, m.cpus, m.cpu_model, m.memory_gib, m.kernel
    );
    let rotational = match m.pool_device_rotational {
        Some(true) => " (reported as rotational)",
        Some(false) => " (non-rotational)",
        None => "",
    };
    let _ = writeln!(
        out,
        "Pool on {} at {}{}. Volume {} MiB, {} interleaved rounds of {} s per side, fio {} with {}, O_DIRECT.\n",
        m.pool_filesystem,
        m.pool_device,
        rotational,
        s.volume_size_bytes >> 20,
        s.rounds,
        s.fio_runtime_s,
        s.fio_version,
        s.fio_engine
    );
    let _ = writeln!(
        out,
        "### Data path: published block volume vs. raw file in the same pool\n"
    );
    let _ = writeln!(
        out,
        "| workload | volume IOPS | raw IOPS | ratio | target | p99 µs volume / raw | CPU µs per I/O volume / raw | busy CPUs volume / raw |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---|---:|---:|---:|");
    for r in &report.data_path {
        let target = match r.target_ratio {
            Some(target) => format!("≥{target:.2}× {}", verdict(r.ratio >= target)),
            None => "diagnostic".to_owned(),
        };
        let p99 = |v: Option<f64>| v.map(|p| format!("{p:.0}")).unwrap_or_else(|| "–".into());
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {:.2}× | {target} | {} / {} | {:.1} / {:.1} | {:.2} / {:.2} |",
            r.label,
            r.volume_iops,
            r.raw_iops,
            r.ratio,
            p99(r.volume_p99_us),
            p99(r.raw_p99_us),
            r.volume_cpu_us_per_io,
            r.raw_cpu_us_per_io,
            r.volume_busy_cpus,
            r.raw_busy_cpus
        );
    }
    let l = &report.lifecycle;
    let _ = writeln!(
        out,
        "\n### Control path: {} sequential lifecycles of {} MiB block volumes\n",
        l.volumes,
        l.volume_size_bytes >> 20
    );
    let _ = writeln!(
        out,
        "Throughput {:.1} volumes/s (target ≥{TARGET_VOLUMES_PER_SECOND:.0}: {}); NodePublish + NodeUnpublish p99 {:.2} ms (target ≤{TARGET_PUBLISH_UNPUBLISH_P99_MS:.0} ms: {}).\n",
        l.volumes_per_second,
        verdict(l.volumes_per_second >= TARGET_VOLUMES_PER_SECOND),
        l.publish_unpublish_p99_ms,
        verdict(l.publish_unpublish_p99_ms <= TARGET_PUBLISH_UNPUBLISH_P99_MS)
    );
    let _ = writeln!(out, "| RPC | p50 ms | p99 ms | max ms |");
    let _ = writeln!(out, "|---|---:|---:|---:|");
    for rpc in RPCS {
        if let Some(latency) = l.rpcs.get(rpc) {
            let _ = writeln!(
                out,
                "| {rpc} | {:.2} | {:.2} | {:.2} |",
                latency.p50_ms, latency.p99_ms, latency.max_ms
            );
        }
    }
    out
}

/// Replaces the section between the `start` and `end` markers of a docs page, keeping everything
/// around it.
pub fn splice_docs(
    page: &str,
    start_marker: &str,
    end_marker: &str,
    section: &str,
) -> Option<String> {
    let start = page.find(start_marker)? + start_marker.len();
    let end = page[start..].find(end_marker)? + start;
    Some(format!(
        "{}\n{}\n{}",
        &page[..start],
        section.trim_end(),
        &page[end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splices_only_between_markers() {
        let page = format!("# Benchmarks\nintro\n{DOCS_START}\nold\n{DOCS_END}\nafter\n");
        let updated = splice_docs(&page, DOCS_START, DOCS_END, "new table\n").unwrap();
        assert_eq!(
            updated,
            format!("# Benchmarks\nintro\n{DOCS_START}\nnew table\n{DOCS_END}\nafter\n")
        );
        assert_eq!(
            splice_docs(&updated, DOCS_START, DOCS_END, "again")
                .unwrap()
                .matches(DOCS_START)
                .count(),
            1
        );
        assert!(splice_docs("no markers", DOCS_START, DOCS_END, "x").is_none());
    }
}
