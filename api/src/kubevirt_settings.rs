//! What the operator makes for KubeVirt from a NodeTuningProfile: a family of
//! `VirtualMachineClusterInstancetype`s that land only on the profile's tuned nodes
//! (`docs/kubevirt.md`). Made only where KubeVirt's instancetype API is served.

use serde::{Deserialize, Serialize};

/// The most IO threads an instancetype's supplemental pool may have.
pub const MAX_IO_THREADS: u32 = 8;

/// KubeVirt objects for the profile's nodes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, kube::KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KubevirtSettings {
    /// Make the profile's instancetype family (`fastvirt.<profile>.<size>`); off removes it.
    #[serde(default = "default_true")]
    pub instancetypes: bool,
    /// IO threads in each instancetype's supplemental pool. Each takes a host CPU of its own
    /// beside the vCPUs and the emulator thread.
    #[serde(default = "default_io_threads")]
    #[schemars(range(min = 1, max = MAX_IO_THREADS))]
    pub io_threads: u32,
}

impl Default for KubevirtSettings {
    fn default() -> Self {
        Self {
            instancetypes: true,
            io_threads: default_io_threads(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_io_threads() -> u32 {
    1
}
