//! Planning: host model + profile → the exact list of changes, what cannot change at runtime and
//! why. Pure: no I/O, so `plan` prints exactly what `apply` will do.

mod irq;
mod kubelet;

pub use irq::{IRQBALANCE_BAN_KEY, with_ban_list};

use crate::cpumask;
use crate::host::{Choice, HostModel, KSM_DIR, THP_DIR, WORKQUEUE_CPUMASK};
use crate::write_allowlist::sysctl_path;
use fastvirt_api::NodeTuningProfileSpec;
use fastvirt_api::cpuset::CpuSet;
use fastvirt_api::tuning_profile::{HugepageSize, ProfileError, ThpMode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// How a file's content is compared with the desired value (and turned into the value shown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Compare {
    /// Trimmed text with runs of whitespace folded.
    Exact,
    /// A kernel CPU list (`0-3,8`).
    CpuList,
    /// A hexadecimal CPU mask.
    CpuMask,
    /// A sysfs choice file; the bracketed word is the value.
    Choice,
    /// A whole configuration file.
    File,
}

impl Compare {
    /// The canonical form of a file's content; `None` when it does not parse.
    pub fn canonical(self, raw: &str) -> Option<String> {
        match self {
            Compare::Exact => Some(raw.split_whitespace().collect::<Vec<_>>().join(" ")),
            Compare::CpuList => CpuSet::parse(raw.trim()).ok().map(|s| s.to_string()),
            Compare::CpuMask => cpumask::parse(raw).ok().map(|s| cpumask::format(&s)),
            Compare::Choice => Choice::parse(raw).map(|c| c.selected),
            Compare::File => Some(raw.to_owned()),
        }
    }
}

/// What a change touches, where apply treats kinds differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Target {
    /// A hugepage pool: the kernel may allocate fewer pages than asked.
    Hugepages {
        size_kb: u64,
        numa_node: Option<u32>,
    },
    /// An IRQ's affinity: managed IRQs refuse the write.
    IrqAffinity {
        irq: u32,
    },
    /// A regular configuration file, replaced atomically (absent before: `current` is empty).
    ConfigFile,
    Knob,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    pub setting: String,
    /// Relative to the host root.
    pub path: String,
    pub current: String,
    pub desired: String,
    pub compare: Compare,
    pub target: Target,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Unchangeable {
    pub setting: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub changes: Vec<Change>,
    /// Settings already at their desired value.
    pub in_place: usize,
    pub unchangeable: Vec<Unchangeable>,
    /// Facilities missing, predicted shortfalls, boot-time overrides: things to know, not errors.
    pub notes: Vec<String>,
    pub missing_kernel_args: Vec<String>,
    pub kubelet_mismatches: Vec<String>,
    pub kubelet_restart_required: bool,
    /// Every path the profile has a value for (changed, in place, or wanted but out of reach).
    /// A journaled path outside this set is one the profile no longer wants: apply restores it.
    #[serde(skip)]
    pub wanted_paths: BTreeSet<String>,
    /// Paths someone else owns now (KSM under KubeVirt's handler): apply neither writes nor
    /// restores them, and forgets their journal entries.
    #[serde(skip)]
    pub hands_off_paths: BTreeSet<String>,
}

