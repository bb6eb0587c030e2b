//! The facts of a tuned node as labels on its Node, under fastvirt's own prefix (never KubeVirt's
//! `kubevirt.io/` ones, which virt-handler owns and overwrites): which profile is applied and
//! whether fully, the hugepage sizes with pages free, the isolated CPUs, the kubelet's CPU manager
//! policy as the kubelet itself recorded it, and whether the IRQs are off the isolated CPUs. A VM's
//! `nodeSelector` (a fastvirt instancetype's) requires them, so it lands only where the tuning is.
//!
//! Labels change only when a fact does (they are compared before anything is written, and the
//! patch names only the labels that change), and all of them go when no profile applies.

use crate::host::HostModel;
use crate::hostfs::HostFs;
use crate::plan;
use fastvirt_api::cpuset::CpuSet;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use std::collections::{BTreeMap, BTreeSet};

pub use fastvirt_api::node_labels::{
    CPU_MANAGER_POLICY, IRQ_ISOLATION, ISOLATED_CPUS, PREFIX, PROFILE, TUNED,
};
/// The field manager the label patches are recorded under.
pub const MANAGER: &str = "fastvirt-agent-node-labels";

/// `node.fastvirt.io/hugepages-2Mi` and its kin: pages of that size are free on the node.
pub fn hugepages_label(size_kb: u64) -> String {
    fastvirt_api::node_labels::hugepages(&plan::size_name(size_kb))
}

/// What the labels say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeFacts {
    /// The profile applied to the node, `None` when none selects it.
    pub profile: Option<String>,
    /// Every setting of the profile took (the `Applied` condition is true).
    pub fully_applied: bool,
    /// Free pages per hugepage size in kB.
    pub hugepages_free: BTreeMap<u64, u64>,
    /// CPUs the applied profile isolates.
    pub isolated_cpus: u32,
    /// The policy in the kubelet's CPU manager state file, `None` when there is none.
    pub cpu_manager_policy: Option<String>,
    /// Whether every IRQ that can move is off the isolated CPUs; `None` without isolated CPUs.
    pub irqs_isolated: Option<bool>,
}

/// A Kubernetes label value: at most 63 characters of `[A-Za-z0-9._-]`, alphanumeric at both ends.
fn label_value(text: &str) -> Option<String> {
    let valid = text.len() <= 63
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && text
            .chars()
            .next()
            .is_none_or(|c| c.is_ascii_alphanumeric())
        && text
            .chars()
            .last()
            .is_none_or(|c| c.is_ascii_alphanumeric());
    valid.then(|| text.to_owned())
}

/// The labels the facts call for; empty when no profile applies.
pub fn desired(facts: &NodeFacts) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let Some(profile) = &facts.profile else {
        return labels;
    };
    // A profile name longer than a label value may be (63) is left out rather than cut, so a
    // selector never matches the wrong profile.
    if let Some(value) = label_value(profile) {
        labels.insert(PROFILE.to_owned(), value);
    }
    labels.insert(TUNED.to_owned(), facts.fully_applied.to_string());
    for (&size_kb, &free) in &facts.hugepages_free {
        if free > 0 {
            labels.insert(hugepages_label(size_kb), "true".to_owned());
        }
    }
    if facts.isolated_cpus > 0 {
        labels.insert(ISOLATED_CPUS.to_owned(), facts.isolated_cpus.to_string());
    }
    if let Some(value) = facts.cpu_manager_policy.as_deref().and_then(label_value) {
        labels.insert(CPU_MANAGER_POLICY.to_owned(), value);
    }
    if let Some(isolated) = facts.irqs_isolated {
        labels.insert(IRQ_ISOLATION.to_owned(), isolated.to_string());
    }
    labels
}

