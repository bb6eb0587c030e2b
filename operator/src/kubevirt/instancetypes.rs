//! The instancetype family of a NodeTuningProfile (pure): `fastvirt.<profile>.<size>`, sizes as
//! KubeVirt's common `cx1` series (2 GiB per vCPU), each with dedicated CPUs, an isolated
//! emulator thread, a supplemental IO-thread pool, hugepages of a size the profile's nodes really
//! have, NUMA passthrough where the kubelet aligns memory, and a `nodeSelector` that requires the
//! agent's labels of a node that runs the profile fully, with the static CPU manager.

use super::types::{
    ClusterInstancetype, CpuInstancetype, Hugepages, InstancetypeSpec, IoThreads,
    MemoryInstancetype, Numa,
};
use crate::pool_config::{NodeMeta, labels};
use fastvirt_api::NodeTuningProfile;
use fastvirt_api::kubelet_settings::TopologyManagerPolicy;
use fastvirt_api::node_labels;
use fastvirt_api::tuning_profile::HugepageSize;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Labels every instancetype of the family with its profile.
pub const PROFILE_LABEL: &str = "fastvirt.io/profile";
/// Labels every instancetype of the family with its size.
pub const SIZE_LABEL: &str = "fastvirt.io/size";

/// One size of the family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub name: &'static str,
    pub vcpus: u32,
    pub memory_gib: u32,
}

/// The family, smallest first (`docs/kubevirt.md`).
pub const FAMILY: [Size; 6] = [
    Size {
        name: "medium",
        vcpus: 1,
        memory_gib: 2,
    },
    Size {
        name: "large",
        vcpus: 2,
        memory_gib: 4,
    },
    Size {
        name: "xlarge",
        vcpus: 4,
        memory_gib: 8,
    },
    Size {
        name: "2xlarge",
        vcpus: 8,
        memory_gib: 16,
    },
    Size {
        name: "4xlarge",
        vcpus: 16,
        memory_gib: 32,
    },
    Size {
        name: "8xlarge",
        vcpus: 32,
        memory_gib: 64,
    },
];

/// `fastvirt.<profile>.<size>`.
pub fn name(profile: &str, size: &Size) -> String {
    format!("fastvirt.{profile}.{}", size.name)
}

/// Host CPUs a VM of `size` takes: its vCPUs, the isolated emulator thread's, and one for each
/// supplemental IO thread (KubeVirt pins each to a CPU of its own).
pub fn host_cpus(size: &Size, io_threads: u32) -> u32 {
    size.vcpus + 1 + io_threads
}

/// Whether the profile's nodes are a label selector can name: the agent leaves the profile label
/// off for a name longer than a label value may be.
pub fn selectable(profile: &str) -> bool {
    profile.len() <= 63
}

/// The hugepage size the family uses: the largest the profile allocates that a node running it
/// has pages of free; none when no node has.
pub fn hugepage_size(profile: &NodeTuningProfile, nodes: &[Arc<NodeMeta>]) -> Option<HugepageSize> {
    let name = profile.name_any();
    let on_its_nodes = |size: HugepageSize| {
        nodes.iter().any(|node| {
            let labels = labels(node);
            labels.get(node_labels::PROFILE) == Some(&name)
                && labels
                    .get(&node_labels::hugepages(size.as_str()))
                    .is_some_and(|v| v == "true")
        })
    };
    profile
        .spec
        .hugepages
        .iter()
        .filter(|pool| pool.count > 0)
        .map(|pool| pool.size)
        .filter(|&size| on_its_nodes(size))
        .max_by_key(|size| size.bytes())
}

/// NUMA passthrough is safe where the kubelet the agent configures aligns CPUs and memory to one
/// NUMA node (topology manager `restricted` or `single-numa-node`); with `best-effort` a guest's
/// memory binding can fail at start (kubevirt/kubevirt#17248). KubeVirt also needs hugepages.
pub fn numa_aligned(profile: &NodeTuningProfile) -> bool {
    profile.spec.kubelet.as_ref().is_some_and(|kubelet| {
        kubelet.manage_drop_in
            && matches!(
                kubelet.topology_manager_policy,
                Some(TopologyManagerPolicy::Restricted | TopologyManagerPolicy::SingleNumaNode)
            )
    })
}

