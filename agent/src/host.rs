//! The host model: everything the planner needs, read once from the host root. Reading is the only
//! I/O here; planning works on this value alone.

use crate::cpumask;
use crate::hostfs::HostFs;
use crate::interrupts;
use crate::kubelet::{self, KubeletConfig};
use crate::sysctl_files::{self, SysctlFileSetting};
use fastvirt_api::cpuset::CpuSet;
use fastvirt_api::tuning_profile::SYSCTL_ALLOWLIST;
use std::collections::BTreeMap;

pub const CPU_DIR: &str = "sys/devices/system/cpu";
pub const NODE_DIR: &str = "sys/devices/system/node";
pub const GLOBAL_HUGEPAGES_DIR: &str = "sys/kernel/mm/hugepages";
pub const THP_DIR: &str = "sys/kernel/mm/transparent_hugepage";
pub const KSM_DIR: &str = "sys/kernel/mm/ksm";
pub const IRQ_DIR: &str = "proc/irq";
pub const DEFAULT_SMP_AFFINITY: &str = "proc/irq/default_smp_affinity";
pub const WORKQUEUE_CPUMASK: &str = "sys/devices/virtual/workqueue/cpumask";
/// Per-IRQ state files with the IRQD_AFFINITY_MANAGED flag, where debugfs is mounted.
pub const IRQ_DEBUGFS_DIR: &str = "sys/kernel/debug/irq/irqs";
pub const PCI_DEVICES_DIR: &str = "sys/bus/pci/devices";
/// Debian's and RHEL's irqbalance environment files.
pub const IRQBALANCE_CONFIGS: &[&str] = &["etc/default/irqbalance", "etc/sysconfig/irqbalance"];
const IRQBALANCE_BINARIES: &[&str] = &[
    "usr/sbin/irqbalance",
    "usr/bin/irqbalance",
    "sbin/irqbalance",
];

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("the host root has no readable {0}: is it the host's / ?")]
    Missing(&'static str),
    #[error("{path} holds {value:?}, which is not a CPU list: {reason}")]
    CpuList {
        path: String,
        value: String,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaNode {
    pub id: u32,
    pub cpus: CpuSet,
    pub mem_total_kb: u64,
    pub mem_free_kb: u64,
    /// Pages per page size in kB.
    pub hugepages: BTreeMap<u64, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Irq {
    pub number: u32,
    /// The action name from /proc/interrupts, e.g. `nvme0q1`.
    pub name: String,
    /// The affinity as a canonical CPU list. Kept as text: a host with thousands of IRQs spread
    /// over hundreds of CPUs would otherwise hold a million set entries for them. (Where the
    /// kernel really delivers it, `effective_affinity_list`, is checked by apply after a write.)
    pub affinity: String,
    /// The PCI device whose MSI vectors include this IRQ.
    pub device: Option<String>,
    pub device_numa_node: Option<u32>,
    /// The kernel manages its affinity (known only where debugfs shows the IRQ's flags; elsewhere
    /// the first refused write tells).
    pub managed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdleState {
    pub dir: String,
    pub name: String,
    pub latency_us: u64,
    pub disabled: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cpufreq {
    pub governor: Option<String>,
    pub available_governors: Vec<String>,
    pub energy_performance_preference: Option<String>,
    pub available_preferences: Vec<String>,
}

/// A sysfs file listing choices with the active one in brackets (`always [madvise] never`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub selected: String,
    pub options: Vec<String>,
}

impl Choice {
    pub fn parse(text: &str) -> Option<Self> {
        let mut selected = None;
        let options = text
            .split_whitespace()
            .map(
                |word| match word.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
                    Some(inner) => {
                        selected = Some(inner.to_owned());
                        inner.to_owned()
                    }
                    None => word.to_owned(),
                },
            )
            .collect();
        Some(Self {
            selected: selected?,
            options,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Irqbalance {
    pub installed: bool,
    /// The environment file and its content, when one exists.
    pub config: Option<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostModel {
    pub online: CpuSet,
    /// Per online CPU, the CPUs sharing its core (itself included).
    pub siblings: BTreeMap<u32, CpuSet>,
    pub numa_nodes: Vec<NumaNode>,
    pub mem_total_kb: u64,
    pub mem_free_kb: u64,
    /// Global pool per page size in kB.
    pub hugepages: BTreeMap<u64, u64>,
    pub irqs: Vec<Irq>,
    pub default_smp_affinity: Option<CpuSet>,
    pub workqueue_cpumask: Option<CpuSet>,
    pub irqbalance: Irqbalance,
    pub cpufreq: BTreeMap<u32, Cpufreq>,
    pub cpuidle: BTreeMap<u32, Vec<IdleState>>,
    pub thp_enabled: Option<Choice>,
    pub thp_defrag: Option<Choice>,
    pub ksm_run: Option<String>,
    pub ksm_pages_to_scan: Option<String>,
    /// Current values of the allowlisted sysctls this kernel has.
    pub sysctls: BTreeMap<String, String>,
    pub sysctl_files: BTreeMap<String, SysctlFileSetting>,
    pub cmdline: String,
    pub kubelet: Option<Result<KubeletConfig, String>>,
}

impl HostModel {
    pub fn numa_node(&self, id: u32) -> Option<&NumaNode> {
        self.numa_nodes.iter().find(|n| n.id == id)
    }
}

fn cpu_list(fs: &dyn HostFs, path: &str) -> Result<Option<CpuSet>, HostError> {
    let Some(value) = fs.read_trimmed(path) else {
        return Ok(None);
    };
    CpuSet::parse(&value)
        .map(Some)
        .map_err(|e| HostError::CpuList {
            path: path.to_owned(),
            value,
            reason: e.to_string(),
        })
}

/// Whether `list` is already in the kernel's canonical form (ascending, ranges folded), which is
/// how the kernel prints every affinity list. Checking that is much cheaper than building the set
/// for thousands of IRQs; anything else goes through [`CpuSet::parse`].
pub fn is_canonical_cpu_list(list: &str) -> bool {
    let mut previous_end: Option<u32> = None;
    for part in list.split(',') {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<u32>(), b.parse::<u32>()),
            None => (part.parse::<u32>(), part.parse::<u32>()),
        };
        let (Ok(first), Ok(last)) = (first, last) else {
            return false;
        };
        let ordered = !part.contains('-') || first < last;
        let separated = previous_end.is_none_or(|end| first > end.saturating_add(1));
        // A two-CPU range prints as "4-5"; the canonical form never has leading zeros.
        let plain = !part.split('-').any(|n| n.len() > 1 && n.starts_with('0'));
        if !(ordered && separated && plain && last < 8192) {
            return false;
        }
        previous_end = Some(last);
    }
    !list.is_empty()
}

/// An affinity list in canonical form, without building the set when it already is.
fn canonical_cpu_list(fs: &dyn HostFs, path: &str) -> Result<Option<String>, HostError> {
    let Some(value) = fs.read_trimmed(path) else {
        return Ok(None);
    };
    if is_canonical_cpu_list(&value) {
        return Ok(Some(value));
    }
    CpuSet::parse(&value)
        .map(|set| Some(set.to_string()))
        .map_err(|e| HostError::CpuList {
            path: path.to_owned(),
            value,
            reason: e.to_string(),
        })
}

fn numbered(names: Vec<String>, prefix: &str) -> Vec<u32> {
    names
        .iter()
        .filter_map(|n| n.strip_prefix(prefix)?.parse().ok())
        .collect()
}

/// `MemTotal` and `MemFree` in kB from a meminfo file (the node files prefix `Node N`).
fn meminfo(text: &str) -> (u64, u64) {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.ends_with(name)
                    .then(|| value.split_whitespace().next()?.parse().ok())
                    .flatten()
            })
            .unwrap_or(0)
    };
    (field("MemTotal"), field("MemFree"))
}

/// Page size in kB from a directory name like `hugepages-2048kB`.
pub fn hugepage_dir_size_kb(name: &str) -> Option<u64> {
    name.strip_prefix("hugepages-")?
        .strip_suffix("kB")?
        .parse()
        .ok()
}

/// Pages per page size (kB) of the pools below `dir`.
pub fn hugepage_pools(fs: &dyn HostFs, dir: &str) -> BTreeMap<u64, u64> {
    fs.list(dir)
        .into_iter()
        .filter_map(|name| {
            let size = hugepage_dir_size_kb(&name)?;
            let count = fs
                .read_trimmed(&format!("{dir}/{name}/nr_hugepages"))?
                .parse()
                .ok()?;
            Some((size, count))
        })
        .collect()
}

fn read_irqs(fs: &dyn HostFs) -> Result<Vec<Irq>, HostError> {
    let mut names: BTreeMap<u32, String> = BTreeMap::new();
    // A host without /proc/interrupts still has IRQs to place; they just go unnamed.
    let _ = fs.for_each_line("proc/interrupts", &mut |line| {
        if let Some((irq, action)) = interrupts::action_of_line(line) {
            names.insert(irq, action.to_owned());
        }
    });
    let mut devices: BTreeMap<u32, (String, Option<u32>)> = BTreeMap::new();
    for device in fs.list(PCI_DEVICES_DIR) {
        let numa = fs
            .read_trimmed(&format!("{PCI_DEVICES_DIR}/{device}/numa_node"))
            .and_then(|n| n.parse::<i64>().ok())
            .and_then(|n| u32::try_from(n).ok());
        for irq in numbered(fs.list(&format!("{PCI_DEVICES_DIR}/{device}/msi_irqs")), "") {
            devices.insert(irq, (device.clone(), numa));
        }
    }
    // One look for debugfs instead of a failed open per IRQ where it is not mounted.
    let debugfs = fs.exists(IRQ_DEBUGFS_DIR);
    let mut irqs = Vec::new();
    for number in numbered(fs.list(IRQ_DIR), "") {
        let dir = format!("{IRQ_DIR}/{number}");
        // IRQs without an affinity file (legacy ones with no handler) cannot be placed at all.
        let Some(affinity) = canonical_cpu_list(fs, &format!("{dir}/smp_affinity_list"))? else {
            continue;
        };
        let (device, device_numa_node) = match devices.get(&number) {
            Some((device, numa)) => (Some(device.clone()), *numa),
            None => (None, None),
        };
        let managed = debugfs
            && fs
                .read(&format!("{IRQ_DEBUGFS_DIR}/{number}"))
                .is_ok_and(|flags| flags.contains("AFFINITY_MANAGED"));
        irqs.push(Irq {
            number,
            name: names.remove(&number).unwrap_or_default(),
            affinity,
            device,
            device_numa_node,
            managed,
        });
    }
    irqs.sort_by_key(|irq| irq.number);
    Ok(irqs)
}

fn read_cpu_power(
    fs: &dyn HostFs,
    online: &CpuSet,
) -> (BTreeMap<u32, Cpufreq>, BTreeMap<u32, Vec<IdleState>>) {
    let words = |path: String| -> Vec<String> {
        fs.read_trimmed(&path)
            .map(|s| s.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let mut cpufreq = BTreeMap::new();
    let mut cpuidle = BTreeMap::new();
    for cpu in online.iter() {
        let freq_dir = format!("{CPU_DIR}/cpu{cpu}/cpufreq");
        if let Some(governor) = fs.read_trimmed(&format!("{freq_dir}/scaling_governor")) {
            cpufreq.insert(
                cpu,
                Cpufreq {
                    governor: Some(governor),
                    available_governors: words(format!("{freq_dir}/scaling_available_governors")),
                    energy_performance_preference: fs
                        .read_trimmed(&format!("{freq_dir}/energy_performance_preference")),
                    available_preferences: words(format!(
                        "{freq_dir}/energy_performance_available_preferences"
                    )),
                },
            );
        }
        let idle_dir = format!("{CPU_DIR}/cpu{cpu}/cpuidle");
        let states: Vec<IdleState> = numbered(fs.list(&idle_dir), "state")
            .into_iter()
            .filter_map(|index| {
                let dir = format!("{idle_dir}/state{index}");
                Some(IdleState {
                    name: fs.read_trimmed(&format!("{dir}/name"))?,
                    latency_us: fs.read_trimmed(&format!("{dir}/latency"))?.parse().ok()?,
                    disabled: fs.read_trimmed(&format!("{dir}/disable"))? != "0",
                    dir,
                })
            })
            .collect();
        if !states.is_empty() {
            cpuidle.insert(cpu, states);
        }
    }
    (cpufreq, cpuidle)
}

/// Reads the host. Only a missing list of online CPUs is fatal: every other facility may be absent
/// (no cpufreq in a VM, no KSM, no irqbalance), and the plan then reports it as unavailable.
pub fn read(fs: &dyn HostFs) -> Result<HostModel, HostError> {
    let online = cpu_list(fs, &format!("{CPU_DIR}/online"))?
        .ok_or(HostError::Missing("/sys/devices/system/cpu/online"))?;
    let mut siblings = BTreeMap::new();
    for cpu in online.iter() {
        let path = format!("{CPU_DIR}/cpu{cpu}/topology/thread_siblings_list");
        let set = cpu_list(fs, &path)?.unwrap_or_else(|| [cpu].into_iter().collect());
        siblings.insert(cpu, set);
    }
    let mut numa_nodes = Vec::new();
    for id in numbered(fs.list(NODE_DIR), "node") {
        let dir = format!("{NODE_DIR}/node{id}");
        let cpus = cpu_list(fs, &format!("{dir}/cpulist"))?.unwrap_or_default();
        let (mem_total_kb, mem_free_kb) =
            meminfo(&fs.read(&format!("{dir}/meminfo")).unwrap_or_default());
        numa_nodes.push(NumaNode {
            id,
            cpus,
            mem_total_kb,
            mem_free_kb,
            hugepages: hugepage_pools(fs, &format!("{dir}/hugepages")),
        });
    }
    let (mem_total_kb, mem_free_kb) = meminfo(&fs.read("proc/meminfo").unwrap_or_default());
    let mask = |path: &str| fs.read_trimmed(path).and_then(|m| cpumask::parse(&m).ok());
    let (cpufreq, cpuidle) = read_cpu_power(fs, &online);
    let sysctls = SYSCTL_ALLOWLIST
        .iter()
        .filter_map(|name| {
            let value = fs.read_trimmed(&crate::write_allowlist::sysctl_path(name))?;
            Some(((*name).to_owned(), value))
        })
        .collect();
    Ok(HostModel {
        siblings,
        numa_nodes,
        mem_total_kb,
        mem_free_kb,
        hugepages: hugepage_pools(fs, GLOBAL_HUGEPAGES_DIR),
        irqs: read_irqs(fs)?,
        default_smp_affinity: mask(DEFAULT_SMP_AFFINITY),
        workqueue_cpumask: mask(WORKQUEUE_CPUMASK),
        irqbalance: Irqbalance {
            installed: IRQBALANCE_BINARIES.iter().any(|p| fs.exists(p)),
            config: IRQBALANCE_CONFIGS
                .iter()
                .find_map(|p| fs.read(p).ok().map(|text| ((*p).to_owned(), text))),
        },
        cpufreq,
        cpuidle,
        thp_enabled: fs
            .read(&format!("{THP_DIR}/enabled"))
            .ok()
            .and_then(|t| Choice::parse(&t)),
        thp_defrag: fs
            .read(&format!("{THP_DIR}/defrag"))
            .ok()
            .and_then(|t| Choice::parse(&t)),
        ksm_run: fs.read_trimmed(&format!("{KSM_DIR}/run")),
        ksm_pages_to_scan: fs.read_trimmed(&format!("{KSM_DIR}/pages_to_scan")),
        sysctls,
        sysctl_files: sysctl_files::effective(fs),
        cmdline: fs.read_trimmed("proc/cmdline").unwrap_or_default(),
        kubelet: kubelet::read(fs).map(|r| r.map_err(|e| e.to_string())),
        online,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choices_and_meminfo() {
        let choice = Choice::parse("always defer [madvise] never\n").unwrap();
        assert_eq!(choice.selected, "madvise");
        assert_eq!(choice.options.len(), 4);
        assert!(Choice::parse("always never").is_none());
        assert_eq!(
            meminfo("Node 1 MemTotal:  1000 kB\nNode 1 MemFree:   400 kB\n"),
            (1000, 400)
        );
        assert_eq!(hugepage_dir_size_kb("hugepages-1048576kB"), Some(1048576));
        for canonical in ["0", "0-255", "0,2,4-7,9", "1,3"] {
            assert!(is_canonical_cpu_list(canonical), "{canonical}");
        }
        for other in [
            "", "3,1", "0-1,2", "4-4", "5-3", "01", "0,,1", "a", "0-9000",
        ] {
            assert!(!is_canonical_cpu_list(other), "{other}");
        }
    }
}