/// The node's labels under [`PREFIX`].
pub fn current(labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels
        .iter()
        .filter(|(key, _)| key.starts_with(PREFIX))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

/// Free pages per size from `sys/kernel/mm/hugepages/hugepages-<n>kB/free_hugepages`.
pub fn hugepages_free(fs: &dyn HostFs) -> BTreeMap<u64, u64> {
    let dir = "sys/kernel/mm/hugepages";
    fs.list(dir)
        .into_iter()
        .filter_map(|name| {
            let size_kb = crate::host::hugepage_dir_size_kb(&name)?;
            let free = fs
                .read_trimmed(&format!("{dir}/{name}/free_hugepages"))?
                .parse()
                .ok()?;
            Some((size_kb, free))
        })
        .collect()
}

/// Whether every IRQ the agent may move has its affinity outside `isolated` once `applied` (the
/// changes of a plan that took) is on the host; `None` when nothing is isolated. IRQs the kernel
/// manages (flagged, or refused earlier: `known_managed`) do not count.
pub fn irqs_isolated(
    host: &HostModel,
    applied: &[plan::Change],
    isolated: &CpuSet,
    known_managed: &BTreeSet<u32>,
) -> Option<bool> {
    if isolated.is_empty() {
        return None;
    }
    let written: BTreeMap<u32, &str> = applied
        .iter()
        .filter_map(|change| match change.target {
            plan::Target::IrqAffinity { irq } => Some((irq, change.desired.as_str())),
            _ => None,
        })
        .collect();
    Some(
        host.irqs
            .iter()
            .filter(|irq| !irq.managed && !known_managed.contains(&irq.number))
            .all(|irq| {
                let affinity = written.get(&irq.number).copied().unwrap_or(&irq.affinity);
                CpuSet::parse(affinity)
                    .is_ok_and(|cpus| cpus.iter().all(|cpu| !isolated.contains(cpu)))
            }),
    )
}

/// The merge patch that turns the node's `current` fastvirt labels into `desired`: the new and
/// changed ones set, the ones no longer true removed (`null`), no other label named.
pub fn patch(
    current: &BTreeMap<String, String>,
    desired: &BTreeMap<String, String>,
) -> serde_json::Value {
    let mut labels = serde_json::Map::new();
    for key in current.keys().filter(|key| !desired.contains_key(*key)) {
        labels.insert(key.clone(), serde_json::Value::Null);
    }
    for (key, value) in desired {
        if current.get(key) != Some(value) {
            labels.insert(key.clone(), value.clone().into());
        }
    }
    serde_json::json!({ "metadata": { "labels": labels } })
}

/// Makes the node's fastvirt labels `desired`, given its `current` ones.
pub async fn apply(
    client: kube::Client,
    node_name: &str,
    current: &BTreeMap<String, String>,
    desired: &BTreeMap<String, String>,
) -> Result<(), kube::Error> {
    let params = PatchParams {
        field_manager: Some(MANAGER.to_owned()),
        ..PatchParams::default()
    };
    // rbac::NODE_LABELS
    Api::<Node>::all(client)
        .patch(node_name, &params, &Patch::Merge(patch(current, desired)))
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuned() -> NodeFacts {
        NodeFacts {
            profile: Some("vm-hosts".into()),
            fully_applied: true,
            hugepages_free: BTreeMap::from([(2048, 512), (1048576, 0)]),
            isolated_cpus: 60,
            cpu_manager_policy: Some("static".into()),
            irqs_isolated: Some(true),
        }
    }

    #[test]
    fn a_tuned_node_says_what_it_offers() {
        let labels = desired(&tuned());
        let expected: BTreeMap<String, String> = [
            (PROFILE, "vm-hosts"),
            (TUNED, "true"),
            ("node.fastvirt.io/hugepages-2Mi", "true"),
            (ISOLATED_CPUS, "60"),
            (CPU_MANAGER_POLICY, "static"),
            (IRQ_ISOLATION, "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(labels, expected, "no label for 1Gi pages: none is free");
        assert!(labels.keys().all(|k| k.starts_with(PREFIX)));
    }

    #[test]
    fn without_a_profile_every_label_goes() {
        let facts = NodeFacts {
            profile: None,
            ..tuned()
        };
        assert!(desired(&facts).is_empty());
    }

    #[test]
    fn a_partly_applied_profile_and_unfit_values() {
        let facts = NodeFacts {
            profile: Some("x".repeat(64)),
            fully_applied: false,
            cpu_manager_policy: Some("weird policy".into()),
            irqs_isolated: Some(false),
            ..tuned()
        };
        let labels = desired(&facts);
        assert_eq!(labels.get(TUNED).map(String::as_str), Some("false"));
        assert_eq!(labels.get(IRQ_ISOLATION).map(String::as_str), Some("false"));
        assert!(
            !labels.contains_key(PROFILE),
            "a 64-character name is no label value"
        );
        assert!(!labels.contains_key(CPU_MANAGER_POLICY));
    }

    #[test]
    fn only_fastvirt_labels_are_current() {
        let node = BTreeMap::from([
            ("kubernetes.io/hostname".to_owned(), "a".to_owned()),
            (TUNED.to_owned(), "true".to_owned()),
            ("kubevirt.io/cpumanager".to_owned(), "true".to_owned()),
        ]);
        assert_eq!(
            current(&node),
            BTreeMap::from([(TUNED.to_owned(), "true".to_owned())])
        );
    }

    #[test]
    fn the_patch_names_only_what_changes() {
        let current = BTreeMap::from([
            (TUNED.to_owned(), "false".to_owned()),
            (ISOLATED_CPUS.to_owned(), "60".to_owned()),
            (IRQ_ISOLATION.to_owned(), "true".to_owned()),
        ]);
        let desired = BTreeMap::from([
            (TUNED.to_owned(), "true".to_owned()),
            (ISOLATED_CPUS.to_owned(), "60".to_owned()),
            (PROFILE.to_owned(), "p".to_owned()),
        ]);
        assert_eq!(
            patch(&current, &desired),
            serde_json::json!({"metadata": {"labels": {
                TUNED: "true",
                PROFILE: "p",
                IRQ_ISOLATION: null,
            }}})
        );
    }

    #[test]
    fn label_values_follow_the_kubernetes_rules() {
        assert_eq!(label_value("static"), Some("static".into()));
        assert_eq!(label_value(""), Some(String::new()));
        assert_eq!(label_value("-x"), None);
        assert_eq!(label_value("a/b"), None);
    }
}