impl Plan {
    pub fn reboot_required(&self) -> bool {
        !self.missing_kernel_args.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanOptions {
    /// Refuse hugepage pools larger than this share of the host's memory.
    pub max_hugepage_percent: u32,
    /// KubeVirt's KSM handler owns KSM on this node (`kubevirt.io/ksm-handler-managed`).
    pub ksm_handled_by_kubevirt: bool,
    /// IRQs whose affinity the kernel refused earlier (from the journal).
    pub known_managed_irqs: BTreeSet<u32>,
    /// The kubelet drop-in a profile may ask for; `None` where the kubelet's drop-in directory
    /// is unknown.
    pub kubelet_drop_in: Option<crate::kubelet_drop_in::DropInFile>,
    /// The memory the kubelet reserves, for the static memory manager's `reservedMemory`
    /// ([`crate::kubelet_drop_in::reserved_memory`]); `None` when the Node does not say.
    pub kubelet_reserved_memory: Option<u64>,
}

impl Default for PlanOptions {
    fn default() -> Self {
        Self {
            max_hugepage_percent: 80,
            ksm_handled_by_kubevirt: false,
            known_managed_irqs: BTreeSet::new(),
            kubelet_drop_in: None,
            kubelet_reserved_memory: None,
        }
    }
}

/// Why nothing of the profile is applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("invalid profile: {0}")]
    Profile(#[from] ProfileError),
    #[error("cpu.{field} names CPUs {cpus} that are not online on this host (online: {online})")]
    CpusNotOnline {
        field: &'static str,
        cpus: String,
        online: String,
    },
    #[error(
        "hugepages: the profile asks for {requested_mib} MiB of hugepages, more than {percent} % of \
         this host's {total_mib} MiB of memory ({limit_mib} MiB); lower the counts or raise \
         --max-hugepage-percent"
    )]
    HugepagesBeyondLimit {
        requested_mib: u64,
        limit_mib: u64,
        total_mib: u64,
        percent: u32,
    },
    #[error("hugepages: NUMA node {node} does not exist on this host (nodes: {nodes})")]
    NoSuchNumaNode { node: u32, nodes: String },
}

/// The KSM files the agent may write, below the KSM directory.
pub const KSM_PATHS: [&str; 2] = ["run", "pages_to_scan"];
pub const KSM_HANDLER_ANNOTATION: &str = "kubevirt.io/ksm-handler-managed";

fn size_kb(size: HugepageSize) -> u64 {
    match size {
        HugepageSize::TwoMi => 2048,
        HugepageSize::OneGi => 1_048_576,
    }
}

pub fn size_name(size_kb: u64) -> String {
    match size_kb {
        2048 => "2Mi".to_owned(),
        1_048_576 => "1Gi".to_owned(),
        other => format!("{other}kB"),
    }
}

struct Planner<'a> {
    host: &'a HostModel,
    plan: Plan,
}

impl Planner<'_> {
    /// Records a change unless `current` already matches; `None` means the file is missing.
    /// Both values must be canonical for `compare` (see [`Compare::canonical`]).
    fn want(
        &mut self,
        setting: String,
        path: String,
        current: Option<String>,
        desired: String,
        compare: Compare,
        target: Target,
    ) {
        let Some(current) = current else {
            self.plan.notes.push(format!(
                "{setting}: /{path} does not exist on this host; skipped"
            ));
            return;
        };
        self.plan.wanted_paths.insert(path.clone());
        if current == desired {
            self.plan.in_place += 1;
        } else {
            self.plan.changes.push(Change {
                setting,
                path,
                current,
                desired,
                compare,
                target,
            });
        }
    }

    fn unchangeable(&mut self, setting: String, reason: String) {
        self.plan
            .unchangeable
            .push(Unchangeable { setting, reason });
    }

    fn note(&mut self, note: String) {
        self.plan.notes.push(note);
    }
}

fn check_online(host: &HostModel, field: &'static str, cpus: &CpuSet) -> Result<(), PlanError> {
    let offline: CpuSet = cpus.iter().filter(|c| !host.online.contains(*c)).collect();
    if offline.is_empty() {
        Ok(())
    } else {
        Err(PlanError::CpusNotOnline {
            field,
            cpus: offline.to_string(),
            online: host.online.to_string(),
        })
    }
}

