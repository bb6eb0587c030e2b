//! `TuningSummary`: what the tuned nodes offer VMs, kept current by the operator in one object
//! named `cluster`. It is the parameter of the chart's ValidatingAdmissionPolicy, which warns (or
//! refuses) at admission when a VirtualMachine asks for dedicated CPUs, hugepages of a size or NUMA
//! passthrough that no tuned node offers: CEL reads this instead of every Node.

use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// The name of the one summary the operator keeps.
pub const NAME: &str = "cluster";

/// The summary has nothing to ask for: the operator keeps all of it in the status.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "fastvirt.io",
    version = "v1alpha1",
    kind = "TuningSummary",
    status = "TuningSummaryStatus",
    derive = "Default",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Nodes","type":"string","jsonPath":".status.nodes[*].name"}"#,
    printcolumn = r#"{"name":"Tuned","type":"string","jsonPath":".status.nodes[?(@.tuned==true)].name"}"#,
    printcolumn = r#"{"name":"Dedicated CPUs","type":"string","jsonPath":".status.nodes[*].dedicatedCpus"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
pub struct TuningSummarySpec {}

/// What the tuned nodes offer, and which of them fit each fastvirt instancetype.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TuningSummaryStatus {
    /// Every node a NodeTuningProfile applies to, by name.
    #[serde(default)]
    #[schemars(length(max = 5000))]
    pub nodes: Vec<NodeOffer>,
    /// Every instancetype the operator made, with the nodes that can host it now.
    #[serde(default)]
    #[schemars(length(max = 5000))]
    pub instancetypes: Vec<InstancetypeFit>,
}

/// What one tuned node can give a VM, from the labels its agent keeps.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeOffer {
    /// The node's name.
    #[schemars(length(max = 253))]
    pub name: String,
    /// The NodeTuningProfile applied to it.
    #[schemars(length(max = 253))]
    pub profile: String,
    /// Every setting of the profile took (`node.fastvirt.io/tuned`).
    pub tuned: bool,
    /// The kubelet runs the static CPU manager, so pods can have CPUs of their own.
    pub cpu_manager_static: bool,
    /// CPUs a VM can have to itself: the isolated CPUs where the CPU manager is static, else 0.
    #[schemars(range(min = 0, max = 1_000_000))]
    pub dedicated_cpus: u32,
    /// Hugepage sizes with pages free (`2Mi`, `1Gi`).
    #[serde(default)]
    #[schemars(length(max = 8), inner(length(max = 8)))]
    pub hugepage_sizes: Vec<String>,
    /// The kubelet aligns CPUs and memory to NUMA nodes (topology manager `restricted` or
    /// `single-numa-node`, running), and hugepages are free, so NUMA passthrough can start.
    pub numa_passthrough: bool,
}

/// One fastvirt instancetype and the nodes that can host a VM of it now.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstancetypeFit {
    /// The VirtualMachineClusterInstancetype's name.
    #[schemars(length(max = 253))]
    pub name: String,
    /// The NodeTuningProfile it was made for.
    #[schemars(length(max = 253))]
    pub profile: String,
    /// Host CPUs a VM of it takes: its vCPUs, the emulator thread's and the IO threads'.
    #[schemars(range(min = 0, max = 1_000_000))]
    pub dedicated_cpus: u32,
    /// The hugepage size backing its memory, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8))]
    pub hugepage_size: Option<String>,
    /// It passes the host's NUMA topology through to the guest.
    pub numa_passthrough: bool,
    /// The nodes that can host it now.
    #[serde(default)]
    #[schemars(length(max = 5000), inner(length(max = 253)))]
    pub nodes: Vec<String>,
}
