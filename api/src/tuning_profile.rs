//! `NodeTuningProfile`: how VM hosts should be tuned, and which nodes it applies to.

use crate::condition::Condition;
use crate::cpuset::{CpuSet, CpuSetError};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Host tuning for KubeVirt nodes: CPU partitioning, hugepages, IRQ placement, power, THP, KSM and
/// sysctls. The agent applies what can change at runtime and reports the rest (kernel arguments)
/// without ever rebooting a node.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "fastvirt.io",
    version = "v1alpha1",
    kind = "NodeTuningProfile",
    shortname = "ntp",
    status = "NodeTuningProfileStatus",
    printcolumn = r#"{"name":"Matched","type":"integer","jsonPath":".status.matchedNodes"}"#,
    printcolumn = r#"{"name":"Applied","type":"integer","jsonPath":".status.appliedNodes"}"#,
    printcolumn = r#"{"name":"Degraded","type":"integer","jsonPath":".status.degradedNodes"}"#,
    printcolumn = r#"{"name":"RebootRequired","type":"integer","jsonPath":".status.rebootRequiredNodes"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.kubelet) || !has(self.kubelet.manageDropIn) || !self.kubelet.manageDropIn || (has(self.cpu) && has(self.cpu.reserved) && self.cpu.reserved != '')").message("kubelet.manageDropIn needs cpu.reserved: the static CPU manager it writes needs reserved CPUs"))]
pub struct NodeTuningProfileSpec {
    /// Labels a node must carry for the profile to apply; empty selects every node.
    #[serde(default)]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 1024}))]
    pub node_selector: BTreeMap<String, String>,
    /// Decides between profiles that select the same node: the highest wins; equal priorities are a
    /// conflict and neither applies there.
    #[serde(default)]
    #[schemars(range(min = i32::MIN, max = i32::MAX))]
    pub priority: i32,
    /// Stop applying changes (current settings stay as they are).
    #[serde(default)]
    pub paused: bool,
    /// CPU partitioning.
    #[serde(default)]
    pub cpu: CpuPartition,
    /// Hugepage pools to allocate.
    #[serde(default)]
    #[schemars(length(max = 128))]
    pub hugepages: Vec<HugepagePool>,
    /// Where device interrupts go.
    #[serde(default)]
    pub irq: IrqPolicy,
    /// CPU frequency and idle-state settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub power: Option<PowerPolicy>,
    /// Transparent hugepages mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transparent_hugepages: Option<ThpMode>,
    /// Kernel samepage merging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ksm: Option<KsmPolicy>,
    /// A sysctl preset to start from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sysctl_preset: Option<SysctlPreset>,
    /// Sysctls to set (only names on the allowlist; they override the preset).
    #[serde(default)]
    #[schemars(extend("maxProperties" = 64, "additionalProperties" = {"type": "string", "maxLength": 1024}))]
    pub sysctls: BTreeMap<String, String>,
    /// Kernel arguments the node should boot with (isolcpus, nohz_full, rcu_nocbs, 1 GiB hugepages,
    /// iommu=pt); reported when missing, never applied by rebooting. Each is at most 4096
    /// characters, the longest kernel command line.
    #[serde(default)]
    #[schemars(length(max = 512), inner(length(max = 4096)))]
    pub kernel_args: Vec<String>,
    /// Kubelet settings the profile implies (static CPU manager, topology manager), written as a
    /// kubelet drop-in when asked; the kubelet is never restarted by fastvirt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubelet: Option<crate::kubelet_settings::KubeletSettings>,
    /// The KubeVirt instancetypes the operator makes for the profile's nodes.
    #[serde(default)]
    pub kubevirt: crate::kubevirt_settings::KubevirtSettings,
}

/// CPU partitioning: housekeeping on `reserved`, guests on `isolated`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.isolated) || self.isolated == '' || (has(self.reserved) && self.reserved != '')").message("cpu.reserved must name at least one CPU when cpu.isolated is set"))]
pub struct CpuPartition {
    /// CPUs for the OS, the kubelet and interrupts (kernel list format, e.g. `0-1`).
    #[serde(default)]
    pub reserved: String,
    /// CPUs kept quiet for pinned vCPUs (kernel list format).
    #[serde(default)]
    pub isolated: String,
}

/// Hugepage page sizes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum HugepageSize {
    #[serde(rename = "2Mi")]
    TwoMi,
    #[serde(rename = "1Gi")]
    OneGi,
}

impl HugepageSize {
    /// The size as Kubernetes and KubeVirt spell it (`hugepages-2Mi`, `pageSize: 2Mi`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TwoMi => "2Mi",
            Self::OneGi => "1Gi",
        }
    }

    /// The page size in bytes.
    pub fn bytes(self) -> u64 {
        match self {
            Self::TwoMi => 2 << 20,
            Self::OneGi => 1 << 30,
        }
    }
}

