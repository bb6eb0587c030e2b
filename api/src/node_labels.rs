//! The labels fastvirt's agent keeps on a tuned Node, under its own prefix (never KubeVirt's
//! `kubevirt.io/` ones, which virt-handler owns). The agent writes them; the operator's
//! instancetypes select on them and its TuningSummary reads them.

/// Every label the agent sets starts with this.
pub const PREFIX: &str = "node.fastvirt.io/";
/// The NodeTuningProfile applied to the node.
pub const PROFILE: &str = "node.fastvirt.io/profile";
/// `true` when every setting of the profile took.
pub const TUNED: &str = "node.fastvirt.io/tuned";
/// How many CPUs the profile isolates.
pub const ISOLATED_CPUS: &str = "node.fastvirt.io/isolated-cpus";
/// The kubelet's CPU manager policy, from its own state file.
pub const CPU_MANAGER_POLICY: &str = "node.fastvirt.io/cpu-manager-policy";
/// `true` when every IRQ that can move is off the isolated CPUs.
pub const IRQ_ISOLATION: &str = "node.fastvirt.io/irq-isolation";
/// What [`hugepages`] puts before the size.
pub const HUGEPAGES_PREFIX: &str = "node.fastvirt.io/hugepages-";

/// `node.fastvirt.io/hugepages-2Mi` and its kin (`true`): pages of that size are free.
pub fn hugepages(size_name: &str) -> String {
    format!("{HUGEPAGES_PREFIX}{size_name}")
}
