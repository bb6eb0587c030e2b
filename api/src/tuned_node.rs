//! `TunedNode`: what the node agent applied on one node, and what it measured.

use crate::condition::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// One node's tuning state, named after the node and written by its fastvirt agent.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "fastvirt.io",
    version = "v1alpha1",
    kind = "TunedNode",
    shortname = "tn",
    status = "TunedNodeStatus",
    derive = "Default",
    printcolumn = r#"{"name":"Profile","type":"string","jsonPath":".status.profile"}"#,
    printcolumn = r#"{"name":"Applied","type":"string","jsonPath":".status.conditions[?(@.type==\"Applied\")].status"}"#,
    printcolumn = r#"{"name":"Degraded","type":"string","jsonPath":".status.conditions[?(@.type==\"Degraded\")].status"}"#,
    printcolumn = r#"{"name":"Reboot","type":"boolean","jsonPath":".status.rebootRequired"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TunedNodeSpec {
    /// The node this object describes (the same as its name).
    #[serde(default)]
    pub node_name: String,
}

/// What the agent applied, could not apply, and measured.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TunedNodeStatus {
    /// The NodeTuningProfile that applies to the node, if one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The profile's generation the agent applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub profile_generation: Option<i64>,
    /// Settings applied, as `setting: value` lines.
    #[serde(default)]
    #[schemars(length(max = 4096), inner(length(max = 65536)))]
    pub applied: Vec<String>,
    /// Settings the kernel would not change at runtime (managed IRQs, 1 GiB pages without
    /// contiguous memory), with the reason.
    #[serde(default)]
    #[schemars(length(max = 4096), inner(length(max = 65536)))]
    pub unchangeable: Vec<String>,
    /// How often a re-check found a setting changed by someone else and set it back.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub drift_corrections: u64,
    /// Kernel arguments the profile wants that /proc/cmdline lacks.
    #[serde(default)]
    #[schemars(length(max = 512), inner(length(max = 4096)))]
    pub missing_kernel_args: Vec<String>,
    /// A reboot is needed for the missing kernel arguments.
    #[serde(default)]
    pub reboot_required: bool,
    /// The kubelet must restart to see new hugepages or a changed CPU manager policy.
    #[serde(default)]
    pub kubelet_restart_required: bool,
    /// CPU congestion over the last measurement interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub congestion: Option<CongestionSummary>,
    /// Applied and Degraded conditions.
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub conditions: Vec<Condition>,
}

/// Run-queue pressure measured from /proc/schedstat (or per-task schedstat and PSI).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CongestionSummary {
    /// Where the numbers come from: `schedstat`, `task-schedstat` or `psi`.
    pub source: String,
    /// Average share of time a runnable task waited for a CPU, in percent, over all CPUs (above
    /// 100 when several tasks wait for the same CPU).
    #[schemars(range(min = 0))]
    pub wait_percent: f64,
    /// The same over the isolated CPUs only, where it should be near zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub isolated_wait_percent: Option<f64>,
    /// CPUs with low utilisation but long waits: bursty congestion.
    #[serde(default)]
    pub bursty_cpus: String,
}
