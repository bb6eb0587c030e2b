//! The `run` mode's reconcile step against an in-memory API server and a fixture host.

use fastvirt_agent::fixture::{self, FixtureFs, FixtureSpec};
use fastvirt_agent::hostfs::HostFs;
use fastvirt_agent::kubelet_drop_in::KubeletDirs;
use fastvirt_agent::metrics::Metrics;
use fastvirt_agent::node_labels;
use fastvirt_agent::reconcile::{Agent, AgentConfig};
use fastvirt_api::{NodeTuningProfile, NodeTuningProfileSpec, TunedNode, TunedNodeStatus};
use k8s_openapi::api::core::v1::{Node, NodeStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, Patch, PatchParams};
use kube_fake_client::ClientBuilder;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

const NODE: &str = "node-a";

fn node() -> Node {
    let mut node = Node::default();
    node.metadata.name = Some(NODE.to_owned());
    node.metadata.labels = Some(BTreeMap::from([(
        "fastvirt.io/vm-host".to_owned(),
        "true".to_owned(),
    )]));
    node.status = Some(NodeStatus {
        capacity: Some(BTreeMap::from([(
            "hugepages-2Mi".to_owned(),
            Quantity("0".to_owned()),
        )])),
        ..NodeStatus::default()
    });
    node
}

fn profile(name: &str, priority: i32) -> NodeTuningProfile {
    let spec: NodeTuningProfileSpec = serde_yaml::from_str(&format!(
        "nodeSelector: {{fastvirt.io/vm-host: 'true'}}\npriority: {priority}\n\
         cpu: {{reserved: '0,16,32,48', isolated: '1-15,17-31,33-47,49-63'}}\n\
         hugepages: [{{size: 2Mi, count: 256}}]\n\
         transparentHugepages: never\nsysctls: {{vm.swappiness: '10'}}\nkernelArgs: [nohz_full=1-15]\n"
    ))
    .expect("profile parses");
    let mut profile = NodeTuningProfile::new(name, spec);
    profile.metadata.generation = Some(1);
    profile
}

struct Setup {
    _dir: tempfile::TempDir,
    fs: Arc<FixtureFs>,
    client: kube::Client,
    agent: Agent,
}

async fn setup(profiles: Vec<NodeTuningProfile>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    fixture::write_host(dir.path(), &FixtureSpec::two_socket_64_cpus()).unwrap();
    std::fs::create_dir_all(dir.path().join("proc/pressure")).unwrap();
    std::fs::write(
        dir.path().join("proc/pressure/cpu"),
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=1000\n",
    )
    .unwrap();
    let fs = Arc::new(FixtureFs::open(dir.path()).unwrap());
    let mut builder = ClientBuilder::new()
        .with_resource::<NodeTuningProfile>()
        .with_resource::<TunedNode>()
        .with_status_subresource::<TunedNode>()
        .with_object(node());
    for profile in profiles {
        builder = builder.with_object(profile);
    }
    let client =
        fastvirt_test_support::client(builder, &["nodetuningprofiles", "tunednodes"]).await;
    let config = AgentConfig {
        node_name: NODE.to_owned(),
        max_hugepage_percent: 80,
        kubelet_dirs: KubeletDirs::new("/var/lib/kubelet", "/etc/kubernetes/kubelet.conf.d"),
    };
    let agent = Agent::new(
        client.clone(),
        config,
        fs.clone(),
        Arc::new(Metrics::default()),
    );
    Setup {
        _dir: dir,
        fs,
        client,
        agent,
    }
}

fn condition<'a>(status: &'a TunedNodeStatus, type_: &str) -> (&'a str, &'a str) {
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition"));
    (c.status.as_str(), c.reason.as_str())
}