/// A number of hugepages of one size, on one NUMA node or spread by the kernel.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct HugepagePool {
    /// Page size.
    pub size: HugepageSize,
    /// Number of pages.
    #[schemars(range(min = 0, max = u32::MAX))]
    pub count: u32,
    /// NUMA node to allocate on; the kernel spreads them when unset. At most 1023: Linux has at
    /// most 1024 NUMA nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1023))]
    pub numa_node: Option<u32>,
}

/// Interrupt placement.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IrqPolicy {
    /// Move every movable IRQ to reserved CPUs, on the device's NUMA node where it has some.
    #[serde(default = "default_true")]
    pub move_to_reserved: bool,
    /// Keep irqbalance off the isolated CPUs with its ban list.
    #[serde(default = "default_true")]
    pub ban_isolated_in_irqbalance: bool,
}

impl Default for IrqPolicy {
    fn default() -> Self {
        Self {
            move_to_reserved: true,
            ban_isolated_in_irqbalance: true,
        }
    }
}

fn default_true() -> bool {
    true
}

/// Power management for latency.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PowerPolicy {
    /// cpufreq governor, e.g. `performance`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub governor: Option<String>,
    /// Energy-performance preference, e.g. `performance`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub energy_performance_preference: Option<String>,
    /// Disable idle states whose exit latency exceeds this many microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = u32::MAX))]
    pub max_cstate_latency_us: Option<u32>,
}

/// Transparent hugepages modes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ThpMode {
    Always,
    Madvise,
    Never,
}

/// Kernel samepage merging.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KsmPolicy {
    /// Run KSM. Left alone on nodes where KubeVirt's KSM handler manages it.
    pub enabled: bool,
    /// Pages scanned per wake-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = u32::MAX))]
    pub pages_to_scan: Option<u32>,
}

/// Sysctl presets.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SysctlPreset {
    /// The values of TuneD's `virtual-host` profile.
    VirtualHost,
}

/// Aggregated state over the nodes the profile selects.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeTuningProfileStatus {
    /// Nodes the profile selects.
    #[serde(default)]
    #[schemars(range(min = 0, max = u32::MAX))]
    pub matched_nodes: u32,
    /// Nodes that applied the current generation.
    #[serde(default)]
    #[schemars(range(min = 0, max = u32::MAX))]
    pub applied_nodes: u32,
    /// Nodes that report Degraded.
    #[serde(default)]
    #[schemars(range(min = 0, max = u32::MAX))]
    pub degraded_nodes: u32,
    /// Nodes that need a reboot for kernel arguments.
    #[serde(default)]
    #[schemars(range(min = 0, max = u32::MAX))]
    pub reboot_required_nodes: u32,
    /// Available, Progressing and Degraded conditions.
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub conditions: Vec<Condition>,
    /// The `.metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub observed_generation: Option<i64>,
}

/// Sysctls a profile may set: the ones that matter for VM hosts, and nothing that could cut a node
/// off its network or its storage.
pub const SYSCTL_ALLOWLIST: &[&str] = &[
    "kernel.sched_schedstats",
    "kernel.numa_balancing",
    "kernel.nmi_watchdog",
    "kernel.timer_migration",
    "vm.dirty_ratio",
    "vm.dirty_background_ratio",
    "vm.swappiness",
    "vm.stat_interval",
    "vm.compaction_proactiveness",
    "vm.zone_reclaim_mode",
    "net.core.busy_read",
    "net.core.busy_poll",
];

/// TuneD's virtual-host profile values (via its throughput-performance parent).
pub fn virtual_host_preset() -> BTreeMap<String, String> {
    [
        ("vm.dirty_background_ratio", "5"),
        ("vm.dirty_ratio", "40"),
        ("vm.swappiness", "10"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// Why a profile is invalid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProfileError {
    #[error(
        "cpu.reserved must name at least one CPU: the OS and the kubelet need somewhere to run"
    )]
    EmptyReserved,
    #[error("cpu.{field}: {source}")]
    CpuList {
        field: &'static str,
        source: CpuSetError,
    },
    #[error("cpu.reserved and cpu.isolated overlap on CPUs {0}")]
    Overlap(String),
    #[error("sysctl {0} is not on the allowlist; allowed: {allowed}", allowed = SYSCTL_ALLOWLIST.join(", "))]
    UnknownSysctl(String),
    #[error("hugepages: {0} pages of {1} requested twice for the same NUMA node")]
    DuplicateHugepages(u32, &'static str),
    #[error(
        "kubelet.manageDropIn needs cpu.reserved: the static CPU manager it writes needs reserved CPUs, or the kubelet does not start"
    )]
    DropInWithoutReserved,
}

/// The validated CPU partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedCpus {
    pub reserved: CpuSet,
    pub isolated: CpuSet,
}

