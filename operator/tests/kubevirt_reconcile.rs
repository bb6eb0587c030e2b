//! The KubeVirt objects against kube-fake-client: a profile's instancetype family is applied and
//! the sizes it no longer has are deleted, nothing is written where the API is not served, a pool
//! gets its preference, and the TuningSummary is written with what the nodes offer.

mod support;

use fastvirt_api::{NodeTuningProfile, TuningSummary};
use fastvirt_operator::kubevirt::types::{ClusterInstancetype, ClusterPreference};
use fastvirt_operator::kubevirt::{self, apply_instancetypes, apply_preference};
use kube::Api;
use kube::api::ListParams;
use serde_json::json;
use std::sync::Arc;
use support::*;

fn profile() -> serde_json::Value {
    json!({
        "apiVersion": "fastvirt.io/v1alpha1",
        "kind": "NodeTuningProfile",
        "metadata": {"name": "vm", "uid": "uid-vm", "generation": 1},
        "spec": {"cpu": {"reserved": "0", "isolated": "1-3"}},
        "status": {},
    })
}

fn stale_size() -> serde_json::Value {
    json!({
        "apiVersion": "instancetype.kubevirt.io/v1beta1",
        "kind": "VirtualMachineClusterInstancetype",
        "metadata": {"name": "fastvirt.vm.huge", "labels": {"fastvirt.io/profile": "vm"}},
        "spec": {"cpu": {"guest": 64}, "memory": {"guest": "128Gi"}},
    })
}

fn tuned_node() -> k8s_openapi::api::core::v1::Node {
    node(
        "worker-1",
        &[
            ("node.fastvirt.io/profile", "vm"),
            ("node.fastvirt.io/tuned", "true"),
            ("node.fastvirt.io/isolated-cpus", "3"),
            ("node.fastvirt.io/cpu-manager-policy", "static"),
        ],
    )
}

async fn names(ctx: &Arc<fastvirt_operator::context::Context>) -> Vec<String> {
    let mut names: Vec<String> = Api::<ClusterInstancetype>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|t| t.metadata.name)
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn the_family_is_applied_and_sizes_it_no_longer_has_go() {
    let ctx = context_with_kubevirt(
        vec![profile(), stale_size(), object(tuned_node())],
        false,
        false,
    )
    .await;
    let profile: NodeTuningProfile = Api::all(ctx.client.clone()).get("vm").await.unwrap();
    let nodes = ctx.nodes().await.unwrap();
    apply_instancetypes(&profile, &nodes, &ctx).await.unwrap();
    assert_eq!(
        names(&ctx).await,
        [
            "fastvirt.vm.2xlarge",
            "fastvirt.vm.4xlarge",
            "fastvirt.vm.8xlarge",
            "fastvirt.vm.large",
            "fastvirt.vm.medium",
            "fastvirt.vm.xlarge"
        ]
    );
    let medium = Api::<ClusterInstancetype>::all(ctx.client.clone())
        .get("fastvirt.vm.medium")
        .await
        .unwrap();
    assert!(medium.spec.cpu.dedicated_cpu_placement);
    assert_eq!(
        medium.metadata.owner_references.unwrap()[0].uid,
        "uid-vm",
        "owned by the profile"
    );
    // Applying again changes nothing.
    apply_instancetypes(&profile, &nodes, &ctx).await.unwrap();
    assert_eq!(names(&ctx).await.len(), 6);

    // An unchanged family is not written again on every reconcile: a deleted size comes back
    // once its watch event makes the operator forget what it wrote.
    Api::<ClusterInstancetype>::all(ctx.client.clone())
        .delete("fastvirt.vm.large", &Default::default())
        .await
        .unwrap();
    apply_instancetypes(&profile, &nodes, &ctx).await.unwrap();
    assert_eq!(names(&ctx).await.len(), 5, "skipped: nothing to write");
    ctx.applied_families.forget("vm");
    apply_instancetypes(&profile, &nodes, &ctx).await.unwrap();
    assert_eq!(names(&ctx).await.len(), 6, "written again");

    // Turned off: the family goes.
    let mut off = profile.clone();
    off.spec.kubevirt.instancetypes = false;
    apply_instancetypes(&off, &nodes, &ctx).await.unwrap();
    assert!(names(&ctx).await.is_empty());
}

#[tokio::test]
async fn nothing_is_written_where_kubevirt_is_not_served() {
    let ctx = context(vec![profile(), object(tuned_node())], false, false).await;
    let profile: NodeTuningProfile = Api::all(ctx.client.clone()).get("vm").await.unwrap();
    apply_instancetypes(&profile, &ctx.nodes().await.unwrap(), &ctx)
        .await
        .unwrap();
    let pool = pool_yaml("local", "/var/lib/fastvirt/local", "");
    apply_preference(&pool, &ctx).await.unwrap();
    // The fake server knows the kinds, so an empty list means nothing was written.
    assert!(names(&ctx).await.is_empty());
    let preferences = Api::<ClusterPreference>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(preferences.items.is_empty());
}

#[tokio::test]
async fn a_pool_gets_its_preference() {
    let ctx = context_with_kubevirt(vec![], false, false).await;
    let pool = pool_yaml("local", "/var/lib/fastvirt/local", "");
    apply_preference(&pool, &ctx).await.unwrap();
    let preference = Api::<ClusterPreference>::all(ctx.client.clone())
        .get("fastvirt.local")
        .await
        .unwrap();
    assert_eq!(preference.spec.devices.preferred_disk_io, "native");
    assert_eq!(
        preference
            .spec
            .volumes
            .unwrap()
            .preferred_storage_class_name,
        "local"
    );
}

#[tokio::test]
async fn the_summary_says_what_the_nodes_offer() {
    let ctx = context_with_kubevirt(vec![profile(), object(tuned_node())], false, false).await;
    let desired = kubevirt::desired_summary(&ctx).await.unwrap();
    kubevirt::publish_summary(&ctx, desired.clone())
        .await
        .unwrap();
    let summary = Api::<TuningSummary>::all(ctx.client.clone())
        .get("cluster")
        .await
        .unwrap();
    let status = summary.status.expect("the summary lives in the status");
    assert_eq!(status, desired);
    assert_eq!(status.nodes.len(), 1);
    assert_eq!(status.nodes[0].dedicated_cpus, 3);
    let medium = status
        .instancetypes
        .iter()
        .find(|t| t.name == "fastvirt.vm.medium")
        .unwrap();
    assert_eq!(
        medium.nodes,
        ["worker-1"],
        "3 host CPUs fit 3 isolated ones"
    );
    let large = status
        .instancetypes
        .iter()
        .find(|t| t.name == "fastvirt.vm.large")
        .unwrap();
    assert!(large.nodes.is_empty(), "4 host CPUs do not");
}
