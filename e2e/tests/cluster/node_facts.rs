//! The agent's `node.fastvirt.io/` labels on the kubelet's Node, and the ValidatingAdmissionPolicy
//! that lets the agent's ServiceAccount change nothing else.

use super::wait;
use fastvirt_agent::node_labels;
use fastvirt_e2e::cluster::kubectl::Kubectl;
use fastvirt_e2e::cluster::{self, State};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn fastvirt_labels(kubectl: &Kubectl, node: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let node = kubectl.get_json(&["node", node])?;
    let labels: BTreeMap<String, String> =
        serde_json::from_value(node["metadata"]["labels"].clone()).unwrap_or_default();
    Ok(node_labels::current(&labels))
}

/// While `profile` (2 MiB hugepages, no isolated CPUs) is applied: the facts the labels give.
pub fn labels_show_the_applied_profile(kubectl: &Kubectl, state: &State, profile: &str) {
    let expected = BTreeMap::from([
        (node_labels::PROFILE.to_owned(), profile.to_owned()),
        (node_labels::TUNED.to_owned(), "true".to_owned()),
        (node_labels::hugepages_label(2048), "true".to_owned()),
        // The test kubelet runs the default CPU manager policy and records it in its state file.
        (
            node_labels::CPU_MANAGER_POLICY.to_owned(),
            "none".to_owned(),
        ),
    ]);
    let labels = wait(kubectl, "the node's fastvirt labels", 120, || {
        let labels = fastvirt_labels(kubectl, &state.node_name)?;
        Ok((labels == expected).then_some(labels))
    });
    eprintln!("node labels: {labels:?}");
}

/// Once no profile applies, every label is gone.
pub fn labels_are_gone(kubectl: &Kubectl, state: &State) {
    wait(kubectl, "the node's fastvirt labels gone", 120, || {
        Ok(fastvirt_labels(kubectl, &state.node_name)?
            .is_empty()
            .then_some(()))
    });
}

/// A kubeconfig for the agent's ServiceAccount with a token bound to the agent's pod, as the pod
/// itself gets: the API server puts the pod's node into its user info.
fn agent_kubeconfig(kubectl: &Kubectl, state: &State) -> (String, PathBuf) {
    let pods = kubectl
        .get_json(&[
            "pods",
            "-n",
            cluster::NAMESPACE,
            "-l",
            "app.kubernetes.io/component=agent",
        ])
        .expect("the agent pod");
    let pod = &pods["items"][0];
    let account = pod["spec"]["serviceAccountName"]
        .as_str()
        .expect("the agent's ServiceAccount")
        .to_owned();
    let token = kubectl
        .run(&[
            "create",
            "token",
            &account,
            "-n",
            cluster::NAMESPACE,
            "--bound-object-kind=Pod",
            &format!(
                "--bound-object-name={}",
                pod["metadata"]["name"].as_str().unwrap()
            ),
            &format!(
                "--bound-object-uid={}",
                pod["metadata"]["uid"].as_str().unwrap()
            ),
            "--duration=10m",
        ])
        .expect("a token bound to the agent pod");
    let admin = std::fs::read_to_string(&kubectl.kubeconfig).expect("the admin kubeconfig");
    let mut config: serde_yaml::Value = serde_yaml::from_str(&admin).unwrap();
    config["users"][0]["user"] =
        serde_yaml::to_value(BTreeMap::from([("token", token.trim())])).unwrap();
    let path = state.workdir.join("agent.kubeconfig");
    std::fs::write(&path, serde_yaml::to_string(&config).unwrap()).unwrap();
    (
        format!("system:serviceaccount:{}:{account}", cluster::NAMESPACE),
        path,
    )
}

/// The agent's ServiceAccount, with a token bound to its pod, may change only `node.fastvirt.io/`
/// labels, and only on the Node its pod runs on; impersonated without that binding, nothing.
pub fn the_agent_may_change_only_its_own_labels(kubectl: &Kubectl, state: &State) {
    let (user, kubeconfig) = agent_kubeconfig(kubectl, state);
    let agent = Kubectl::new(&kubectl.bin_dir, &kubeconfig);
    let node = state.node_name.as_str();
    let label = |kubectl: &Kubectl, extra: &[&str], on: &str, label: &str| {
        let mut args: Vec<&str> = extra.to_vec();
        args.extend(["label", "node", on, label, "--overwrite"]);
        kubectl.run(&args)
    };
    let denied = |result: anyhow::Result<String>, message: &str| {
        let error = format!("{:#}", result.expect_err("the policy refuses"));
        assert!(error.contains(message), "{error}");
    };
    label(&agent, &[], node, "node.fastvirt.io/policy-test=yes")
        .expect("its own label on its node");
    label(&agent, &[], node, "node.fastvirt.io/policy-test-").expect("and removed again");
    denied(
        label(&agent, &[], node, "fastvirt.io/vm-host=false"),
        "may change only node.fastvirt.io/ labels",
    );
    // The kubelet-less nodes of the cluster (`--nodes 3`).
    let other = format!("{}2", node.trim_end_matches(char::is_numeric));
    denied(
        label(&agent, &[], &other, "node.fastvirt.io/policy-test=yes"),
        "only the Node its pod runs on",
    );
    let impersonated = format!("--as={user}");
    denied(
        label(
            kubectl,
            &[&impersonated],
            node,
            "node.fastvirt.io/policy-test=yes",
        ),
        "only the Node its pod runs on",
    );
    let _ = std::fs::remove_file(kubeconfig);
}
