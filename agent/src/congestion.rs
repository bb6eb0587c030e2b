//! CPU congestion: how long runnable tasks wait for a CPU, next to how busy each CPU is. 20 %
//! utilisation with long waits (bursty load, too few CPUs at the wrong moments) and 100 % with no
//! waits (a busy but uncontended CPU) both happen; utilisation alone cannot tell them apart.
//!
//! Sources, best first: `/proc/schedstat` (CONFIG_SCHEDSTATS: per-CPU run and wait time);
//! per-task `/proc/<pid>/task/<tid>/schedstat` (CONFIG_SCHED_INFO: each task's run_delay, counted
//! on the CPU it last ran on, with utilisation from /proc/stat); PSI `/proc/pressure/cpu` (one
//! node-wide share of time in which some task waited).

use crate::hostfs::HostFs;
use crate::interrupts;
use crate::schedstat::{self, SchedstatError};
use fastvirt_api::cpuset::CpuSet;
use fastvirt_api::tuned_node::CongestionSummary;
use serde::Serialize;
use std::collections::BTreeMap;

/// Utilisation below this with waits above [`BURSTY_WAIT_PERCENT`] is bursty congestion.
pub const BURSTY_UTILISATION_PERCENT: f64 = 50.0;
pub const BURSTY_WAIT_PERCENT: f64 = 10.0;
/// /proc/stat counts in USER_HZ, which Linux fixes at 100 for user space on every architecture.
const NS_PER_TICK: u64 = 10_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Schedstat,
    TaskSchedstat,
    Psi,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Schedstat => "schedstat",
            Source::TaskSchedstat => "task-schedstat",
            Source::Psi => "psi",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CongestionError {
    #[error(
        "no source of run-queue wait times: the kernel has neither /proc/schedstat \
         (CONFIG_SCHEDSTATS), per-task schedstat (CONFIG_SCHED_INFO) nor /proc/pressure/cpu (PSI)"
    )]
    NoSource,
    #[error(transparent)]
    Schedstat(#[from] SchedstatError),
    #[error("the two samples come from different sources")]
    MixedSources,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct CpuTimes {
    busy_ns: u64,
    wait_ns: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct TaskSample {
    cpu: u32,
    wait_ns: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct VmSample {
    name: String,
    /// vCPU thread id → run_delay.
    vcpus: BTreeMap<u32, u64>,
}

/// One reading of the counters at a monotonic time.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub source: Source,
    at_ns: u64,
    cpus: BTreeMap<u32, CpuTimes>,
    tasks: BTreeMap<u32, TaskSample>,
    psi_some_us: Option<u64>,
    vms: BTreeMap<u32, VmSample>,
    /// Device interrupts taken per CPU since boot, when asked for.
    device_interrupts: Option<BTreeMap<u32, u64>>,
}

impl Sample {
    /// Adds per-CPU device interrupt counts from /proc/interrupts, to show whether isolated CPUs
    /// are kept quiet. Left out of `run`'s re-check: on large hosts the file runs to megabytes.
    pub fn with_device_interrupts(mut self, fs: &dyn HostFs) -> Self {
        self.device_interrupts = fs
            .read("proc/interrupts")
            .ok()
            .and_then(|text| interrupts::parse(&text).ok())
            .map(|parsed| {
                let mut per_cpu: BTreeMap<u32, u64> = BTreeMap::new();
                for line in &parsed.lines {
                    for (cpu, count) in parsed.cpus.iter().zip(&line.counts) {
                        *per_cpu.entry(*cpu).or_default() += count;
                    }
                }
                per_cpu
            });
        self
    }
}

/// Nanoseconds on a monotonic clock, counted from the first call in this process.
pub fn monotonic_ns() -> u64 {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let elapsed = ORIGIN.get_or_init(std::time::Instant::now).elapsed();
    u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
}

/// Which source this host offers.
pub fn detect(fs: &dyn HostFs) -> Result<Source, CongestionError> {
    if fs
        .read("proc/schedstat")
        .is_ok_and(|t| schedstat::parse(&t).is_ok())
    {
        Ok(Source::Schedstat)
    } else if fs.exists("proc/self/schedstat") || fs.exists("proc/1/task/1/schedstat") {
        Ok(Source::TaskSchedstat)
    } else if fs.exists("proc/pressure/cpu") {
        Ok(Source::Psi)
    } else {
        Err(CongestionError::NoSource)
    }
}

/// Busy time per CPU from /proc/stat: everything but idle and iowait.
fn proc_stat_busy(text: &str) -> BTreeMap<u32, u64> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let cpu: u32 = words.next()?.strip_prefix("cpu")?.parse().ok()?;
            let ticks: Vec<u64> = words.filter_map(|w| w.parse().ok()).collect();
            // user nice system idle iowait irq softirq steal (guest time is inside user).
            let busy = ticks
                .iter()
                .take(8)
                .enumerate()
                .filter(|(i, _)| *i != 3 && *i != 4)
                .map(|(_, t)| t)
                .sum::<u64>();
            Some((cpu, busy * NS_PER_TICK))
        })
        .collect()
}

