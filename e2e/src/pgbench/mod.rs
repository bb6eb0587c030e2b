//! A real workload, the talk's way: PostgreSQL (Debian's) with pgbench's TPC-B-like transactions,
//! on an ext4 filesystem volume published by fastvirt-csi against the same on the pool's own
//! filesystem. Each server runs in a memory cgroup whose limit is about a quarter of its data set,
//! so reads miss the cache and reach the disk. Both servers run side by side; every point is the
//! median of interleaved rounds (the sides alternate which goes first). The plot is average
//! latency against TPS per side, one point per client count.
//!
//! The servers listen on unix sockets only (`listen_addresses` empty): no network at all.

mod plot;
mod server;
pub mod sides;

pub use plot::plot;
pub use server::{MemoryCgroup, Server, bin_dir};

use crate::stats::{interleaved, median};
use serde::Serialize;

/// What to measure.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// pgbench client counts (`-c`), one point each.
    pub clients: Vec<u32>,
    pub rounds: u32,
    /// Seconds per pgbench run (`-T`).
    pub runtime_s: u32,
    /// pgbench scale factor (`-i -s`): 100,000 accounts, about 15 MiB, per unit.
    pub scale: u32,
    /// Each server's memory cgroup limit, page cache included.
    pub memory_limit_mib: u64,
    /// PostgreSQL's `shared_buffers`, inside that limit.
    pub shared_buffers_mib: u64,
}

/// One pgbench run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Run {
    /// Transactions per second, without the initial connection time.
    pub tps: f64,
    /// Average transaction latency.
    pub latency_ms: f64,
}

/// One client count: medians over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub clients: u32,
    pub tps: f64,
    pub latency_ms: f64,
    pub samples: Vec<Run>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Side {
    pub name: String,
    /// `pg_database_size` after `pgbench -i`.
    pub database_bytes: u64,
    /// How long `pgbench -i` took.
    pub init_seconds: f64,
    pub points: Vec<Point>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PgbenchReport {
    pub started_utc: String,
    pub machine: crate::report::Machine,
    pub plan: Plan,
    pub postgres_version: String,
    pub volume_size_bytes: u64,
    pub volume: Side,
    pub raw: Side,
}

pub const DOCS_START: &str = "<!-- fastvirt-bench:pgbench:start -->";
pub const DOCS_END: &str = "<!-- fastvirt-bench:pgbench:end -->";

#[derive(Debug, thiserror::Error)]
pub enum PgbenchError {
    #[error(
        "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/postgres; scripts/install-deps.sh installs Debian's)"
    )]
    NotInstalled,
    #[error("{0}")]
    Setup(String),
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("unexpected pgbench output: {0}")]
    Output(String),
}

