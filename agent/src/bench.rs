//! The agent's benchmark: plan + apply on a synthetic 256-CPU / 4,000-IRQ host tree, the CPU cost
//! of the steady-state re-check as a share of one core at the re-check interval, and the peak
//! resident memory. Results are compared with the targets and can be written into
//! docs/benchmarks.md between the agent's markers.

use crate::apply;
use crate::cli::BenchArgs;
use crate::congestion;
use crate::fixture::{self, FixtureFs, FixtureSpec};
use crate::host;
use crate::hostfs::RealHostFs;
use crate::journal::Journal;
use crate::plan::{self, PlanOptions};
use crate::status_lines;
use anyhow::{Context, bail};
use fastvirt_api::NodeTuningProfileSpec;
use fastvirt_api::cpuset::CpuSet;
use nix::sys::resource::{UsageWho, getrusage};
use std::path::Path;
use std::time::{Duration, Instant};

pub const DOCS_START: &str = "<!-- fastvirt-bench:agent:start -->";
pub const DOCS_END: &str = "<!-- fastvirt-bench:agent:end -->";
const TARGET_PLAN_APPLY_MS: f64 = 200.0;
const TARGET_CORE_PERCENT: f64 = 0.5;
const TARGET_RSS_MIB: f64 = 20.0;

#[derive(Debug, Clone, PartialEq)]
pub struct BenchResults {
    pub cpus: u32,
    pub irqs: usize,
    pub changes: usize,
    pub runs: usize,
    pub plan_apply_ms: Vec<f64>,
    /// CPU time (user + system) of the same runs: what the machine's other load cannot inflate.
    pub plan_apply_cpu_ms: Vec<f64>,
    /// /proc/loadavg's 1-minute figure when the benchmark ended.
    pub load_average: f64,
    pub rechecks: u32,
    pub recheck_cpu_ms: f64,
    pub interval: Duration,
    pub rss_peak_mib: f64,
}

impl BenchResults {
    pub fn plan_apply_median_ms(&self) -> f64 {
        median(&self.plan_apply_ms)
    }

    pub fn core_percent(&self) -> f64 {
        self.recheck_cpu_ms / self.interval.as_secs_f64() / 10.0
    }
}

pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// One reserved core (both threads) per NUMA node; every other CPU isolated.
pub fn bench_profile(spec: &FixtureSpec) -> anyhow::Result<NodeTuningProfileSpec> {
    let cores = spec.sockets * spec.cores_per_socket;
    let reserved: CpuSet = (0..spec.sockets)
        .flat_map(|node| {
            [
                node * spec.cores_per_socket,
                node * spec.cores_per_socket + cores,
            ]
        })
        .collect();
    let isolated: CpuSet = (0..spec.cpu_count())
        .filter(|c| !reserved.contains(*c))
        .collect();
    let hugepages: Vec<String> = (0..spec.sockets)
        .map(|node| format!("{{size: 2Mi, count: 1024, numaNode: {node}}}"))
        .collect();
    let yaml = format!(
        "cpu: {{reserved: '{reserved}', isolated: '{isolated}'}}\n\
         hugepages: [{}]\n\
         power: {{governor: performance, energyPerformancePreference: performance, maxCstateLatencyUs: 10}}\n\
         transparentHugepages: madvise\nksm: {{enabled: false}}\nsysctlPreset: virtual-host\n\
         sysctls: {{kernel.numa_balancing: '0'}}\n",
        hugepages.join(", ")
    );
    serde_yaml::from_str(&yaml).context("the benchmark profile")
}

/// sysfs and procfs live in memory; a tmpfs tree is the closer model when the machine has one.
pub fn memory_backed_tempdir() -> std::io::Result<tempfile::TempDir> {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm)
    } else {
        tempfile::tempdir()
    }
}