fn psi_some_total(text: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with("some"))?
        .split_whitespace()
        .find_map(|w| w.strip_prefix("total=")?.parse().ok())
}

/// The CPU a task last ran on: field 39 of its stat line, counted after the `(comm)` field,
/// which may itself contain spaces and parentheses.
fn last_cpu(stat: &str) -> Option<u32> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(36)?.parse().ok()
}

/// QEMU names its vCPU threads `CPU <n>/KVM`.
fn is_vcpu_thread(comm: &str) -> bool {
    comm.strip_prefix("CPU ")
        .and_then(|rest| rest.strip_suffix("/KVM"))
        .is_some_and(|n| n.parse::<u32>().is_ok())
}

/// The guest name from QEMU's `-name guest=NAME,...` argument, else the process name.
fn vm_name(fs: &dyn HostFs, pid: u32) -> String {
    let cmdline = fs.read(&format!("proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<&str> = cmdline.split('\0').collect();
    args.iter()
        .position(|a| *a == "-name")
        .and_then(|i| args.get(i + 1))
        .and_then(|value| {
            let first = value.split(',').next()?;
            Some(first.strip_prefix("guest=").unwrap_or(first).to_owned())
        })
        .unwrap_or_else(|| {
            fs.read_trimmed(&format!("proc/{pid}/comm"))
                .unwrap_or_default()
        })
}

fn sample_tasks(fs: &dyn HostFs, sample: &mut Sample) {
    let pids = fs
        .list("proc")
        .into_iter()
        .filter_map(|p| p.parse::<u32>().ok());
    for pid in pids {
        let mut vm = VmSample {
            name: String::new(),
            vcpus: BTreeMap::new(),
        };
        for tid in fs
            .list(&format!("proc/{pid}/task"))
            .into_iter()
            .filter_map(|t| t.parse::<u32>().ok())
        {
            let dir = format!("proc/{pid}/task/{tid}");
            let Some(stats) = fs
                .read(&format!("{dir}/schedstat"))
                .ok()
                .and_then(|t| schedstat::parse_task(&t).ok())
            else {
                continue;
            };
            if sample.source == Source::TaskSchedstat
                && let Some(cpu) = fs
                    .read(&format!("{dir}/stat"))
                    .ok()
                    .and_then(|s| last_cpu(&s))
            {
                sample.tasks.insert(
                    tid,
                    TaskSample {
                        cpu,
                        wait_ns: stats.wait_ns,
                    },
                );
            }
            if fs
                .read_trimmed(&format!("{dir}/comm"))
                .is_some_and(|c| is_vcpu_thread(&c))
            {
                vm.vcpus.insert(tid, stats.wait_ns);
            }
        }
        if !vm.vcpus.is_empty() {
            vm.name = vm_name(fs, pid);
            sample.vms.insert(pid, vm);
        }
    }
}

/// Reads the counters of `source` at monotonic time `at_ns`.
pub fn sample(fs: &dyn HostFs, source: Source, at_ns: u64) -> Result<Sample, CongestionError> {
    let mut sample = Sample {
        source,
        at_ns,
        cpus: BTreeMap::new(),
        tasks: BTreeMap::new(),
        psi_some_us: fs
            .read("proc/pressure/cpu")
            .ok()
            .and_then(|t| psi_some_total(&t)),
        vms: BTreeMap::new(),
        device_interrupts: None,
    };
    match source {
        Source::Schedstat => {
            let text = fs
                .read("proc/schedstat")
                .map_err(|_| CongestionError::NoSource)?;
            sample.cpus = schedstat::parse(&text)?
                .cpus
                .into_iter()
                .map(|(cpu, s)| {
                    (
                        cpu,
                        CpuTimes {
                            busy_ns: s.run_ns,
                            wait_ns: s.wait_ns,
                        },
                    )
                })
                .collect();
        }
        Source::TaskSchedstat => {
            let busy = proc_stat_busy(&fs.read("proc/stat").unwrap_or_default());
            sample.cpus = busy
                .into_iter()
                .map(|(cpu, busy_ns)| {
                    (
                        cpu,
                        CpuTimes {
                            busy_ns,
                            wait_ns: 0,
                        },
                    )
                })
                .collect();
        }
        Source::Psi if sample.psi_some_us.is_none() => return Err(CongestionError::NoSource),
        Source::Psi => {}
    }
    sample_tasks(fs, &mut sample);
    Ok(sample)
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuCongestion {
    pub cpu: u32,
    /// Share of the interval the CPU ran tasks.
    pub utilisation_percent: f64,
    /// Run-queue wait accumulated on the CPU per interval time; above 100 when several tasks wait.
    pub wait_percent: f64,
    pub bursty: bool,
    pub isolated: bool,
    /// Device interrupts per second on this CPU, when measured; near zero on a quiet isolated CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_interrupts_per_second: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VmCongestion {
    pub pid: u32,
    pub name: String,
    pub vcpus: usize,
    /// Average share of the interval a vCPU thread of this VM waited for a host CPU.
    pub vcpu_wait_percent: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CongestionReport {
    pub source: Source,
    pub interval_seconds: f64,
    pub cpus: Vec<CpuCongestion>,
    /// Share of the interval in which at least one task waited for a CPU (PSI `some`).
    pub psi_some_percent: Option<f64>,
    pub vms: Vec<VmCongestion>,
}

fn percent(delta_ns: u64, elapsed_ns: u64) -> f64 {
    // Rounded to 0.01 so reports and status do not churn on noise.
    (delta_ns as f64 / elapsed_ns as f64 * 10_000.0).round() / 100.0
}

/// Rates between two samples of the same source; `isolated` marks the CPUs kept for vCPUs.
pub fn rates(
    before: &Sample,
    after: &Sample,
    isolated: &CpuSet,
) -> Result<CongestionReport, CongestionError> {
    if before.source != after.source {
        return Err(CongestionError::MixedSources);
    }
    let elapsed = after.at_ns.saturating_sub(before.at_ns).max(1);
    let mut waits: BTreeMap<u32, u64> = BTreeMap::new();
    for (tid, task) in &after.tasks {
        let earlier = before.tasks.get(tid).map_or(0, |t| t.wait_ns);
        *waits.entry(task.cpu).or_default() += task.wait_ns.saturating_sub(earlier);
    }
    let cpus = after
        .cpus
        .iter()
        .map(|(cpu, now)| {
            let then = before.cpus.get(cpu).copied().unwrap_or(*now);
            let wait_ns = match after.source {
                Source::TaskSchedstat => waits.get(cpu).copied().unwrap_or(0),
                _ => now.wait_ns.saturating_sub(then.wait_ns),
            };
            let utilisation_percent =
                percent(now.busy_ns.saturating_sub(then.busy_ns), elapsed).min(100.0);
            let wait_percent = percent(wait_ns, elapsed);
            CpuCongestion {
                cpu: *cpu,
                utilisation_percent,
                wait_percent,
                bursty: utilisation_percent < BURSTY_UTILISATION_PERCENT
                    && wait_percent >= BURSTY_WAIT_PERCENT,
                isolated: isolated.contains(*cpu),
                device_interrupts_per_second: match (
                    &before.device_interrupts,
                    &after.device_interrupts,
                ) {
                    (Some(then), Some(now)) => {
                        let delta = now
                            .get(cpu)
                            .copied()
                            .unwrap_or(0)
                            .saturating_sub(then.get(cpu).copied().unwrap_or(0));
                        Some((delta as f64 / (elapsed as f64 / 1e9) * 10.0).round() / 10.0)
                    }
                    _ => None,
                },
            }
        })
        .collect();
    let psi_some_percent = match (before.psi_some_us, after.psi_some_us) {
        (Some(a), Some(b)) => Some(percent(b.saturating_sub(a) * 1000, elapsed).min(100.0)),
        _ => None,
    };
    let vms = after
        .vms
        .iter()
        .map(|(pid, vm)| {
            let earlier = before.vms.get(pid);
            let waited: u64 = vm
                .vcpus
                .iter()
                .map(|(tid, wait)| {
                    wait.saturating_sub(
                        earlier.and_then(|e| e.vcpus.get(tid)).copied().unwrap_or(0),
                    )
                })
                .sum();
            VmCongestion {
                pid: *pid,
                name: vm.name.clone(),
                vcpus: vm.vcpus.len(),
                vcpu_wait_percent: percent(waited / vm.vcpus.len() as u64, elapsed),
            }
        })
        .collect();
    Ok(CongestionReport {
        source: after.source,
        interval_seconds: elapsed as f64 / 1e9,
        cpus,
        psi_some_percent,
        vms,
    })
}

impl CongestionReport {
    /// The TunedNode status summary.
    pub fn summary(&self) -> CongestionSummary {
        let mean = |cpus: Vec<&CpuCongestion>| {
            (!cpus.is_empty()).then(|| {
                (cpus.iter().map(|c| c.wait_percent).sum::<f64>() / cpus.len() as f64 * 100.0)
                    .round()
                    / 100.0
            })
        };
        let wait_percent = match self.source {
            Source::Psi => self.psi_some_percent.unwrap_or(0.0),
            _ => mean(self.cpus.iter().collect()).unwrap_or(0.0),
        };
        CongestionSummary {
            source: self.source.name().to_owned(),
            wait_percent,
            isolated_wait_percent: mean(self.cpus.iter().filter(|c| c.isolated).collect()),
            bursty_cpus: self
                .cpus
                .iter()
                .filter(|c| c.bursty)
                .map(|c| c.cpu)
                .collect::<CpuSet>()
                .to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_and_thread_names() {
        let stat = "123 (CPU 0/KVM) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 7 0 0";
        assert_eq!(last_cpu(stat), Some(7));
        assert!(is_vcpu_thread("CPU 12/KVM"));
        assert!(!is_vcpu_thread("CPU x/KVM"));
        assert!(!is_vcpu_thread("qemu-kvm"));
        assert_eq!(
            psi_some_total(
                "some avg10=1.96 avg60=2.30 avg300=5.30 total=442872323\nfull avg10=0.00 total=0\n"
            ),
            Some(442872323)
        );
        let busy = proc_stat_busy("cpu  1 2 3 4 5 6 7 8 9 10\ncpu0 10 0 5 100 50 1 1 0 0 0\n");
        assert_eq!(busy[&0], 17 * NS_PER_TICK);
        assert!(!busy.contains_key(&u32::MAX));
    }
}
