//! `fastvirt-bench`: starts `fastvirt-csi` on a local pool, creates and publishes a block volume the
//! way kubelet would, and measures it against the raw file underneath; then measures the control
//! path. No cluster needed. Writes JSON and Markdown, and optionally the docs section.

use fastvirt_e2e::{datapath, fio, kubelet, lifecycle, operator_bench, report, snapshots};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use fastvirt_csi::local::{Clients, DriverArgs, DriverProcess};
use std::path::{Path, PathBuf};

#[derive(Debug, Parser)]
#[command(
    name = "fastvirt-bench",
    version,
    about = "Measure fastvirt-csi volumes against the raw disk, locally"
)]
struct Cli {
    /// Run another benchmark instead of the data path and lifecycle one.
    #[command(subcommand)]
    command: Option<Benchmark>,
    /// The fastvirt-csi binary (default: next to this one).
    #[arg(long, global = true)]
    driver: Option<PathBuf>,
    /// Scratch directory for the pool and kubelet-like paths; it must be on the disk to measure.
    #[arg(long, default_value = "target/fastvirt-bench", global = true)]
    work_dir: PathBuf,
    /// Size of the measured volume and of the raw file, in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Interleaved rounds per workload.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Seconds per fio run (after a 1 s ramp).
    #[arg(long, default_value_t = 5)]
    runtime: u32,
    /// Volumes in the lifecycle benchmark.
    #[arg(long, default_value_t = 100)]
    lifecycle_volumes: usize,
    /// Size of each lifecycle volume, in MiB.
    #[arg(long, default_value_t = 1024)]
    lifecycle_size_mib: u64,
    /// Where to write benchmark.json and benchmark.md.
    #[arg(long, default_value = "target/fastvirt-bench/results", global = true)]
    output: PathBuf,
    /// Also replace the results section of this Markdown page (e.g. docs/benchmarks.md).
    #[arg(long, global = true)]
    update_docs: Option<PathBuf>,
    /// A fast smoke run: small volume, one short round, few lifecycles. Numbers are not meaningful.
    #[arg(long)]
    quick: bool,
}

#[derive(Debug, Subcommand)]
enum Benchmark {
    /// The operator: NodeTuningProfile status for a large cluster, and the memory of its caches.
    /// Needs neither root nor a cluster.
    Operator {
        /// Nodes (each with a TunedNode report).
        #[arg(long, default_value_t = 1000)]
        nodes: usize,
        /// NodeTuningProfiles.
        #[arg(long, default_value_t = 50)]
        profiles: usize,
        /// Measured rounds (after one warm-up round).
        #[arg(long, default_value_t = 5)]
        rounds: u32,
    },
    /// Snapshot, clone and restore times of fully written volumes: an XFS pool with reflink against
    /// the copy fallback on the host disk's filesystem.
    Snapshots {
        /// Volume sizes in GiB.
        #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
        sizes_gib: Vec<u64>,
        /// Rounds per size on the reflink pool.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// Rounds per size on the copy pool (each copies the whole volume three times).
        #[arg(long, default_value_t = 1)]
        copy_rounds: u32,
    },
}

impl Cli {
    fn apply_quick(&mut self) {
        if self.quick {
            self.size_mib = self.size_mib.min(64);
            self.rounds = 1;
            self.runtime = 1;
            self.lifecycle_volumes = self.lifecycle_volumes.min(5);
            self.lifecycle_size_mib = self.lifecycle_size_mib.min(16);
        }
    }
}

fn default_driver() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .context("no directory for the current executable")?;
    // Next to this binary, or one level up when run from target/*/deps by the test harness.
    [dir.join("fastvirt-csi"), dir.join("../fastvirt-csi")]
        .into_iter()
        .find(|p| p.exists())
        .context("fastvirt-csi not found next to fastvirt-bench; build it or pass --driver")
}

