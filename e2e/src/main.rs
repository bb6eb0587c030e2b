//! `fastvirt-bench`: starts `fastvirt-csi` on a local pool, creates and publishes a block volume the
//! way kubelet would, and measures it against the raw file underneath; then measures the control
//! path. No cluster needed. Writes JSON and Markdown, and optionally the docs section.

use fastvirt_e2e::{
    datapath, fio, kubelet, latency, layouts, lifecycle, operator_bench, pgbench, qos_bench,
    report, snapshots,
};

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
    /// Latency against load: 4k random reads on a published volume and on the raw file beside it,
    /// at fixed offered rates (percent of each side's maximum) and at queue depths; a PNG plot.
    Latency {
        /// Offered rates in percent of the side's maximum at QD32.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "10,20,30,40,50,60,70,80,90,100"
        )]
        rates: Vec<u32>,
        /// Queue depths of the unrated sweep.
        #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32,64")]
        depths: Vec<u32>,
        /// Also copy the plot here (e.g. docs/latency.png).
        #[arg(long)]
        plot_copy: Option<PathBuf>,
    },
    /// PostgreSQL (Debian's) on a fastvirt ext4 volume against the same on the pool's own
    /// filesystem: pgbench's TPC-B-like load at several client counts, each server in a memory
    /// cgroup about a quarter of its data set; a PNG plot. Uses `--size-mib` for the volume.
    Pgbench {
        /// pgbench client counts, one point each.
        #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
        clients: Vec<u32>,
        /// pgbench scale factor (about 15 MiB per unit).
        #[arg(long, default_value_t = 34)]
        scale: u32,
        /// Each server's memory cgroup limit in MiB, page cache and shared buffers included
        /// (the default is about a quarter of the default scale's database). Too little for
        /// the client count gets the server OOM-killed in its cgroup: the error says so.
        #[arg(long, default_value_t = 128)]
        memory_mib: u64,
        /// PostgreSQL's shared_buffers in MiB.
        #[arg(long, default_value_t = 16)]
        shared_buffers_mib: u64,
        /// Also copy the plot here (e.g. docs/pgbench.png).
        #[arg(long)]
        plot_copy: Option<PathBuf>,
    },
    /// I/O limits: a published block volume read from a pod-like cgroup with a read limit of a
    /// share of its maximum, against the same volume without one, at offered rates around the
    /// limit. Needs a cgroup hierarchy that throttles block I/O (v1 blkio or v2 io).
    Qos {
        /// The limit, in percent of the volume's measured maximum.
        #[arg(long, default_value_t = 50)]
        limit_percent: u32,
        /// Offered rates, in percent of the limit.
        #[arg(long, value_delimiter = ',', default_value = "25,50,75,90,100,125,150")]
        offered: Vec<u32>,
    },
    /// KubeVirt's three disk sides in one pool: the raw file, a `device` volume (the loop device a
    /// Block PVC gives QEMU) and a `disk-image` volume (the disk.img a Filesystem PVC of that
    /// layout gives QEMU), 4k random I/O at QD1 and QD32, in rotated rounds. The pool is a btrfs
    /// with quotas made under the work directory. Uses `--size-mib` per side.
    Layouts {
        /// fio engines, each a set of rows.
        #[arg(long, value_delimiter = ',', default_value = "io_uring,libaio")]
        engines: Vec<String>,
    },
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
            // PostgreSQL's WAL alone takes 16 MiB segments: the database needs more room.
            let quick_size = if matches!(self.command, Some(Benchmark::Pgbench { .. })) {
                256
            } else {
                64
            };
            self.size_mib = self.size_mib.min(quick_size);
            self.rounds = 1;
            self.runtime = 1;
            self.lifecycle_volumes = self.lifecycle_volumes.min(5);
            self.lifecycle_size_mib = self.lifecycle_size_mib.min(16);
            if let Some(Benchmark::Latency { rates, depths, .. }) = &mut self.command {
                rates.retain(|r| [10, 50, 100].contains(r));
                depths.retain(|d| [1, 32].contains(d));
            }
            if let Some(Benchmark::Qos { offered, .. }) = &mut self.command {
                offered.retain(|o| [50, 150].contains(o));
            }
            if let Some(Benchmark::Pgbench {
                clients,
                scale,
                memory_mib,
                shared_buffers_mib,
                ..
            }) = &mut self.command
            {
                clients.retain(|c| [1, 4].contains(c));
                *scale = (*scale).min(2);
                *memory_mib = (*memory_mib).min(32);
                *shared_buffers_mib = (*shared_buffers_mib).min(8);
            }
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
    if let Some(Benchmark::Layouts { engines }) = &cli.command {
        let plan = layouts::Plan {
            rounds: cli.rounds,
            runtime_s: cli.runtime,
            size_bytes: cli.size_mib << 20,
            engines: engines.clone(),
        };
        let report = layouts::measure(driver_binary(&cli)?, &work_dir, plan).await?;
        let summary = report.write(&cli.output)?;
        if let Some(page) = &cli.update_docs {
            update_docs(page, layouts::DOCS_START, layouts::DOCS_END, &summary)?;
        }
        println!("{summary}");
        return Ok(());
    }
    let (process, mut clients, pool) = start_driver(&cli, &work_dir).await?;
    if let Some(Benchmark::Qos {
        limit_percent,
        offered,
    }) = &cli.command
    {
        let plan = qos_bench::Plan {
            limit_percent: *limit_percent,
            offered_percents: offered.clone(),
            rounds: cli.rounds,
            runtime_s: cli.runtime,
        };
        let result =
            qos_bench::measure(&mut clients, &work_dir, &pool, cli.size_mib << 20, plan).await;
        stop_driver(process, &work_dir, &pool)?;
        let summary = qos_bench::markdown(&result?.write(&cli.output)?);
        if let Some(page) = &cli.update_docs {
            update_docs(page, qos_bench::DOCS_START, qos_bench::DOCS_END, &summary)?;
        }
        println!("{summary}");
        return Ok(());
    }
    if let Some(Benchmark::Pgbench {
        clients: client_counts,
        scale,
        memory_mib,
        shared_buffers_mib,
        plot_copy,
    }) = &cli.command
    {
        let plan = pgbench::Plan {
            clients: client_counts.clone(),
            rounds: cli.rounds,
            runtime_s: cli.runtime,
            scale: *scale,
            memory_limit_mib: *memory_mib,
            shared_buffers_mib: *shared_buffers_mib,
        };
        let measured =
            pgbench::sides::measure(&mut clients, &work_dir, &pool, cli.size_mib << 20, plan).await;
        stop_driver(process, &work_dir, &pool)?;
        let result = measured?;
        let summary = pgbench::sides::write(&result, &cli.output, plot_copy.as_deref())?;
        if let Some(page) = &cli.update_docs {
            update_docs(page, pgbench::DOCS_START, pgbench::DOCS_END, &summary)?;
        }
        println!("{summary}");
        return Ok(());
    }
    if let Some(Benchmark::Latency {
        rates,
        depths,
        plot_copy,
    }) = &cli.command
    {
        let plan = latency::Plan {
            rate_percents: rates.clone(),
            depths: depths.clone(),
            rounds: cli.rounds,
            runtime_s: cli.runtime,
        };
        let result = run_latency(&cli, &work_dir, &pool, &mut clients, plan).await;
        stop_driver(process, &work_dir, &pool)?;
        return write_latency(&cli, result?, plot_copy.as_deref());
    }
    let result = run(&cli, &work_dir, &pool, &mut clients).await;
    let stopped = stop_driver(process, &work_dir, &pool);
    let report = result?;
    stopped?;

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

