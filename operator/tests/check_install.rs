//! `check-install`, the Helm test hook, against kube-fake-client.

mod support;

use fastvirt_operator::check_install::{CheckError, check_install};
use serde_json::json;
use support::*;

fn csi_node(name: &str, drivers: &[&str]) -> serde_json::Value {
    json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "CSINode",
        "metadata": {"name": name},
        "spec": {"drivers": drivers.iter().map(|d| json!({"name": d, "nodeID": name})).collect::<Vec<_>>()},
    })
}

#[tokio::test]
async fn passes_when_a_node_registered_the_driver() {
    let ctx = context(
        vec![
            csi_node("worker-1", &["other.example.com"]),
            csi_node("worker-2", &["block.fastvirt.io"]),
        ],
        false,
        false,
    )
    .await;
    let passed = check_install(&ctx.client, "block.fastvirt.io")
        .await
        .unwrap();
    assert_eq!(passed.len(), 4, "{passed:?}");
    assert!(
        passed[3].contains("registered on 1 of 2 nodes"),
        "{passed:?}"
    );
}

#[tokio::test]
async fn fails_when_no_node_registered_it() {
    let ctx = context(
        vec![csi_node("worker-1", &["other.example.com"])],
        false,
        false,
    )
    .await;
    match check_install(&ctx.client, "block.fastvirt.io").await {
        Err(CheckError::NotRegistered { nodes: 1, .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn fails_when_a_crd_is_not_served() {
    // No custom resources registered: the server answers 404 for fastvirt.io.
    let client = kube_fake_client::ClientBuilder::new()
        .build()
        .await
        .unwrap();
    match check_install(&client, "block.fastvirt.io").await {
        Err(CheckError::NotServed { resource, .. }) => {
            assert_eq!(resource, "blockpools.fastvirt.io")
        }
        other => panic!("{other:?}"),
    }
}