fn preflight() -> anyhow::Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!("fastvirt-bench attaches loop devices and mounts: run it as root");
    }
    if !Path::new("/dev/loop-control").exists() {
        bail!("this machine has no /dev/loop-control; loop devices are required");
    }
    std::process::Command::new("fio")
        .arg("--version")
        .output()
        .context("fio is not installed (scripts/install-deps.sh installs it)")?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    cli.apply_quick();
    if let Some(Benchmark::Operator {
        nodes,
        profiles,
        rounds,
    }) = &cli.command
    {
        return run_operator(&cli, *nodes, *profiles, *rounds).await;
    }
    preflight()?;
    std::fs::create_dir_all(&cli.work_dir)?;
    let work_dir = cli.work_dir.canonicalize()?;
    // A run that was killed may have left mounts and loop devices behind.
    fastvirt_csi::local::release_all_under(&work_dir);
    if let Some(Benchmark::Snapshots {
        sizes_gib,
        rounds,
        copy_rounds,
    }) = &cli.command
    {
        return run_snapshots(&cli, &work_dir, sizes_gib, *rounds, *copy_rounds).await;
    }
    let pool = work_dir.join("pool");
    let _ = std::fs::remove_dir_all(&pool);
    std::fs::create_dir_all(&pool)?;
    let driver = driver_binary(&cli)?;
    let args = DriverArgs {
        binary: driver,
        socket: work_dir.join("csi.sock"),
        node_id: "bench-node".into(),
        mode: "all",
        pools: vec![("default".into(), pool.clone())],
        state_dir: work_dir.join("state"),
        log_file: Some(work_dir.join("driver.log")),
        extra_args: fastvirt_csi::local::on_the_host_disk(),
    };
    eprintln!("starting fastvirt-csi on pool {}", pool.display());
    let (mut process, mut clients) = DriverProcess::start(args).await?;
    let result = run(&cli, &work_dir, &pool, &mut clients).await;
    let stopped = process.terminate();
    fastvirt_csi::local::release_all_under(&work_dir);
    let _ = std::fs::remove_dir_all(&pool);
    let report = result?;
    stopped.context("stopping fastvirt-csi")?;

    std::fs::create_dir_all(&cli.output)?;
    let summary = report::markdown(&report);
    std::fs::write(
        cli.output.join("benchmark.json"),
        serde_json::to_vec_pretty(&report)?,
    )?;
    std::fs::write(cli.output.join("benchmark.md"), &summary)?;
    if let Some(page) = &cli.update_docs {
        update_docs(page, report::DOCS_START, report::DOCS_END, &summary)?;
    }
    println!("{summary}");
    println!("Results: {}", cli.output.join("benchmark.json").display());
    Ok(())
}

fn driver_binary(cli: &Cli) -> anyhow::Result<PathBuf> {
    match &cli.driver {
        Some(path) => Ok(path.clone()),
        None => default_driver(),
    }
}

/// Writes `summary` between the markers of `page`.
fn update_docs(page: &Path, start: &str, end: &str, summary: &str) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(page).with_context(|| format!("reading {}", page.display()))?;
    let updated = report::splice_docs(&text, start, end, summary)
        .with_context(|| format!("{} has no {start} … {end} markers", page.display()))?;
    std::fs::write(page, updated)?;
    Ok(())
}

async fn run_operator(cli: &Cli, nodes: usize, profiles: usize, rounds: u32) -> anyhow::Result<()> {
    let started_utc = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let result = operator_bench::run(nodes, profiles, rounds).await?;
    std::fs::create_dir_all(&cli.output)?;
    let summary = operator_bench::markdown(&result, &started_utc, &report::machine(&cli.output));
    std::fs::write(
        cli.output.join("operator.json"),
        serde_json::to_vec_pretty(&result)?,
    )?;
    std::fs::write(cli.output.join("operator.md"), &summary)?;
    if let Some(page) = &cli.update_docs {
        update_docs(
            page,
            operator_bench::DOCS_START,
            operator_bench::DOCS_END,
            &summary,
        )?;
    }
    println!("{summary}");
    Ok(())
}