/// Starts fastvirt-csi on a fresh pool under `work_dir`.
async fn start_driver(
    cli: &Cli,
    work_dir: &Path,
) -> anyhow::Result<(DriverProcess, Clients, PathBuf)> {
    let pool = work_dir.join("pool");
    let _ = std::fs::remove_dir_all(&pool);
    std::fs::create_dir_all(&pool)?;
    let args = DriverArgs {
        binary: driver_binary(cli)?,
        socket: work_dir.join("csi.sock"),
        node_id: "bench-node".into(),
        mode: "all",
        pools: vec![("default".into(), pool.clone())],
        state_dir: work_dir.join("state"),
        log_file: Some(work_dir.join("driver.log")),
        extra_args: [
            fastvirt_csi::local::on_the_host_disk(),
            // The qos benchmark's pod is published under a kubelet-like directory.
            vec![
                "--kubelet-dir".into(),
                work_dir.join("kubelet").display().to_string(),
            ],
        ]
        .concat(),
    };
    eprintln!("starting fastvirt-csi on pool {}", pool.display());
    let (process, clients) = DriverProcess::start(args).await?;
    Ok((process, clients, pool))
}

/// Stops the driver and removes what it left: mounts, loop devices, the pool.
fn stop_driver(mut process: DriverProcess, work_dir: &Path, pool: &Path) -> anyhow::Result<()> {
    let stopped = process.terminate();
    fastvirt_csi::local::release_all_under(work_dir);
    let _ = std::fs::remove_dir_all(pool);
    stopped.context("stopping fastvirt-csi")?;
    Ok(())
}

