//! The TuningSummary (pure): what each tuned node offers a VM, read from its agent's labels, and
//! which nodes can host each fastvirt instancetype now. The chart's admission policy reads it.

use super::instancetypes::{self, FAMILY, host_cpus};
use crate::pool_config::{NodeMeta, labels};
use fastvirt_api::node_labels;
use fastvirt_api::tuning_summary::{InstancetypeFit, NodeOffer};
use fastvirt_api::{NodeTuningProfile, TunedNode, TuningSummaryStatus};
use kube::ResourceExt;
use std::sync::Arc;

/// The offer of every node a profile applies to, by node name.
pub fn offers(
    profiles: &[Arc<NodeTuningProfile>],
    nodes: &[Arc<NodeMeta>],
    tuned: &[Arc<TunedNode>],
) -> Vec<NodeOffer> {
    let mut offers: Vec<NodeOffer> = nodes
        .iter()
        .filter_map(|node| {
            let labels = labels(node);
            let profile = labels.get(node_labels::PROFILE)?;
            let name = node.metadata.name.clone().unwrap_or_default();
            let cpu_manager_static = labels
                .get(node_labels::CPU_MANAGER_POLICY)
                .is_some_and(|p| p == "static");
            let isolated: u32 = labels
                .get(node_labels::ISOLATED_CPUS)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let hugepage_sizes: Vec<String> = labels
                .iter()
                .filter(|(_, value)| *value == "true")
                .filter_map(|(key, _)| key.strip_prefix(node_labels::HUGEPAGES_PREFIX))
                .map(str::to_owned)
                .collect();
            let kubelet_current = tuned.iter().any(|t| {
                t.name_any() == name
                    && t.status
                        .as_ref()
                        .is_some_and(|s| !s.kubelet_restart_required)
            });
            let numa_passthrough = !hugepage_sizes.is_empty()
                && kubelet_current
                && profiles
                    .iter()
                    .any(|p| p.name_any() == *profile && instancetypes::numa_aligned(p));
            Some(NodeOffer {
                name,
                profile: profile.clone(),
                tuned: labels.get(node_labels::TUNED).is_some_and(|t| t == "true"),
                cpu_manager_static,
                dedicated_cpus: if cpu_manager_static { isolated } else { 0 },
                hugepage_sizes,
                numa_passthrough,
            })
        })
        .collect();
    offers.sort_by(|a, b| a.name.cmp(&b.name));
    offers
}

/// Whether `offer` can host a VM of `fit` (its `nodes` aside).
pub fn hosts(offer: &NodeOffer, fit: &InstancetypeFit) -> bool {
    offer.profile == fit.profile
        && offer.tuned
        && offer.cpu_manager_static
        && offer.dedicated_cpus >= fit.dedicated_cpus
        && fit
            .hugepage_size
            .as_ref()
            .is_none_or(|size| offer.hugepage_sizes.contains(size))
        && (!fit.numa_passthrough || offer.numa_passthrough)
}