#[tokio::test]
async fn applies_the_selecting_profile_counts_drift_and_restores_when_unselected() {
    let setup = setup(vec![profile("vm-hosts", 0)]).await;
    let swappiness_before = setup.fs.read_trimmed("proc/sys/vm/swappiness").unwrap();

    let status = setup.agent.reconcile_once().await.unwrap();
    assert_eq!(status.profile.as_deref(), Some("vm-hosts"));
    assert_eq!(condition(&status, "Applied"), ("True", "Applied"));
    assert_eq!(condition(&status, "Degraded"), ("False", "AsExpected"));
    assert_eq!(status.missing_kernel_args, vec!["nohz_full=1-15"]);
    assert!(status.reboot_required);
    assert!(
        status.kubelet_restart_required,
        "the kubelet still reports 0 hugepages"
    );
    assert!(
        status
            .applied
            .contains(&"sysctl vm.swappiness: 10".to_owned()),
        "{:#?}",
        status.applied
    );
    assert!(
        status
            .applied
            .iter()
            .any(|l| l.starts_with("irq * affinity: 0,32 (x")),
        "{:#?}",
        status.applied
    );
    assert!(
        status
            .unchangeable
            .iter()
            .any(|l| l.starts_with("irq * affinity: kernel-managed IRQ")),
        "{:#?}",
        status.unchangeable
    );
    assert_eq!(
        setup.fs.read_trimmed("proc/sys/vm/swappiness").unwrap(),
        "10"
    );
    assert!(
        status.congestion.is_none(),
        "the first pass has no interval to measure"
    );

    let stored = Api::<TunedNode>::all(setup.client.clone())
        .get(NODE)
        .await
        .unwrap();
    assert_eq!(stored.spec.node_name, NODE);
    assert_eq!(stored.status.as_ref(), Some(&status));

    let steady = setup.agent.reconcile_once().await.unwrap();
    assert_eq!(steady.drift_corrections, 0);
    assert_eq!(
        steady.congestion.as_ref().map(|c| c.source.as_str()),
        Some("psi")
    );

    setup.fs.tamper("proc/sys/vm/swappiness", "60").unwrap();
    let drifted = setup.agent.reconcile_once().await.unwrap();
    assert_eq!(drifted.drift_corrections, 1);
    assert_eq!(
        setup.fs.read_trimmed("proc/sys/vm/swappiness").unwrap(),
        "10"
    );

    let nodes = Api::<Node>::all(setup.client.clone());
    let unlabel = json!({"metadata": {"labels": {"fastvirt.io/vm-host": null}}});
    nodes
        .patch(NODE, &PatchParams::default(), &Patch::Merge(&unlabel))
        .await
        .unwrap();
    let released = setup.agent.reconcile_once().await.unwrap();
    assert_eq!(released.profile, None);
    assert_eq!(condition(&released, "Applied"), ("False", "NoProfile"));
    assert_eq!(
        setup.fs.read_trimmed("proc/sys/vm/swappiness").unwrap(),
        swappiness_before
    );
    assert_eq!(
        setup
            .fs
            .read_trimmed("sys/kernel/mm/transparent_hugepage/enabled")
            .unwrap(),
        "[always] madvise never"
    );
    assert!(released.applied.is_empty(), "{:#?}", released.applied);
}

#[tokio::test]
async fn a_conflict_applies_nothing_and_says_so() {
    let setup = setup(vec![profile("a", 5), profile("b", 5)]).await;
    let status = setup.agent.reconcile_once().await.unwrap();
    assert_eq!(condition(&status, "Degraded"), ("True", "ProfileConflict"));
    let message = &status
        .conditions
        .iter()
        .find(|c| c.type_ == "Applied")
        .unwrap()
        .message;
    assert!(
        message.contains("profiles a, b select this node"),
        "{message}"
    );
    assert_eq!(
        setup.fs.read_trimmed("proc/sys/vm/swappiness").unwrap(),
        "60"
    );
}

#[tokio::test]
async fn a_refused_profile_is_degraded_and_changes_nothing() {
    let mut too_big = profile("huge", 0);
    too_big.spec.hugepages[0].count = 60_000;
    let setup = setup(vec![too_big]).await;
    let status = setup.agent.reconcile_once().await.unwrap();
    assert_eq!(condition(&status, "Degraded"), ("True", "ProfileRefused"));
    assert_eq!(
        setup.fs.read_trimmed("proc/sys/vm/swappiness").unwrap(),
        "60"
    );
}