/// tps and average latency from pgbench's report.
pub fn parse_output(text: &str) -> Option<Run> {
    let number_after = |prefix: &str| {
        text.lines().find_map(|line| {
            line.trim()
                .strip_prefix(prefix)?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
    };
    Some(Run {
        tps: number_after("tps = ")?,
        latency_ms: number_after("latency average = ")?,
    })
}

fn point(clients: u32, samples: Vec<Run>) -> Point {
    let med =
        |f: fn(&Run) -> f64| median(&samples.iter().map(f).collect::<Vec<_>>()).unwrap_or(0.0);
    Point {
        clients,
        tps: med(|r| r.tps),
        latency_ms: med(|r| r.latency_ms),
        samples,
    }
}

/// Initializes both servers, then measures every client count on both, interleaved.
pub fn run(volume: &Server, raw: &Server, plan: &Plan) -> Result<(Side, Side), PgbenchError> {
    let mut sides = Vec::new();
    for (name, server) in [("volume", volume), ("raw filesystem", raw)] {
        eprintln!(
            "pgbench: initializing the {name} side at scale {}",
            plan.scale
        );
        let (init_seconds, database_bytes) = server.initialize(plan.scale)?;
        eprintln!(
            "  {:.0} MiB in {init_seconds:.1} s",
            database_bytes as f64 / (1 << 20) as f64
        );
        sides.push(Side {
            name: name.into(),
            database_bytes,
            init_seconds,
            points: Vec::new(),
        });
    }
    for &clients in &plan.clients {
        let (on_volume, on_raw) = interleaved(plan.rounds, |is_volume| {
            let server = if is_volume { volume } else { raw };
            let run = server.run(clients, plan.runtime_s)?;
            eprintln!(
                "  {clients:>3} clients {:<7} {:>8.1} TPS  {:>7.2} ms",
                if is_volume { "volume" } else { "raw" },
                run.tps,
                run.latency_ms
            );
            Ok(run)
        })?;
        sides[0].points.push(point(clients, on_volume));
        sides[1].points.push(point(clients, on_raw));
    }
    let raw_side = sides.pop().expect("two sides");
    let volume_side = sides.pop().expect("two sides");
    Ok((volume_side, raw_side))
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// The Markdown section: the table, the plot, and how it was measured.
pub fn markdown(report: &PgbenchReport, plot_file: &str) -> String {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let mut out = format!(
        "Measured {} on {}: {}, a {} MiB ext4 volume published by fastvirt-csi against a directory of the pool's own filesystem. pgbench scale {} ({:.0} MiB of database on the volume, {:.0} MiB on the raw side), each server in a memory cgroup of {} MiB (the database is {:.1}× that) with `shared_buffers` {} MiB, unix sockets only; the TPC-B-like script (`pgbench -n -T {}`), {} interleaved rounds per point (medians).\n\n",
        report.started_utc,
        report.machine.describe(),
        report.postgres_version,
        report.volume_size_bytes >> 20,
        report.plan.scale,
        mib(report.volume.database_bytes),
        mib(report.raw.database_bytes),
        report.plan.memory_limit_mib,
        mib(report.volume.database_bytes) / report.plan.memory_limit_mib as f64,
        report.plan.shared_buffers_mib,
        report.plan.runtime_s,
        report.plan.rounds,
    );
    out.push_str(&format!(
        "![average latency against TPS, per client count]({plot_file})\n\n"
    ));
    out.push_str(
        "| clients | volume TPS | volume latency ms | raw TPS | raw latency ms | volume / raw TPS |\n|---|---|---|---|---|---|\n",
    );
    for (v, r) in report.volume.points.iter().zip(&report.raw.points) {
        out.push_str(&format!(
            "| {} | {:.1} | {:.2} | {:.1} | {:.2} | {:.2} |\n",
            v.clients,
            v.tps,
            v.latency_ms,
            r.tps,
            r.latency_ms,
            ratio(v.tps, r.tps)
        ));
    }
    out.push_str(&format!(
        "\n`pgbench -i` took {:.1} s on the volume and {:.1} s on the raw side.\n",
        report.volume.init_seconds, report.raw.init_seconds
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn pgbench_reports_are_read() {
        let text = "pgbench (15.8 (Debian 15.8-0+deb12u1))\ntransaction type: <builtin: TPC-B (sort of)>\nscaling factor: 18\nquery mode: simple\nnumber of clients: 4\nnumber of threads: 2\nmaximum number of tries: 1\nduration: 10 s\nnumber of transactions actually processed: 5321\nnumber of failed transactions: 0 (0.000%)\nlatency average = 7.518 ms\ninitial connection time = 9.021 ms\ntps = 532.081842 (without initial connection time)\n";
        assert_eq!(
            parse_output(text),
            Some(Run {
                tps: 532.081842,
                latency_ms: 7.518
            })
        );
        assert_eq!(parse_output("pgbench: error: connection refused"), None);
    }

    fn side(name: &str, scale: f64) -> Side {
        Side {
            name: name.into(),
            database_bytes: 280 << 20,
            init_seconds: 12.0,
            points: [1, 4, 8]
                .iter()
                .map(|&c| {
                    point(
                        c,
                        vec![Run {
                            tps: 100.0 * f64::from(c) * scale,
                            latency_ms: 2.0 + f64::from(c),
                        }],
                    )
                })
                .collect(),
        }
    }

    fn report() -> PgbenchReport {
        PgbenchReport {
            started_utc: "2026-12-01T00:00:00Z".into(),
            machine: crate::report::example_machine(),
            plan: Plan {
                clients: vec![1, 4, 8],
                rounds: 1,
                runtime_s: 10,
                scale: 18,
                memory_limit_mib: 64,
                shared_buffers_mib: 16,
            },
            postgres_version: "postgres (PostgreSQL) 15.8".into(),
            volume_size_bytes: 1 << 30,
            volume: side("volume", 0.9),
            raw: side("raw filesystem", 1.0),
        }
    }

    #[test]
    fn the_section_has_every_client_count_and_ratio() {
        let text = markdown(&report(), "pgbench.png");
        assert!(
            text.contains("| 4 | 360.0 | 6.00 | 400.0 | 6.00 | 0.90 |"),
            "{text}"
        );
        assert!(text.contains("(the database is 4.4× that)"), "{text}");
        assert!(text.contains("![average latency against TPS, per client count](pgbench.png)"));
    }

    #[test]
    fn the_plot_is_a_png() {
        if !Path::new(crate::latency::FONT).exists() {
            eprintln!(
                "SKIP the_plot_is_a_png: {} is missing",
                crate::latency::FONT
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pgbench.png");
        plot(&report(), &path).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    }
}