/// Computes what applying `profile` to `host` changes.
pub fn plan(
    host: &HostModel,
    profile: &NodeTuningProfileSpec,
    options: &PlanOptions,
) -> Result<Plan, PlanError> {
    let cpus = profile.validate()?;
    check_online(host, "reserved", &cpus.reserved)?;
    check_online(host, "isolated", &cpus.isolated)?;
    check_hugepage_limit(host, profile, options)?;
    let mut planner = Planner {
        host,
        plan: Plan::default(),
    };
    plan_smt(&mut planner, &cpus.isolated);
    plan_hugepages(&mut planner, profile)?;
    // Without CPU partitioning there is no housekeeping set to move IRQs to.
    if profile.irq.move_to_reserved && !cpus.reserved.is_empty() {
        irq::plan_irqs(&mut planner, &cpus.reserved, options);
    }
    if !cpus.isolated.is_empty() {
        planner.want(
            "workqueue cpumask".to_owned(),
            WORKQUEUE_CPUMASK.to_owned(),
            host.workqueue_cpumask.as_ref().map(cpumask::format),
            cpumask::format(&cpus.reserved),
            Compare::CpuMask,
            Target::Knob,
        );
        if profile.irq.ban_isolated_in_irqbalance {
            irq::plan_irqbalance(&mut planner, &cpus.isolated);
        }
    }
    plan_power(&mut planner, profile, &cpus.isolated);
    plan_thp(&mut planner, profile);
    plan_ksm(&mut planner, profile, options);
    plan_sysctls(&mut planner, profile);
    plan_kernel_args(&mut planner, profile);
    kubelet::plan_kubelet(&mut planner, profile, &cpus, options);
    Ok(planner.plan)
}

fn plan_smt(planner: &mut Planner, isolated: &CpuSet) {
    for cpu in isolated.iter() {
        let Some(siblings) = planner.host.siblings.get(&cpu) else {
            continue;
        };
        let shared: CpuSet = siblings.iter().filter(|s| !isolated.contains(*s)).collect();
        if !shared.is_empty() {
            planner.note(format!(
                "isolated CPU {cpu} shares its core with CPUs {shared}, which are not isolated: \
                 pinned vCPUs there compete with housekeeping for the core"
            ));
        }
    }
}

fn check_hugepage_limit(
    host: &HostModel,
    profile: &NodeTuningProfileSpec,
    options: &PlanOptions,
) -> Result<(), PlanError> {
    let requested_kb: u64 = profile
        .hugepages
        .iter()
        .map(|p| u64::from(p.count) * size_kb(p.size))
        .sum();
    let limit_kb = host.mem_total_kb * u64::from(options.max_hugepage_percent) / 100;
    if requested_kb > limit_kb {
        return Err(PlanError::HugepagesBeyondLimit {
            requested_mib: requested_kb / 1024,
            limit_mib: limit_kb / 1024,
            total_mib: host.mem_total_kb / 1024,
            percent: options.max_hugepage_percent,
        });
    }
    Ok(())
}

fn plan_hugepages(planner: &mut Planner, profile: &NodeTuningProfileSpec) -> Result<(), PlanError> {
    let host = planner.host;
    for pool in &profile.hugepages {
        let page_kb = size_kb(pool.size);
        let size = size_name(page_kb);
        let dir_name = format!("hugepages-{page_kb}kB");
        let (setting, path, current, free_kb) = match pool.numa_node {
            Some(node) => {
                let numa = host
                    .numa_node(node)
                    .ok_or_else(|| PlanError::NoSuchNumaNode {
                        node,
                        nodes: host
                            .numa_nodes
                            .iter()
                            .map(|n| n.id)
                            .collect::<CpuSet>()
                            .to_string(),
                    })?;
                (
                    format!("hugepages {size} on NUMA node {node}"),
                    format!("sys/devices/system/node/node{node}/hugepages/{dir_name}/nr_hugepages"),
                    numa.hugepages.get(&page_kb).copied(),
                    numa.mem_free_kb,
                )
            }
            None => (
                format!("hugepages {size}"),
                format!("sys/kernel/mm/hugepages/{dir_name}/nr_hugepages"),
                host.hugepages.get(&page_kb).copied(),
                host.mem_free_kb,
            ),
        };
        let Some(current) = current else {
            planner.unchangeable(
                setting,
                format!(
                    "this kernel offers no {size} pages (1 GiB pages need the CPU's pdpe1gb flag)"
                ),
            );
            continue;
        };
        let wanted = u64::from(pool.count);
        let needed_kb = wanted.saturating_sub(current) * page_kb;
        if needed_kb > free_kb {
            let (needed_mib, free_mib) = (needed_kb / 1024, free_kb / 1024);
            if page_kb >= 1_048_576 {
                // Still wanted: pages an earlier apply obtained stay.
                planner.plan.wanted_paths.insert(path);
                planner.unchangeable(
                    setting,
                    format!(
                        "{wanted} pages need {needed_mib} MiB more of contiguous memory but only \
                         {free_mib} MiB is free: boot with hugepagesz=1G hugepages={wanted}"
                    ),
                );
                continue;
            }
            planner.note(format!(
                "{setting}: {wanted} pages need {needed_mib} MiB more but only {free_mib} MiB is \
                 free; expect a shortfall unless the kernel can reclaim caches"
            ));
        }
        planner.want(
            setting,
            path,
            Some(current.to_string()),
            wanted.to_string(),
            Compare::Exact,
            Target::Hugepages {
                size_kb: page_kb,
                numa_node: pool.numa_node,
            },
        );
    }
    Ok(())
}