/// The family for `profile` given the nodes' labels; empty when the profile turns it off or its
/// name cannot be selected on.
pub fn build(profile: &NodeTuningProfile, nodes: &[Arc<NodeMeta>]) -> Vec<ClusterInstancetype> {
    let profile_name = profile.name_any();
    if !profile.spec.kubevirt.instancetypes || !selectable(&profile_name) {
        return Vec::new();
    }
    let hugepages = hugepage_size(profile, nodes);
    let numa = hugepages.is_some() && numa_aligned(profile);
    let io_threads = profile.spec.kubevirt.io_threads;
    let mut node_selector = BTreeMap::from([
        (node_labels::PROFILE.to_owned(), profile_name.clone()),
        (node_labels::TUNED.to_owned(), "true".to_owned()),
        (
            node_labels::CPU_MANAGER_POLICY.to_owned(),
            "static".to_owned(),
        ),
    ]);
    if let Some(size) = hugepages {
        node_selector.insert(node_labels::hugepages(size.as_str()), "true".to_owned());
    }
    FAMILY
        .iter()
        .map(|size| ClusterInstancetype {
            metadata: ObjectMeta {
                name: Some(name(&profile_name, size)),
                labels: Some(BTreeMap::from([
                    (
                        "app.kubernetes.io/managed-by".to_owned(),
                        crate::MANAGER.to_owned(),
                    ),
                    (PROFILE_LABEL.to_owned(), profile_name.clone()),
                    (SIZE_LABEL.to_owned(), size.name.to_owned()),
                ])),
                annotations: Some(BTreeMap::from([(
                    "instancetype.kubevirt.io/description".to_owned(),
                    format!(
                        "{} dedicated vCPUs and {} GiB on nodes tuned by the NodeTuningProfile {profile_name}; takes {} host CPUs (vCPUs, emulator thread, {io_threads} IO threads).",
                        size.vcpus,
                        size.memory_gib,
                        host_cpus(size, io_threads)
                    ),
                )])),
                owner_references: profile.controller_owner_ref(&()).map(|r| vec![r]),
                ..ObjectMeta::default()
            },
            spec: InstancetypeSpec {
                cpu: CpuInstancetype {
                    guest: size.vcpus,
                    dedicated_cpu_placement: true,
                    isolate_emulator_thread: true,
                    numa: numa.then(|| Numa {
                        guest_mapping_passthrough: BTreeMap::new(),
                    }),
                },
                memory: MemoryInstancetype {
                    guest: format!("{}Gi", size.memory_gib),
                    hugepages: hugepages.map(|size| Hugepages {
                        page_size: size.as_str().to_owned(),
                    }),
                },
                io_threads_policy: Some("supplementalPool".to_owned()),
                io_threads: Some(IoThreads {
                    supplemental_pool_thread_count: io_threads,
                }),
                node_selector: node_selector.clone(),
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubevirt::test_node as node;

    fn profile(name: &str, yaml: &str) -> NodeTuningProfile {
        let mut profile = NodeTuningProfile::new(name, serde_yaml::from_str(yaml).unwrap());
        profile.metadata.uid = Some("uid-1".into());
        profile
    }

    const WITH_PAGES: &str = "
cpu: {reserved: '0-1', isolated: '2-15'}
hugepages: [{size: 2Mi, count: 1024}, {size: 1Gi, count: 8}]
kubelet: {manageDropIn: true, topologyManagerPolicy: single-numa-node}
kubevirt: {ioThreads: 2}
";

    #[test]
    fn the_family_requires_the_profiles_tuned_nodes() {
        let nodes = [node(
            "a",
            &[
                ("node.fastvirt.io/profile", "vm"),
                ("node.fastvirt.io/hugepages-2Mi", "true"),
            ],
        )];
        let types = build(&profile("vm", WITH_PAGES), &nodes);
        let names: Vec<_> = types
            .iter()
            .map(|t| t.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "fastvirt.vm.medium",
                "fastvirt.vm.large",
                "fastvirt.vm.xlarge",
                "fastvirt.vm.2xlarge",
                "fastvirt.vm.4xlarge",
                "fastvirt.vm.8xlarge"
            ]
        );
        let large = &types[1];
        assert_eq!(
            large.spec.node_selector,
            BTreeMap::from([
                ("node.fastvirt.io/profile".to_owned(), "vm".to_owned()),
                ("node.fastvirt.io/tuned".to_owned(), "true".to_owned()),
                (
                    "node.fastvirt.io/cpu-manager-policy".to_owned(),
                    "static".to_owned()
                ),
                (
                    "node.fastvirt.io/hugepages-2Mi".to_owned(),
                    "true".to_owned()
                ),
            ])
        );
        let spec = serde_json::to_value(&large.spec).unwrap();
        assert_eq!(
            spec,
            serde_json::json!({
                "cpu": {"guest": 2, "dedicatedCPUPlacement": true, "isolateEmulatorThread": true,
                        "numa": {"guestMappingPassthrough": {}}},
                "memory": {"guest": "4Gi", "hugepages": {"pageSize": "2Mi"}},
                "ioThreadsPolicy": "supplementalPool",
                "ioThreads": {"supplementalPoolThreadCount": 2},
                "nodeSelector": large.spec.node_selector,
            })
        );
        let owner = &large.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
            ("NodeTuningProfile", "vm", "uid-1")
        );
        assert_eq!(host_cpus(&FAMILY[1], 2), 5);
    }

    #[test]
    fn hugepages_only_of_a_size_its_nodes_have() {
        let p = profile("vm", WITH_PAGES);
        // 1 GiB pages on a node of another profile do not count.
        let nodes = [
            node(
                "a",
                &[
                    ("node.fastvirt.io/profile", "other"),
                    ("node.fastvirt.io/hugepages-1Gi", "true"),
                ],
            ),
            node("b", &[("node.fastvirt.io/profile", "vm")]),
        ];
        assert_eq!(hugepage_size(&p, &nodes), None);
        let types = build(&p, &nodes);
        assert_eq!(types[0].spec.memory.hugepages, None);
        assert_eq!(
            types[0].spec.cpu.numa, None,
            "KubeVirt needs hugepages for NUMA"
        );
        assert!(
            !types[0]
                .spec
                .node_selector
                .keys()
                .any(|k| k.contains("hugepages"))
        );
        let nodes = [node(
            "b",
            &[
                ("node.fastvirt.io/profile", "vm"),
                ("node.fastvirt.io/hugepages-2Mi", "true"),
                ("node.fastvirt.io/hugepages-1Gi", "true"),
            ],
        )];
        assert_eq!(hugepage_size(&p, &nodes), Some(HugepageSize::OneGi));
    }

    #[test]
    fn numa_passthrough_only_where_the_kubelet_aligns_memory() {
        let nodes = [node(
            "a",
            &[
                ("node.fastvirt.io/profile", "vm"),
                ("node.fastvirt.io/hugepages-2Mi", "true"),
            ],
        )];
        let best_effort = WITH_PAGES.replace("single-numa-node", "best-effort");
        assert_eq!(
            build(&profile("vm", &best_effort), &nodes)[0].spec.cpu.numa,
            None
        );
        let unmanaged = WITH_PAGES.replace("manageDropIn: true", "manageDropIn: false");
        assert_eq!(
            build(&profile("vm", &unmanaged), &nodes)[0].spec.cpu.numa,
            None
        );
    }

    #[test]
    fn none_when_turned_off_or_unselectable() {
        let off = format!("{WITH_PAGES}\n").replace(
            "kubevirt: {ioThreads: 2}",
            "kubevirt: {instancetypes: false}",
        );
        assert!(build(&profile("vm", &off), &[]).is_empty());
        assert!(build(&profile(&"p".repeat(64), WITH_PAGES), &[]).is_empty());
        assert_eq!(
            build(&profile(&"p".repeat(63), WITH_PAGES), &[]).len(),
            FAMILY.len()
        );
    }
}