#[tokio::test]
async fn ksm_is_left_alone_when_kubevirt_manages_it() {
    let mut with_ksm = profile("ksm", 0);
    with_ksm.spec.ksm = Some(serde_yaml::from_str("{enabled: true}").unwrap());
    let setup = setup(vec![with_ksm]).await;
    let nodes = Api::<Node>::all(setup.client.clone());
    let annotate =
        json!({"metadata": {"annotations": {"kubevirt.io/ksm-handler-managed": "true"}}});
    nodes
        .patch(NODE, &PatchParams::default(), &Patch::Merge(&annotate))
        .await
        .unwrap();
    setup.agent.reconcile_once().await.unwrap();
    assert_eq!(setup.fs.read_trimmed("sys/kernel/mm/ksm/run").unwrap(), "0");
}

#[tokio::test]
async fn ksm_taken_over_by_kubevirt_is_forgotten_not_restored() {
    let mut with_ksm = profile("ksm", 0);
    with_ksm.spec.ksm = Some(serde_yaml::from_str("{enabled: true}").unwrap());
    let setup = setup(vec![with_ksm]).await;
    setup.agent.reconcile_once().await.unwrap();
    assert_eq!(setup.fs.read_trimmed("sys/kernel/mm/ksm/run").unwrap(), "1");
    let nodes = Api::<Node>::all(setup.client.clone());
    let annotate =
        json!({"metadata": {"annotations": {"kubevirt.io/ksm-handler-managed": "true"}}});
    nodes
        .patch(NODE, &PatchParams::default(), &Patch::Merge(&annotate))
        .await
        .unwrap();
    setup.agent.reconcile_once().await.unwrap();
    let unlabel = json!({"metadata": {"labels": {"fastvirt.io/vm-host": null}}});
    nodes
        .patch(NODE, &PatchParams::default(), &Patch::Merge(&unlabel))
        .await
        .unwrap();
    setup.agent.reconcile_once().await.unwrap();
    assert_eq!(
        setup.fs.read_trimmed("sys/kernel/mm/ksm/run").unwrap(),
        "1",
        "KSM stays as KubeVirt's handler has it"
    );
    assert_eq!(
        setup.fs.read_trimmed("proc/sys/vm/swappiness").unwrap(),
        "60",
        "everything else is restored"
    );
}

/// Stores a profile the types cannot read, as an API server keeps one stored before the CRD had
/// bounds.
async fn add_unreadable(client: &kube::Client, name: &str, selector: serde_json::Value) {
    use kube::api::{ApiResource, DynamicObject, PostParams};
    let resource = ApiResource::erase::<NodeTuningProfile>(&());
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "fastvirt.io/v1alpha1",
        "kind": "NodeTuningProfile",
        "metadata": {"name": name, "generation": 1},
        "spec": {"nodeSelector": selector, "priority": 3_000_000_000_u64},
    }))
    .unwrap();
    Api::<DynamicObject>::all_with(client.clone(), &resource)
        .create(&PostParams::default(), &object)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_profile_that_cannot_be_read_is_skipped_where_it_selects_nothing() {
    let setup = setup(vec![profile("vm-hosts", 0)]).await;
    add_unreadable(&setup.client, "typo", json!({"role": "elsewhere"})).await;
    assert!(
        Api::<NodeTuningProfile>::all(setup.client.clone())
            .list(&Default::default())
            .await
            .is_err(),
        "a typed list fails as a whole"
    );
    let status = setup.agent.reconcile_once().await.unwrap();
    assert_eq!(status.profile.as_deref(), Some("vm-hosts"));
    assert_eq!(condition(&status, "Applied"), ("True", "Applied"));
    assert_eq!(
        setup.fs.read_trimmed("proc/sys/vm/swappiness").unwrap(),
        "10"
    );
}