fn plan_power(planner: &mut Planner, profile: &NodeTuningProfileSpec, isolated: &CpuSet) {
    let Some(power) = &profile.power else { return };
    let host = planner.host;
    if (power.governor.is_some() || power.energy_performance_preference.is_some())
        && host.cpufreq.is_empty()
    {
        planner.note(
            "no cpufreq driver on this host (usual in VMs): governor and energy-performance \
             preference cannot be set"
                .to_owned(),
        );
    }
    for (cpu, freq) in &host.cpufreq {
        let dir = format!("sys/devices/system/cpu/cpu{cpu}/cpufreq");
        if let Some(governor) = &power.governor {
            if !freq.available_governors.is_empty() && !freq.available_governors.contains(governor)
            {
                planner.unchangeable(
                    format!("cpu {cpu} governor"),
                    format!(
                        "the cpufreq driver offers no {governor} governor (available: {})",
                        freq.available_governors.join(" ")
                    ),
                );
            } else {
                planner.want(
                    format!("cpu {cpu} governor"),
                    format!("{dir}/scaling_governor"),
                    freq.governor.clone(),
                    governor.clone(),
                    Compare::Exact,
                    Target::Knob,
                );
            }
        }
        if let Some(preference) = &power.energy_performance_preference {
            if freq.energy_performance_preference.is_none() {
                planner.unchangeable(
                    format!("cpu {cpu} energy-performance preference"),
                    "the cpufreq driver has no energy_performance_preference".to_owned(),
                );
            } else if !freq.available_preferences.is_empty()
                && !freq.available_preferences.contains(preference)
            {
                planner.unchangeable(
                    format!("cpu {cpu} energy-performance preference"),
                    format!(
                        "the driver offers no {preference} preference (available: {})",
                        freq.available_preferences.join(" ")
                    ),
                );
            } else {
                planner.want(
                    format!("cpu {cpu} energy-performance preference"),
                    format!("{dir}/energy_performance_preference"),
                    freq.energy_performance_preference.clone(),
                    preference.clone(),
                    Compare::Exact,
                    Target::Knob,
                );
            }
        }
    }
    let Some(limit) = power.max_cstate_latency_us else {
        return;
    };
    if host.cpuidle.is_empty() {
        planner.note("no cpuidle states on this host: nothing to disable".to_owned());
    }
    // Deep idle states only cost latency where vCPUs are pinned; housekeeping CPUs keep saving
    // power unless nothing is isolated.
    let targets: Vec<u32> = host
        .cpuidle
        .keys()
        .copied()
        .filter(|cpu| isolated.is_empty() || isolated.contains(*cpu))
        .collect();
    for cpu in targets {
        for state in &host.cpuidle[&cpu] {
            if state.latency_us > u64::from(limit) {
                let state_name = state.dir.rsplit('/').next().unwrap_or_default();
                planner.want(
                    format!(
                        "cpu {cpu} idle {state_name} ({}, {} us) disabled",
                        state.name, state.latency_us
                    ),
                    format!("{}/disable", state.dir),
                    Some(if state.disabled { "1" } else { "0" }.to_owned()),
                    "1".to_owned(),
                    Compare::Exact,
                    Target::Knob,
                );
            }
        }
    }
}