/// A block volume published as kubelet would, and a raw file like it in the same pool, both
/// filled so reads hit written blocks.
struct Sides {
    id: String,
    staging: PathBuf,
    target: PathBuf,
    raw: PathBuf,
}

async fn prepare_sides(
    clients: &mut Clients,
    work_dir: &Path,
    pool: &Path,
    size: u64,
    engine: &str,
) -> anyhow::Result<Sides> {
    eprintln!(
        "creating, staging and publishing a {} MiB block volume as kubelet would",
        size >> 20
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
    Ok(Sides {
        id,
        staging,
        target,
        raw,
    })
}

async fn remove_sides(clients: &mut Clients, sides: Sides) -> anyhow::Result<()> {
    kubelet::unpublish(clients, &sides.id, &sides.target).await?;
    kubelet::unstage(clients, &sides.id, &sides.staging).await?;
    kubelet::delete(clients, &sides.id).await?;
    std::fs::remove_file(&sides.raw)?;
    Ok(())
}

async fn run_latency(
    cli: &Cli,
    work_dir: &Path,
    pool: &Path,
    clients: &mut Clients,
    plan: latency::Plan,
) -> anyhow::Result<latency::LatencyReport> {
    let started_utc = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let size = cli.size_mib << 20;
    let engine = fio::engine();
    let sides = prepare_sides(clients, work_dir, pool, size, engine).await?;
    eprintln!(
        "latency: {} rates and {} depths × {} rounds × 2 sides × {} s",
        plan.rate_percents.len(),
        plan.depths.len(),
        plan.rounds,
        plan.runtime_s + 1
    );
    let measured = latency::run(&sides.target, &sides.raw, size, &plan, engine);
    remove_sides(clients, sides).await?;
    let (volume, raw) = measured?;
    Ok(latency::LatencyReport {
        started_utc,
        machine: report::machine(pool),
        plan,
        volume_size_bytes: size,
        fio_engine: engine.to_owned(),
        volume,
        raw,
    })
}

fn write_latency(
    cli: &Cli,
    result: latency::LatencyReport,
    plot_copy: Option<&Path>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&cli.output)?;
    let plot = cli.output.join("latency.png");
    latency::plot(&result, &plot)?;
    let plot_name = report::copy_plot(&plot, plot_copy)?;
    let summary = latency::markdown(&result, &plot_name);
    std::fs::write(
        cli.output.join("latency.json"),
        serde_json::to_vec_pretty(&result)?,
    )?;
    std::fs::write(cli.output.join("latency.md"), &summary)?;
    if let Some(page) = &cli.update_docs {
        update_docs(page, latency::DOCS_START, latency::DOCS_END, &summary)?;
    }
    println!("{summary}");
    println!("Results: {}", cli.output.join("latency.json").display());
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

    let sides = prepare_sides(clients, work_dir, pool, size, engine).await?;

    eprintln!(
        "data path: {} workloads × {} rounds × 2 sides × {} s",
        datapath::WORKLOADS.len(),
        cli.rounds,
        cli.runtime + 1
    );
    let data_path = datapath::run(
        &sides.target,
        &sides.raw,
        size,
        cli.rounds,
        cli.runtime,
        engine,
    );
    remove_sides(clients, sides).await?;
    let data_path = data_path?;

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
