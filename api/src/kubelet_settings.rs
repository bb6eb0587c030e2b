//! The kubelet settings a NodeTuningProfile implies, which the agent may write as a drop-in of the
//! kubelet's configuration directory. The agent never restarts the kubelet: it reports
//! `KubeletRestartRequired` with what differs until the kubelet runs with them.

use serde::{Deserialize, Serialize};

/// Kubelet settings for the nodes the profile tunes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubeletSettings {
    /// Write `90-fastvirt.conf` into the kubelet's drop-in directory (its `--config-dir`): the
    /// static CPU manager with the profile's reserved CPUs as `reservedSystemCPUs`, and the
    /// topology manager settings below. Off, the agent only reports what differs.
    #[serde(default)]
    pub manage_drop_in: bool,
    /// `topologyManagerPolicy` in the drop-in; unset leaves the kubelet's own. `restricted` and
    /// `single-numa-node` also turn on the static memory manager, reserving on NUMA node 0 what
    /// the kubelet already keeps back of memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_manager_policy: Option<TopologyManagerPolicy>,
    /// `topologyManagerScope` in the drop-in; unset leaves the kubelet's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_manager_scope: Option<TopologyManagerScope>,
}

/// How the kubelet's topology manager aligns CPUs and devices to NUMA nodes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TopologyManagerPolicy {
    None,
    BestEffort,
    Restricted,
    SingleNumaNode,
}

impl TopologyManagerPolicy {
    /// The value as the kubelet spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::BestEffort => "best-effort",
            Self::Restricted => "restricted",
            Self::SingleNumaNode => "single-numa-node",
        }
    }
}

/// What the topology manager aligns: each container, or a whole pod.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TopologyManagerScope {
    Container,
    Pod,
}

impl TopologyManagerScope {
    /// The value as the kubelet spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Container => "container",
            Self::Pod => "pod",
        }
    }
}