#[tokio::test]
async fn a_profile_that_cannot_be_read_but_may_select_the_node_holds_the_host() {
    let setup = setup(vec![profile("vm-hosts", 0)]).await;
    setup.agent.reconcile_once().await.unwrap();
    add_unreadable(
        &setup.client,
        "typo",
        json!({"fastvirt.io/vm-host": "true"}),
    )
    .await;
    let nodes = Api::<Node>::all(setup.client.clone());
    let unlabel = json!({"metadata": {"labels": {"fastvirt.io/vm-host": null}}});
    let held = setup.agent.reconcile_once().await.unwrap();
    assert_eq!(
        held.profile.as_deref(),
        Some("vm-hosts"),
        "still on the host"
    );
    assert_eq!(condition(&held, "Applied"), ("False", "UnreadableProfile"));
    assert_eq!(condition(&held, "Degraded"), ("True", "UnreadableProfile"));
    let message = &held.conditions[0].message;
    assert!(
        message.contains(
            "profile typo may select this node but cannot be read (spec.priority: invalid value: integer `3000000000`, expected i32)"
        ),
        "{message}"
    );
    assert_eq!(
        setup.fs.read_trimmed("proc/sys/vm/swappiness").unwrap(),
        "10",
        "neither restored nor changed"
    );
    // Once the node no longer matches its selector, the rest decide again.
    nodes
        .patch(NODE, &PatchParams::default(), &Patch::Merge(&unlabel))
        .await
        .unwrap();
    let released = setup.agent.reconcile_once().await.unwrap();
    assert_eq!(condition(&released, "Applied"), ("False", "NoProfile"));
    assert_eq!(
        setup.fs.read_trimmed("proc/sys/vm/swappiness").unwrap(),
        "60"
    );
}

#[tokio::test]
async fn the_node_carries_its_facts_as_labels_until_no_profile_selects_it() {
    let setup = setup(vec![profile("vm-hosts", 0)]).await;
    std::fs::create_dir_all(setup.fs.root().join("var/lib/kubelet")).unwrap();
    std::fs::write(
        setup.fs.root().join("var/lib/kubelet/cpu_manager_state"),
        r#"{"policyName":"static","defaultCpuSet":"0,16,32,48","checksum":1}"#,
    )
    .unwrap();
    let nodes = Api::<Node>::all(setup.client.clone());
    let fastvirt_labels = |node: &Node| -> BTreeMap<String, String> {
        node_labels::current(node.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()))
    };

    setup.agent.reconcile_once().await.unwrap();
    let node = nodes.get(NODE).await.unwrap();
    let labels = fastvirt_labels(&node);
    // The fixture may or may not model free pages; the label follows whatever it says.
    let free_2mi: u64 = setup
        .fs
        .read_trimmed("sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
        .and_then(|free| free.parse().ok())
        .unwrap_or(0);
    let mut expected = BTreeMap::from([
        (node_labels::PROFILE, "vm-hosts"),
        (node_labels::TUNED, "true"),
        (node_labels::ISOLATED_CPUS, "60"),
        (node_labels::CPU_MANAGER_POLICY, "static"),
        (node_labels::IRQ_ISOLATION, "true"),
    ]);
    let hugepages = node_labels::hugepages_label(2048);
    if free_2mi > 0 {
        expected.insert(&hugepages, "true");
    }
    let expected: BTreeMap<String, String> = expected
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(labels, expected);
    assert_eq!(
        node.metadata.labels.as_ref().unwrap()["fastvirt.io/vm-host"],
        "true",
        "the node's own labels stay"
    );
    let version = node.metadata.resource_version.clone();
    setup.agent.reconcile_once().await.unwrap();
    assert_eq!(
        nodes.get(NODE).await.unwrap().metadata.resource_version,
        version,
        "the same facts write nothing"
    );

    let unlabel = json!({"metadata": {"labels": {"fastvirt.io/vm-host": null}}});
    nodes
        .patch(NODE, &PatchParams::default(), &Patch::Merge(&unlabel))
        .await
        .unwrap();
    setup.agent.reconcile_once().await.unwrap();
    let node = nodes.get(NODE).await.unwrap();
    assert_eq!(fastvirt_labels(&node), BTreeMap::new(), "every label went");
}