impl NodeTuningProfileSpec {
    /// Checks what the schema cannot; every message names the field and the fix.
    pub fn validate(&self) -> Result<ValidatedCpus, ProfileError> {
        let reserved =
            CpuSet::parse(&self.cpu.reserved).map_err(|source| ProfileError::CpuList {
                field: "reserved",
                source,
            })?;
        let isolated =
            CpuSet::parse(&self.cpu.isolated).map_err(|source| ProfileError::CpuList {
                field: "isolated",
                source,
            })?;
        // As the CRD's CEL rule: CPUs are partitioned only when some are isolated, and then the
        // housekeeping side must not be empty. A profile without a cpu section (hugepages, THP,
        // sysctls only) is valid.
        if reserved.is_empty() && !isolated.is_empty() {
            return Err(ProfileError::EmptyReserved);
        }
        let manages_drop_in = self.kubelet.as_ref().is_some_and(|k| k.manage_drop_in);
        if manages_drop_in && reserved.is_empty() {
            return Err(ProfileError::DropInWithoutReserved);
        }
        let overlap = reserved.intersection(&isolated);
        if !overlap.is_empty() {
            return Err(ProfileError::Overlap(overlap.to_string()));
        }
        if let Some(name) = self
            .sysctls
            .keys()
            .find(|k| !SYSCTL_ALLOWLIST.contains(&k.as_str()))
        {
            return Err(ProfileError::UnknownSysctl(name.clone()));
        }
        for (i, pool) in self.hugepages.iter().enumerate() {
            if self.hugepages[..i]
                .iter()
                .any(|p| p.size == pool.size && p.numa_node == pool.numa_node)
            {
                let size = match pool.size {
                    HugepageSize::TwoMi => "2Mi",
                    HugepageSize::OneGi => "1Gi",
                };
                return Err(ProfileError::DuplicateHugepages(pool.count, size));
            }
        }
        Ok(ValidatedCpus { reserved, isolated })
    }

    /// The sysctls to apply: the preset, overridden by the explicit ones.
    pub fn effective_sysctls(&self) -> BTreeMap<String, String> {
        let mut sysctls = match self.sysctl_preset {
            Some(SysctlPreset::VirtualHost) => virtual_host_preset(),
            None => BTreeMap::new(),
        };
        sysctls.extend(self.sysctls.clone());
        sysctls
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> NodeTuningProfileSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn a_kubelet_drop_in_needs_reserved_cpus() {
        assert_eq!(
            spec("kubelet: {manageDropIn: true}").validate(),
            Err(ProfileError::DropInWithoutReserved)
        );
        assert!(
            spec("cpu: {reserved: '0'}\nkubelet: {manageDropIn: true}")
                .validate()
                .is_ok()
        );
        assert!(
            spec("kubelet: {topologyManagerPolicy: restricted}")
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn a_complete_profile_validates() {
        let profile = spec(
            "cpu: {reserved: '0-1', isolated: '2-7'}\n\
             hugepages: [{size: 2Mi, count: 512, numaNode: 0}, {size: 1Gi, count: 4}]\n\
             sysctlPreset: virtual-host\n\
             sysctls: {vm.swappiness: '1'}\n\
             kernelArgs: [isolcpus=2-7, iommu=pt]\n",
        );
        let cpus = profile.validate().unwrap();
        assert_eq!(cpus.reserved.to_string(), "0-1");
        assert_eq!(cpus.isolated.to_string(), "2-7");
        let sysctls = profile.effective_sysctls();
        assert_eq!(
            sysctls["vm.swappiness"], "1",
            "explicit values override the preset"
        );
        assert_eq!(sysctls["vm.dirty_ratio"], "40");
        assert!(
            profile.irq.move_to_reserved,
            "IRQs move to reserved CPUs unless turned off"
        );
    }

    #[test]
    fn a_profile_without_cpu_partitioning_is_valid() {
        let profile: NodeTuningProfileSpec = serde_yaml::from_str(
            "hugepages: [{size: 2Mi, count: 8, numaNode: 0}]\ntransparentHugepages: never\n",
        )
        .unwrap();
        let cpus = profile.validate().unwrap();
        assert!(cpus.reserved.is_empty() && cpus.isolated.is_empty());
    }

    #[test]
    fn every_refusal_explains_itself() {
        let cases = [
            (
                "cpu: {reserved: '', isolated: '2-3'}",
                "cpu.reserved must name at least one CPU: the OS and the kubelet need somewhere to run",
            ),
            (
                "cpu: {reserved: '0-3', isolated: '2-7'}",
                "cpu.reserved and cpu.isolated overlap on CPUs 2-3",
            ),
            (
                "cpu: {reserved: '0-x'}",
                "cpu.reserved: \"0-x\" is not a CPU number or range (expected a list like 0-3,8)",
            ),
            (
                "cpu: {reserved: '0', isolated: '7-2'}",
                "cpu.isolated: range 7-2 runs backwards",
            ),
            (
                "cpu: {reserved: '0'}\nsysctls: {net.ipv4.ip_forward: '0'}",
                "sysctl net.ipv4.ip_forward is not on the allowlist; allowed: ",
            ),
            (
                "cpu: {reserved: '0'}\nhugepages: [{size: 2Mi, count: 1}, {size: 2Mi, count: 2}]",
                "hugepages: 2 pages of 2Mi requested twice for the same NUMA node",
            ),
        ];
        for (yaml, message) in cases {
            let error = spec(yaml).validate().unwrap_err().to_string();
            assert!(error.starts_with(message), "{yaml}: {error}");
        }
    }
}