fn cpu_time() -> anyhow::Result<Duration> {
    let usage = getrusage(UsageWho::RUSAGE_SELF)?;
    let as_duration = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec().max(0).unsigned_abs())
            + Duration::from_micros(t.tv_usec().max(0).unsigned_abs())
    };
    Ok(as_duration(usage.user_time()) + as_duration(usage.system_time()))
}

/// Peak resident memory of this process (VmHWM).
pub fn rss_peak_mib() -> anyhow::Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmHWM in /proc/self/status")?;
    Ok(kb / 1024.0)
}

pub fn run(args: &BenchArgs) -> anyhow::Result<BenchResults> {
    if args.runs == 0 || args.rechecks == 0 {
        bail!("--runs and --rechecks must be at least 1");
    }
    let spec = FixtureSpec::bench_256_cpus();
    let profile = bench_profile(&spec)?;
    let mut plan_apply_ms = Vec::with_capacity(args.runs);
    let mut plan_apply_cpu_ms = Vec::with_capacity(args.runs);
    let mut changes = 0;
    let mut last_tree = None;
    for _ in 0..args.runs {
        let dir = memory_backed_tempdir()?;
        fixture::write_host(dir.path(), &spec)?;
        let fs = FixtureFs::open(dir.path())?;
        let started = Instant::now();
        let cpu_before = cpu_time()?;
        let host = host::read(&fs)?;
        let plan = plan::plan(&host, &profile, &PlanOptions::default())?;
        apply::apply(&fs, &plan)?;
        plan_apply_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        plan_apply_cpu_ms.push((cpu_time()? - cpu_before).as_secs_f64() * 1000.0);
        changes = plan.changes.len();
        last_tree = Some((dir, fs));
    }
    let (_dir, fs) = last_tree.context("no run")?;
    // The re-check of `run`: read the host, plan against the journal, apply what drifted (nothing
    // here), read back what the status lists as applied, and take a congestion sample of this
    // machine's real /proc.
    let proc_root = RealHostFs::new("/");
    let source = congestion::detect(&proc_root).ok();
    let before = cpu_time()?;
    for _ in 0..args.rechecks {
        let host = host::read(&fs)?;
        let options = PlanOptions {
            known_managed_irqs: Journal::load(&fs)?.managed_irqs,
            ..PlanOptions::default()
        };
        let plan = plan::plan(&host, &profile, &options)?;
        if !plan.changes.is_empty() {
            bail!(
                "the steady state should need no changes, found {}",
                plan.changes.len()
            );
        }
        apply::apply(&fs, &plan)?;
        let applied = Journal::load(&fs)?.current_values(&fs);
        status_lines::fold(applied.iter().map(|(s, v)| (s.as_str(), v.as_str())));
        if let Some(source) = source {
            congestion::sample(&proc_root, source, congestion::monotonic_ns())?;
        }
    }
    let recheck_cpu_ms = (cpu_time()? - before).as_secs_f64() * 1000.0 / f64::from(args.rechecks);
    let host = host::read(&fs)?;
    Ok(BenchResults {
        cpus: spec.cpu_count(),
        irqs: host.irqs.len(),
        changes,
        runs: args.runs,
        plan_apply_ms,
        plan_apply_cpu_ms,
        load_average: std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0),
        rechecks: args.rechecks,
        recheck_cpu_ms,
        interval: args.interval,
        rss_peak_mib: rss_peak_mib()?,
    })
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "missed" }
}

