//! One reconcile against a real cluster from KUBECONFIG (or in-cluster), on a fixture host tree so
//! the machine running the test is never tuned. Needs the fastvirt CRDs installed and a node name
//! in NODE_NAME: `NODE_NAME=node-a cargo test -p fastvirt-agent --test live_cluster -- --ignored`.

use fastvirt_agent::fixture::{self, FixtureFs, FixtureSpec};
use fastvirt_agent::metrics::Metrics;
use fastvirt_agent::reconcile::{Agent, AgentConfig};
use fastvirt_api::TunedNode;
use kube::Api;
use std::sync::Arc;

#[tokio::test]
#[ignore = "needs a cluster with the fastvirt CRDs (KUBECONFIG) and NODE_NAME"]
async fn reconcile_against_a_live_cluster_writes_the_tuned_node() {
    let node_name = std::env::var("NODE_NAME").expect("NODE_NAME names a node of the cluster");
    let client = kube::Client::try_default()
        .await
        .expect("KUBECONFIG or in-cluster config");
    let dir = tempfile::tempdir().unwrap();
    fixture::write_host(dir.path(), &FixtureSpec::two_socket_64_cpus()).unwrap();
    let fs = Arc::new(FixtureFs::open(dir.path()).unwrap());
    let config = AgentConfig {
        node_name: node_name.clone(),
        max_hugepage_percent: 80,
    };
    let agent = Agent::new(client.clone(), config, fs, Arc::new(Metrics::default()));
    let status = agent.reconcile_once().await.expect("reconcile");
    let stored = Api::<TunedNode>::all(client)
        .get(&node_name)
        .await
        .expect("TunedNode exists");
    assert_eq!(stored.spec.node_name, node_name);
    assert_eq!(
        stored.status.map(|s| s.conditions.len()),
        Some(status.conditions.len())
    );
}