fn condition_message(status: &TunedNodeStatus, type_: &str) -> String {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.message.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_kubelet_drop_in_is_written_and_reported_until_the_kubelet_runs_it() {
    let mut with_drop_in = profile("vm-hosts", 0);
    with_drop_in.spec.kubelet = Some(
        serde_yaml::from_str("{manageDropIn: true, topologyManagerPolicy: single-numa-node}")
            .unwrap(),
    );
    let setup = setup(vec![with_drop_in]).await;
    let root = setup.fs.root().to_owned();
    std::fs::create_dir_all(root.join("var/lib/kubelet")).unwrap();
    std::fs::write(
        root.join("var/lib/kubelet/cpu_manager_state"),
        r#"{"policyName":"none","defaultCpuSet":"","checksum":1}"#,
    )
    .unwrap();
    let drop_in = root.join("etc/kubernetes/kubelet.conf.d/90-fastvirt.conf");

    let status = setup.agent.reconcile_once().await.unwrap();
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&drop_in).unwrap()).unwrap();
    assert_eq!(written["cpuManagerPolicy"], "static");
    assert_eq!(written["reservedSystemCPUs"], "0,16,32,48");
    assert_eq!(written["topologyManagerPolicy"], "single-numa-node");
    assert_eq!(condition(&status, "KubeletRestartRequired").0, "True");
    let message = condition_message(&status, "KubeletRestartRequired");
    assert!(message.contains("runs cpuManagerPolicy none"), "{message}");
    assert!(
        message.contains("/var/lib/kubelet/cpu_manager_state records policy none"),
        "what a restart would break: {message}"
    );

    // A re-check rewrites nothing (a rewrite would be a new inode, and newer than the kubelet).
    let inode = |path: &std::path::Path| {
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(path).unwrap())
    };
    let first = inode(&drop_in);
    setup.agent.reconcile_once().await.unwrap();
    assert_eq!(inode(&drop_in), first, "the drop-in is not written again");

    // The kubelet restarted after the file was written, with the state file removed first: it
    // now runs the static policy.
    // Started 5 s from now on the boot-time clock, which is how the kernel counts it.
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .unwrap()
        .unwrap() as u64;
    let since_boot = std::time::Duration::from(
        nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).unwrap(),
    );
    let start_ticks = (since_boot.as_secs() + 5) * ticks;
    std::fs::create_dir_all(root.join("proc/4242")).unwrap();
    std::fs::write(root.join("proc/4242/comm"), "kubelet\n").unwrap();
    std::fs::write(
        root.join("proc/4242/stat"),
        format!("4242 (kubelet) S 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 10 0 {start_ticks} 0 0\n"),
    )
    .unwrap();
    std::fs::write(
        root.join("var/lib/kubelet/cpu_manager_state"),
        r#"{"policyName":"static","defaultCpuSet":"0,16,32,48","checksum":2}"#,
    )
    .unwrap();
    let status = setup.agent.reconcile_once().await.unwrap();
    let message = condition_message(&status, "KubeletRestartRequired");
    assert!(
        !message.contains("cpuManagerPolicy") && !message.contains("90-fastvirt.conf"),
        "the kubelet runs the drop-in: {message}"
    );

    let nodes = Api::<Node>::all(setup.client.clone());
    let unlabel = json!({"metadata": {"labels": {"fastvirt.io/vm-host": null}}});
    nodes
        .patch(NODE, &PatchParams::default(), &Patch::Merge(&unlabel))
        .await
        .unwrap();
    setup.agent.reconcile_once().await.unwrap();
    assert!(
        !drop_in.exists(),
        "the restore removes the drop-in it created"
    );
}