/// The Markdown section, markers included.
pub fn markdown(results: &BenchResults, machine: &str) -> String {
    let cpu_median = median(&results.plan_apply_cpu_ms);
    let median = results.plan_apply_median_ms();
    let min = results
        .plan_apply_ms
        .iter()
        .copied()
        .fold(f64::INFINITY, f64::min);
    let max = results.plan_apply_ms.iter().copied().fold(0.0, f64::max);
    let core = results.core_percent();
    format!(
        "{DOCS_START}\n\
         ## Node agent (`fastvirt-agent bench`)\n\n\
         Synthetic host tree: {cpus} CPUs on 4 NUMA nodes, {irqs} IRQs (NVMe with managed queue IRQs, NIC queues), \
         cpufreq and 4 idle states per CPU; the profile reserves one core per node and changes {changes} settings. \
         Machine: {machine}; 1-minute load average at the end: {load:.2}. Release build.\n\n\
         | measure | result | target | |\n\
         |---|---|---|---|\n\
         | plan + apply (read host, plan, journal, write, read back), median of {runs} | {median:.1} ms (min {min:.1}, max {max:.1}) | ≤ {TARGET_PLAN_APPLY_MS:.0} ms | {v1} |\n\
         | the same, CPU time (user + system), median | {cpu_median:.1} ms | ≤ {TARGET_PLAN_APPLY_MS:.0} ms | {v4} |\n\
         | steady-state re-check, CPU time per re-check (mean of {rechecks}) | {per:.2} ms | | |\n\
         | re-check cost at a {interval} s interval | {core:.4} % of one core | < {TARGET_CORE_PERCENT} % | {v2} |\n\
         | peak RSS (VmHWM) of the benchmark process | {rss:.1} MiB | < {TARGET_RSS_MIB:.0} MiB | {v3} |\n\n\
         The re-check is what `run` does every interval without the API calls: read the host model, plan \
         against the journal, apply the (empty) drift, read the applied settings for the status and take one \
         congestion sample of the machine's real /proc. \
         The tree lives on tmpfs (/dev/shm), as sysfs and procfs live in memory, and each write includes the \
         fixture's model of the kernel's answer (FixtureFs). A tmpfs tree is no kernel filesystem, so each write \
         there is a temporary file and a rename (what keeps a killed apply whole on a plain tree), where sysfs \
         takes one write(2): an upper bound for a node. The journal's fsync costs nothing there, on a node it \
         adds one disk flush to the first apply. The RSS is the whole benchmark process, tree generation \
         included; `run` adds its Kubernetes client on top. The machine is shared with other builds, so wall \
         times vary with the load; CPU time varies less. Regenerate with `cargo run --release -p fastvirt-agent -- bench --write-docs docs/benchmarks.md`.\n\
         {DOCS_END}\n",
        cpus = results.cpus,
        load = results.load_average,
        cpu_median = cpu_median,
        v4 = verdict(cpu_median <= TARGET_PLAN_APPLY_MS),
        irqs = results.irqs,
        changes = results.changes,
        runs = results.runs,
        v1 = verdict(median <= TARGET_PLAN_APPLY_MS),
        rechecks = results.rechecks,
        per = results.recheck_cpu_ms,
        interval = results.interval.as_secs(),
        v2 = verdict(core < TARGET_CORE_PERCENT),
        rss = results.rss_peak_mib,
        v3 = verdict(results.rss_peak_mib < TARGET_RSS_MIB),
    )
}

/// Replaces the section between the agent's markers, or appends it when the file has none.
pub fn write_docs(path: &Path, section: &str) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let updated = match (text.find(DOCS_START), text.find(DOCS_END)) {
        (Some(start), Some(end)) if end > start => {
            format!(
                "{}{}{}",
                &text[..start],
                section.trim_end(),
                &text[end + DOCS_END.len()..]
            )
        }
        _ => format!(
            "{}\n{}",
            text.trim_end_matches('\n').to_owned() + "\n",
            section
        ),
    };
    std::fs::write(path, updated).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_the_docs_section_replace_only_the_agent_markers() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("benchmarks.md");
        std::fs::write(&path, "# Benchmarks\n\nother section\n").unwrap();
        write_docs(&path, &format!("{DOCS_START}\nfirst\n{DOCS_END}\n")).unwrap();
        write_docs(&path, &format!("{DOCS_START}\nsecond\n{DOCS_END}\n")).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("# Benchmarks\n\nother section\n\n{DOCS_START}\nsecond\n{DOCS_END}\n")
        );
    }
}