fn choice_setting(
    planner: &mut Planner,
    setting: &str,
    path: String,
    current: Option<&Choice>,
    desired: &str,
) {
    if let Some(choice) = current
        && !choice.options.iter().any(|o| o == desired)
    {
        planner.unchangeable(
            setting.to_owned(),
            format!(
                "the kernel offers no {desired} (options: {})",
                choice.options.join(" ")
            ),
        );
        return;
    }
    planner.want(
        setting.to_owned(),
        path,
        current.map(|c| c.selected.clone()),
        desired.to_owned(),
        Compare::Choice,
        Target::Knob,
    );
}

fn plan_thp(planner: &mut Planner, profile: &NodeTuningProfileSpec) {
    let Some(mode) = profile.transparent_hugepages else {
        return;
    };
    let (enabled, defrag) = match mode {
        ThpMode::Always => ("always", "madvise"),
        ThpMode::Madvise => ("madvise", "madvise"),
        ThpMode::Never => ("never", "never"),
    };
    let host = planner.host;
    choice_setting(
        planner,
        "transparent hugepages enabled",
        format!("{THP_DIR}/enabled"),
        host.thp_enabled.as_ref(),
        enabled,
    );
    choice_setting(
        planner,
        "transparent hugepages defrag",
        format!("{THP_DIR}/defrag"),
        host.thp_defrag.as_ref(),
        defrag,
    );
}

fn plan_ksm(planner: &mut Planner, profile: &NodeTuningProfileSpec, options: &PlanOptions) {
    if options.ksm_handled_by_kubevirt {
        planner
            .plan
            .hands_off_paths
            .extend(KSM_PATHS.map(|name| format!("{KSM_DIR}/{name}")));
    }
    let Some(ksm) = &profile.ksm else { return };
    if options.ksm_handled_by_kubevirt {
        planner.note(format!(
            "KSM: left to KubeVirt's KSM handler, which manages it on this node \
             ({KSM_HANDLER_ANNOTATION})"
        ));
        return;
    }
    let host = planner.host;
    planner.want(
        "ksm run".to_owned(),
        format!("{KSM_DIR}/run"),
        host.ksm_run.clone(),
        // 0 stops scanning and keeps merged pages; 2 would unmerge everything at once.
        if ksm.enabled { "1" } else { "0" }.to_owned(),
        Compare::Exact,
        Target::Knob,
    );
    if let Some(pages) = ksm.pages_to_scan {
        planner.want(
            "ksm pages_to_scan".to_owned(),
            format!("{KSM_DIR}/pages_to_scan"),
            host.ksm_pages_to_scan.clone(),
            pages.to_string(),
            Compare::Exact,
            Target::Knob,
        );
    }
}

fn plan_sysctls(planner: &mut Planner, profile: &NodeTuningProfileSpec) {
    let host = planner.host;
    for (name, value) in profile.effective_sysctls() {
        let desired = Compare::Exact.canonical(&value).unwrap_or(value);
        let Some(current) = host.sysctls.get(&name) else {
            planner.unchangeable(
                format!("sysctl {name}"),
                "this kernel has no such sysctl".to_owned(),
            );
            continue;
        };
        if let Some(file) = host.sysctl_files.get(&name)
            && Compare::Exact.canonical(&file.value).as_deref() != Some(desired.as_str())
        {
            planner.note(format!(
                "sysctl {name}: {} sets {}, which overrides {desired} at the next boot or \
                 `sysctl --system`; remove it from that file",
                file.file, file.value
            ));
        }
        planner.want(
            format!("sysctl {name}"),
            sysctl_path(&name),
            Compare::Exact.canonical(current),
            desired,
            Compare::Exact,
            Target::Knob,
        );
    }
}

fn plan_kernel_args(planner: &mut Planner, profile: &NodeTuningProfileSpec) {
    let booted: Vec<&str> = planner.host.cmdline.split_whitespace().collect();
    for arg in &profile.kernel_args {
        if booted.contains(&arg.as_str()) {
            continue;
        }
        let key = arg.split('=').next().unwrap_or(arg);
        let differing: Vec<&str> = booted
            .iter()
            .copied()
            .filter(|b| b.split('=').next() == Some(key))
            .collect();
        planner
            .plan
            .missing_kernel_args
            .push(if differing.is_empty() {
                arg.clone()
            } else {
                format!("{arg} (booted with {})", differing.join(" "))
            });
    }
}