/// The summary: every offer, and when the instancetype API is served, every instancetype the
/// profiles call for with the nodes that fit it.
pub fn build(
    profiles: &[Arc<NodeTuningProfile>],
    nodes: &[Arc<NodeMeta>],
    tuned: &[Arc<TunedNode>],
    instancetypes_served: bool,
) -> TuningSummaryStatus {
    let offers = offers(profiles, nodes, tuned);
    let mut fits = Vec::new();
    if instancetypes_served {
        for profile in profiles {
            let io_threads = profile.spec.kubevirt.io_threads;
            for (instancetype, size) in instancetypes::build(profile, nodes).iter().zip(FAMILY) {
                let mut fit = InstancetypeFit {
                    name: instancetype.metadata.name.clone().unwrap_or_default(),
                    profile: profile.name_any(),
                    dedicated_cpus: host_cpus(&size, io_threads),
                    hugepage_size: instancetype
                        .spec
                        .memory
                        .hugepages
                        .as_ref()
                        .map(|h| h.page_size.clone()),
                    numa_passthrough: instancetype.spec.cpu.numa.is_some(),
                    nodes: Vec::new(),
                };
                fit.nodes = offers
                    .iter()
                    .filter(|offer| hosts(offer, &fit))
                    .map(|offer| offer.name.clone())
                    .collect();
                fits.push(fit);
            }
        }
        fits.sort_by(|a, b| a.name.cmp(&b.name));
    }
    TuningSummaryStatus {
        nodes: offers,
        instancetypes: fits,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubevirt::test_node as node;
    use fastvirt_api::TunedNodeStatus;

    fn tuned(name: &str, restart: bool) -> Arc<TunedNode> {
        let mut t = TunedNode::new(name, Default::default());
        t.status = Some(TunedNodeStatus {
            kubelet_restart_required: restart,
            ..Default::default()
        });
        Arc::new(t)
    }

    fn profile(name: &str, yaml: &str) -> Arc<NodeTuningProfile> {
        Arc::new(NodeTuningProfile::new(
            name,
            serde_yaml::from_str(yaml).unwrap(),
        ))
    }

    fn tuned_node(name: &str, isolated: &str, policy: &str) -> Arc<NodeMeta> {
        node(
            name,
            &[
                ("node.fastvirt.io/profile", "vm"),
                ("node.fastvirt.io/tuned", "true"),
                ("node.fastvirt.io/isolated-cpus", isolated),
                ("node.fastvirt.io/cpu-manager-policy", policy),
                ("node.fastvirt.io/hugepages-2Mi", "true"),
                ("fastvirt.io/other", "true"),
            ],
        )
    }

    /// Six isolated CPUs and 2 MiB pages.
    const SIX_CPUS: &str =
        "cpu: {reserved: '0', isolated: '1-6'}\nhugepages: [{size: 2Mi, count: 64}]";

    #[test]
    fn offers_come_from_the_agents_labels() {
        let aligned = format!(
            "{SIX_CPUS}\nkubelet: {{manageDropIn: true, topologyManagerPolicy: restricted}}"
        );
        let profiles = [profile("vm", &aligned)];
        let nodes = [
            tuned_node("b", "6", "static"),
            tuned_node("a", "6", "none"),
            node("untuned", &[]),
        ];
        let reports = [tuned("a", false), tuned("b", false)];
        let found = offers(&profiles, &nodes, &reports);
        assert_eq!(found.len(), 2, "only nodes with a profile: {found:?}");
        assert_eq!(found[0].name, "a");
        assert_eq!(found[0].dedicated_cpus, 0, "no static CPU manager");
        assert_eq!(
            found[1],
            NodeOffer {
                name: "b".into(),
                profile: "vm".into(),
                tuned: true,
                cpu_manager_static: true,
                dedicated_cpus: 6,
                hugepage_sizes: vec!["2Mi".into()],
                numa_passthrough: true,
            }
        );
        // A kubelet that still has to restart does not align memory yet.
        let pending = [tuned("b", true)];
        assert!(!offers(&profiles, &nodes, &pending)[1].numa_passthrough);
    }

    #[test]
    fn each_instancetype_lists_the_nodes_that_fit_it() {
        let profiles = [profile("vm", SIX_CPUS)];
        let nodes = [
            tuned_node("b", "6", "static"),
            tuned_node("c", "3", "static"),
        ];
        let summary = build(&profiles, &nodes, &[], true);
        let fit = |name: &str| {
            summary
                .instancetypes
                .iter()
                .find(|f| f.name == name)
                .unwrap()
        };
        // medium: 1 vCPU + emulator + 1 IO thread = 3 host CPUs; large: 4; xlarge: 6.
        assert_eq!(fit("fastvirt.vm.medium").nodes, ["b", "c"]);
        assert_eq!(fit("fastvirt.vm.large").nodes, ["b"]);
        assert_eq!(fit("fastvirt.vm.xlarge").nodes, ["b"]);
        assert!(fit("fastvirt.vm.2xlarge").nodes.is_empty());
        assert_eq!(
            fit("fastvirt.vm.medium").hugepage_size.as_deref(),
            Some("2Mi")
        );
        assert!(
            build(&profiles, &nodes, &[], false)
                .instancetypes
                .is_empty()
        );
    }
}
