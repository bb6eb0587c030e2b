//! Runs the benchmark end to end in its quick mode: the driver starts, a block volume is published
//! and measured, the lifecycle runs, and the report has every number. The numbers themselves are not
//! judged here; that is what the full benchmark and docs/benchmarks.md are for.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A fresh scratch directory for a run, its output directory, and a docs page whose `section`
/// (the name between `fastvirt-bench:` and `:start`) holds "old" followed by "kept".
fn run_dirs(name: &str, section: &str) -> (PathBuf, PathBuf, PathBuf) {
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let docs = work.join("benchmarks.md");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(
        &docs,
        format!(
            "# Benchmarks\n<!-- fastvirt-bench:{section}:start -->\nold\n<!-- fastvirt-bench:{section}:end -->\nkept\n"
        ),
    )
    .unwrap();
    (work.clone(), work.join("results"), docs)
}

/// `fastvirt-bench` with this build's driver and a scratch directory under `work`.
fn bench(work: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fastvirt-bench"));
    command
        .arg("--driver")
        .arg(common::driver_binary())
        .arg("--work-dir")
        .arg(work.join("scratch"));
    command
}

/// Runs `fastvirt-bench` with `args`, requires success, and returns the JSON report `report` it
/// wrote into `output`.
fn run_bench(args: &mut Command, output: &Path, report: &str) -> serde_json::Value {
    // The benchmarks share the disk and the two CPUs: one runs at a time, so no run's numbers
    // (and the relations checked on them) depend on another running beside it.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let run = args.arg("--output").arg(output).output().unwrap();
    assert!(
        run.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    serde_json::from_slice(&std::fs::read(output.join(report)).unwrap()).unwrap()
}

#[test]
fn quick_benchmark_produces_a_complete_report() {
    if let Some(reason) = common::skip_reason(&["fio"]) {
        eprintln!("SKIP quick_benchmark_produces_a_complete_report: {reason}");
        return;
    }
    let (work, output, docs) = run_dirs("bench-smoke", "csi");
    let report = run_bench(
        bench(&work).arg("--quick").arg("--update-docs").arg(&docs),
        &output,
        "benchmark.json",
    );
    let data_path = report["data_path"].as_array().unwrap();
    assert_eq!(data_path.len(), 6);
    for row in data_path {
        assert!(row["volume_iops"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["raw_iops"].as_f64().unwrap() > 0.0, "{row}");
        assert!(row["ratio"].as_f64().unwrap() > 0.0, "{row}");
    }
    let lifecycle = &report["lifecycle"];
    assert_eq!(lifecycle["volumes"], 5);
    assert!(lifecycle["volumes_per_second"].as_f64().unwrap() > 0.0);
    assert_eq!(lifecycle["rpcs"].as_object().unwrap().len(), 6);

    let page = std::fs::read_to_string(&docs).unwrap();
    assert!(
        page.contains("| 4k randread QD1 |")
            && !page.contains("\nold\n")
            && page.ends_with("kept\n"),
        "{page}"
    );
    // The run cleaned up after itself: no loop device or mount is left on its scratch directory.
    let scratch = work.join("scratch").canonicalize().unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(scratch.to_str().unwrap()),
        "mounts left behind"
    );
    for entry in std::fs::read_dir("/sys/block").unwrap().flatten() {
        let backing =
            std::fs::read_to_string(entry.path().join("loop/backing_file")).unwrap_or_default();
        assert!(
            !backing.starts_with(scratch.to_str().unwrap()),
            "loop device left behind: {backing}"
        );
    }
}

#[test]
fn snapshot_benchmark_measures_both_pools() {
    if let Some(reason) = common::skip_reason(&["fio", "mkfs.xfs"]) {
        eprintln!("SKIP snapshot_benchmark_measures_both_pools: {reason}");
        return;
    }
    let (work, output, _) = run_dirs("bench-snapshots", "snapshots");
    let results = run_bench(
        bench(&work).args(["snapshots", "--sizes-gib", "1", "--rounds", "2"]),
        &output,
        "snapshots.json",
    );
    let row = &results[0];
    assert_eq!(row["size_gib"], 1);
    for pool in ["reflink", "copy"] {
        for field in ["snapshot_ms", "clone_ms", "restore_ms", "first_snapshot_ms"] {
            assert!(
                row[pool][field].as_f64().unwrap() > 0.0,
                "{pool}.{field}: {row}"
            );
        }
    }
    assert_eq!(row["reflink"]["rounds"], 2);
    let markdown = std::fs::read_to_string(output.join("snapshots.md")).unwrap();
    assert!(markdown.contains("| 1 GiB |"), "{markdown}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains("bench-snapshots"),
        "the XFS pool must be unmounted afterwards"
    );
}

#[test]
fn operator_benchmark_reports_every_number_and_updates_only_its_section() {
    let (_, output, docs) = run_dirs("operator-bench-smoke", "operator");
    let result = run_bench(
        Command::new(env!("CARGO_BIN_EXE_fastvirt-bench"))
            .args([
                "operator",
                "--nodes",
                "60",
                "--profiles",
                "6",
                "--rounds",
                "1",
            ])
            .arg("--update-docs")
            .arg(&docs),
        &output,
        "operator.json",
    );
    assert_eq!(result["nodes"], 60);
    assert_eq!(result["profiles"], 6);
    for key in [
        "first_round_ms",
        "cached_round_ms",
        "uncached_round_ms",
        "peak_rss_mib",
    ] {
        assert!(
            result[key].as_f64().is_some_and(|v| v > 0.0),
            "{key}: {result}"
        );
    }
    let page = std::fs::read_to_string(&docs).unwrap();
    assert!(!page.contains("\nold\n"));
    assert!(page.contains("60 nodes, 6 NodeTuningProfiles"));
    assert!(page.ends_with("<!-- fastvirt-bench:operator:end -->\nkept\n"));
}

#[test]
fn latency_benchmark_draws_both_curves() {
    if let Some(reason) = common::skip_reason(&["fio"]) {
        eprintln!("SKIP latency_benchmark_draws_both_curves: {reason}");
        return;
    }
    if !Path::new(fastvirt_e2e::latency::FONT).exists() {
        eprintln!(
            "SKIP latency_benchmark_draws_both_curves: no {} (scripts/install-deps.sh installs fonts-dejavu-core)",
            fastvirt_e2e::latency::FONT
        );
        return;
    }
    let (work, output, docs) = run_dirs("bench-latency", "latency");
    let plot_copy = work.join("copied.png");
    let report = run_bench(
        bench(&work)
            .arg("--quick")
            .arg("latency")
            .arg("--plot-copy")
            .arg(&plot_copy)
            .arg("--update-docs")
            .arg(&docs),
        &output,
        "latency.json",
    );
    for side in ["volume", "raw"] {
        let by_rate = report[side]["by_rate"].as_array().unwrap();
        assert_eq!(by_rate.len(), 3, "quick: 10, 50 and 100 %");
        let achieved: Vec<f64> = by_rate
            .iter()
            .map(|p| p["achieved_iops"].as_f64().unwrap())
            .collect();
        assert!(
            achieved[0] > 0.0 && achieved[0] < achieved[2],
            "{side}: a tenth of the maximum offered achieves less than all of it: {achieved:?}"
        );
        for point in by_rate {
            assert!(point["p99_us"].as_f64().unwrap() >= point["p50_us"].as_f64().unwrap());
        }
        assert_eq!(report[side]["by_depth"].as_array().unwrap().len(), 2);
    }
    for png in [output.join("latency.png"), plot_copy] {
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", png.display());
    }
    let page = std::fs::read_to_string(&docs).unwrap();
    assert!(
        page.contains("![p50 and p99 latency against achieved IOPS](copied.png)")
            && !page.contains("\nold\n")
            && page.ends_with("kept\n"),
        "{page}"
    );
}

#[test]
fn pgbench_benchmark_measures_both_sides() {
    if let Some(reason) = common::skip_reason(&["setpriv"]) {
        eprintln!("SKIP pgbench_benchmark_measures_both_sides: {reason}");
        return;
    }
    if let Err(error) = fastvirt_e2e::pgbench::bin_dir() {
        eprintln!("SKIP pgbench_benchmark_measures_both_sides: {error}");
        return;
    }
    if !Path::new(fastvirt_e2e::latency::FONT).exists() {
        eprintln!(
            "SKIP pgbench_benchmark_measures_both_sides: no {} (scripts/install-deps.sh installs fonts-dejavu-core)",
            fastvirt_e2e::latency::FONT
        );
        return;
    }
    let (work, output, docs) = run_dirs("bench-pgbench", "pgbench");
    let report = run_bench(
        bench(&work)
            .arg("--quick")
            .arg("pgbench")
            .arg("--update-docs")
            .arg(&docs),
        &output,
        "pgbench.json",
    );
    for side in ["volume", "raw"] {
        let points = report[side]["points"].as_array().unwrap();
        assert_eq!(
            points
                .iter()
                .map(|p| p["clients"].as_u64().unwrap())
                .collect::<Vec<_>>(),
            [1, 4],
            "quick: 1 and 4 clients"
        );
        for point in points {
            assert!(point["tps"].as_f64().unwrap() > 0.0, "{side}: {point}");
            assert!(
                point["latency_ms"].as_f64().unwrap() > 0.0,
                "{side}: {point}"
            );
        }
        // The data set is what pgbench -i made at scale 2: two hundred thousand accounts.
        let bytes = report[side]["database_bytes"].as_u64().unwrap();
        assert!(bytes > 20 << 20, "{side}: {bytes} bytes of database");
    }
    let bytes = std::fs::read(output.join("pgbench.png")).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let page = std::fs::read_to_string(&docs).unwrap();
    assert!(
        page.contains("| 4 |") && !page.contains("\nold\n") && page.ends_with("kept\n"),
        "{page}"
    );
}

#[test]
fn qos_benchmark_caps_the_limited_side() {
    if let Some(reason) = common::skip_reason(&["fio"]) {
        eprintln!("SKIP qos_benchmark_caps_the_limited_side: {reason}");
        return;
    }
    if fastvirt_csi::qos::consumers::Hierarchies::discover(Path::new("/sys/fs/cgroup"))
        .0
        .is_empty()
    {
        eprintln!(
            "SKIP qos_benchmark_caps_the_limited_side: no cgroup hierarchy here throttles block I/O"
        );
        return;
    }
    let (work, output, docs) = run_dirs("bench-qos", "qos");
    let report = run_bench(
        bench(&work)
            .arg("--quick")
            .arg("qos")
            .arg("--update-docs")
            .arg(&docs),
        &output,
        "qos.json",
    );
    let limit = report["limit_iops"].as_f64().unwrap();
    assert!(limit > 0.0 && limit < report["max_iops"].as_f64().unwrap());
    let points = report["points"].as_array().unwrap();
    assert_eq!(points.len(), 2, "quick: 50 and 150 % of the limit");
    // Offered half the limit, both settings get what is offered; offered one and a half times
    // the limit, the limited one gets no more than the limit (with the kernel's slack), the other
    // more than the limit.
    let achieved = |p: &serde_json::Value, side: &str| p[side]["achieved_iops"].as_f64().unwrap();
    assert!(achieved(&points[0], "limited") < limit, "{report}");
    assert!(achieved(&points[1], "limited") <= limit * 1.1, "{report}");
    assert!(achieved(&points[1], "unlimited") > limit * 1.1, "{report}");
    let page = std::fs::read_to_string(&docs).unwrap();
    assert!(
        page.contains("| 150 % (") && !page.contains("\nold\n") && page.ends_with("kept\n"),
        "{page}"
    );
}

#[test]
fn layouts_benchmark_measures_three_sides_per_workload_and_engine() {
    if let Some(reason) = common::skip_reason(&["fio", "mkfs.btrfs", "btrfs"]) {
        eprintln!("SKIP layouts_benchmark_measures_three_sides: {reason}");
        return;
    }
    let (work, output, docs) = run_dirs("bench-layouts", "layouts");
    let report = run_bench(
        bench(&work)
            .arg("--quick")
            .arg("layouts")
            .arg("--update-docs")
            .arg(&docs),
        &output,
        "layouts.json",
    );
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 8, "4 workloads × io_uring and libaio: {report}");
    for row in rows {
        let iops: Vec<f64> = row["iops"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(iops.len(), 3, "{row}");
        assert!(iops.iter().all(|i| *i > 0.0), "every side did I/O: {row}");
        let ratio = row["disk_image_ratio"].as_f64().unwrap();
        assert!((ratio - iops[2] / iops[0]).abs() < 1e-9, "{row}");
    }
    let page = std::fs::read_to_string(&docs).unwrap();
    assert!(
        page.contains("| disk-image / raw |")
            && !page.contains("\nold\n")
            && page.ends_with("kept\n"),
        "{page}"
    );
}
