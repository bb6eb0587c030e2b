//! The only host paths the agent ever writes. Every write goes through [`check`], so a bug in
//! planning can at worst rewrite a tuning knob, never an arbitrary file on the node.

use fastvirt_api::tuning_profile::SYSCTL_ALLOWLIST;
use std::path::{Component, Path};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WriteAllowlistError {
    #[error("refusing to write {0}: it is not one of the tuning paths the agent may change")]
    NotAllowed(String),
}

/// Paths relative to the host root, with `*` standing for one path component.
const PATTERNS: &[&str] = &[
    "proc/irq/*/smp_affinity_list",
    "proc/irq/default_smp_affinity",
    "sys/devices/virtual/workqueue/cpumask",
    "sys/kernel/mm/hugepages/*/nr_hugepages",
    "sys/devices/system/node/*/hugepages/*/nr_hugepages",
    "sys/kernel/mm/transparent_hugepage/enabled",
    "sys/kernel/mm/transparent_hugepage/defrag",
    "sys/kernel/mm/ksm/run",
    "sys/kernel/mm/ksm/pages_to_scan",
    "sys/devices/system/cpu/*/cpufreq/scaling_governor",
    "sys/devices/system/cpu/*/cpufreq/energy_performance_preference",
    "sys/devices/system/cpu/*/cpuidle/*/disable",
    "etc/default/irqbalance",
    "etc/sysconfig/irqbalance",
    "var/lib/fastvirt/agent/journal.json",
];

fn matches(pattern: &str, path: &str) -> bool {
    let mut pattern_parts = pattern.split('/');
    let mut path_parts = path.split('/');
    loop {
        match (pattern_parts.next(), path_parts.next()) {
            (None, None) => return true,
            (Some("*"), Some(part)) if !part.is_empty() => {}
            (Some(expected), Some(part)) if expected == part => {}
            _ => return false,
        }
    }
}

/// The sysctl file for an allowlisted sysctl name, e.g. `proc/sys/vm/swappiness`.
pub fn sysctl_path(name: &str) -> String {
    format!("proc/sys/{}", name.replace('.', "/"))
}

/// Accepts `path` (relative to the host root) only when it is a plain, normalised path matching
/// one of the tuning paths or an allowlisted sysctl.
pub fn check(path: &str) -> Result<(), WriteAllowlistError> {
    let normal = Path::new(path)
        .components()
        .all(|c| matches!(c, Component::Normal(_)));
    // The kubelet drop-in lives wherever the node's kubelet reads its `--config-dir`; only that
    // one file name, which no other tool uses.
    let drop_in = Path::new(path).file_name()
        == Some(std::ffi::OsStr::new(crate::kubelet_drop_in::FILE_NAME));
    let allowed = normal
        && (drop_in
            || PATTERNS.iter().any(|p| matches(p, path))
            || SYSCTL_ALLOWLIST
                .iter()
                .any(|name| sysctl_path(name) == path));
    if allowed {
        Ok(())
    } else {
        Err(WriteAllowlistError::NotAllowed(path.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuning_paths_pass_and_everything_else_is_refused() {
        for ok in [
            "proc/irq/36/smp_affinity_list",
            "sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages",
            "sys/devices/system/cpu/cpu3/cpuidle/state2/disable",
            "proc/sys/vm/swappiness",
            "var/lib/fastvirt/agent/journal.json",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        for refused in [
            "etc/passwd",
            "proc/sys/net/ipv4/ip_forward",
            "proc/irq/../../etc/shadow/smp_affinity_list",
            "/proc/irq/36/smp_affinity_list",
            "proc/irq//smp_affinity_list",
            "sys/kernel/mm/ksm/run/extra",
        ] {
            assert!(check(refused).is_err(), "{refused}");
        }
    }
}