async fn run_snapshots(
    cli: &Cli,
    work_dir: &Path,
    sizes_gib: &[u64],
    rounds: u32,
    copy_rounds: u32,
) -> anyhow::Result<()> {
    let started_utc = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let largest = sizes_gib.iter().copied().max().unwrap_or(1) << 30;
    // The reflink pool needs room for the volume plus metadata; clones share its extents.
    let xfs =
        fastvirt_csi::local::ScratchFs::new(work_dir, largest + largest / 4 + (2 << 30), "xfs");
    let copy_pool = work_dir.join("copy-pool");
    let _ = std::fs::remove_dir_all(&copy_pool);
    let args = DriverArgs {
        binary: driver_binary(cli)?,
        socket: work_dir.join("csi.sock"),
        node_id: "bench-node".into(),
        mode: "all",
        pools: vec![
            ("reflink".into(), xfs.mount_point.join("pool")),
            ("copy".into(), copy_pool.clone()),
        ],
        state_dir: work_dir.join("state"),
        log_file: Some(work_dir.join("driver.log")),
        // The copies need all of the disk this benchmark may use.
        extra_args: fastvirt_csi::local::on_the_host_disk(),
    };
    let (mut process, mut clients) = DriverProcess::start(args).await?;
    let engine = fio::engine();
    let mut results = Vec::new();
    let outcome: anyhow::Result<()> = async {
        for &size_gib in sizes_gib {
            let reflink = snapshots::measure_pool(
                &mut clients,
                work_dir,
                "reflink",
                size_gib,
                rounds,
                engine,
            )
            .await?;
            let copy = snapshots::measure_pool(
                &mut clients,
                work_dir,
                "copy",
                size_gib,
                copy_rounds,
                engine,
            )
            .await?;
            results.push(snapshots::SizeResult {
                size_gib,
                reflink,
                copy,
            });
        }
        Ok(())
    }
    .await;
    let stopped = process.terminate();
    fastvirt_csi::local::release_all_under(work_dir);
    drop(xfs);
    let _ = std::fs::remove_dir_all(&copy_pool);
    outcome?;
    stopped.context("stopping fastvirt-csi")?;
    let summary = snapshots::markdown(&results, &started_utc, &report::machine(work_dir));
    std::fs::create_dir_all(&cli.output)?;
    std::fs::write(
        cli.output.join("snapshots.json"),
        serde_json::to_vec_pretty(&results)?,
    )?;
    std::fs::write(cli.output.join("snapshots.md"), &summary)?;
    if let Some(page) = &cli.update_docs {
        update_docs(page, snapshots::DOCS_START, snapshots::DOCS_END, &summary)?;
    }
    println!("{summary}");
    Ok(())
}

async fn run(
    cli: &Cli,
    work_dir: &Path,
    pool: &Path,
    clients: &mut Clients,
) -> anyhow::Result<report::Report> {
    let started_utc = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let size = cli.size_mib << 20;
    let engine = fio::engine();
    let fio_version = String::from_utf8_lossy(
        &std::process::Command::new("fio")
            .arg("--version")
            .output()?
            .stdout,
    )
    .trim()
    .to_owned();

    eprintln!(
        "creating, staging and publishing a {} MiB block volume as kubelet would",
        cli.size_mib
    );
    let id = kubelet::create(clients, "bench-data", size).await?;
    let staging = work_dir.join("kubelet/staging/bench-data");
    let target = work_dir.join("kubelet/publish/bench-data/pod");
    kubelet::stage(clients, &id, &staging).await?;
    kubelet::publish(clients, &id, &staging, &target).await?;

    // The baseline: a file like the volume's, in the same pool, read and written with O_DIRECT.
    let raw = pool.join("baseline-raw.img");
    let raw_file = std::fs::File::create(&raw)?;
    nix::fcntl::fallocate(
        &raw_file,
        nix::fcntl::FallocateFlags::empty(),
        0,
        size as i64,
    )?;
    drop(raw_file);
    eprintln!("filling both with data ({engine})");
    // Dirty pages of earlier work would be written back during the measurements and skew them.
    nix::unistd::sync();
    fio::fill(&target, size, engine)?;
    fio::fill(&raw, size, engine)?;

    eprintln!(
        "data path: {} workloads × {} rounds × 2 sides × {} s",
        datapath::WORKLOADS.len(),
        cli.rounds,
        cli.runtime + 1
    );
    let data_path = datapath::run(&target, &raw, size, cli.rounds, cli.runtime, engine)?;

    kubelet::unpublish(clients, &id, &target).await?;
    kubelet::unstage(clients, &id, &staging).await?;
    kubelet::delete(clients, &id).await?;
    std::fs::remove_file(&raw)?;

    eprintln!(
        "control path: {} lifecycles of {} MiB volumes",
        cli.lifecycle_volumes, cli.lifecycle_size_mib
    );
    let lifecycle = lifecycle::run(
        clients,
        work_dir,
        cli.lifecycle_volumes,
        cli.lifecycle_size_mib << 20,
    )
    .await?;

    Ok(report::Report {
        started_utc,
        fastvirt_version: fastvirt_csi::VERSION.to_owned(),
        machine: report::machine(pool),
        settings: report::Settings {
            volume_size_bytes: size,
            rounds: cli.rounds,
            fio_runtime_s: cli.runtime,
            fio_engine: engine.to_owned(),
            fio_version,
        },
        data_path,
        lifecycle,
    })
}
