//! The BlockPool reconciler against an in-memory API server (kube-fake-client): what appears,
//! what is replaced, what is cleaned up, and what the status says.

mod support;

use fastvirt_api::BlockPool;
use fastvirt_api::pool_config::PoolConfigFile;
use fastvirt_operator::foreign::{StorageProfile, VolumeSnapshotClass};
use fastvirt_operator::pool_controller::{FINALIZER, PoolError, reconcile};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use std::sync::Arc;
use support::*;

async fn reconcile_named(ctx: &Arc<fastvirt_operator::context::Context>, name: &str) {
    let pool = Api::<BlockPool>::all(ctx.client.clone())
        .get(name)
        .await
        .unwrap();
    reconcile(Arc::new(pool), ctx.clone()).await.unwrap();
}

/// Merges `patch` into the pool, as `kubectl patch --type merge` would, then reconciles it.
async fn change_pool(
    ctx: &Arc<fastvirt_operator::context::Context>,
    name: &str,
    patch: serde_json::Value,
) {
    Api::<BlockPool>::all(ctx.client.clone())
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    reconcile_named(ctx, name).await;
}

/// The cluster-scoped object `name` of kind `K`, if it exists.
async fn find<K>(ctx: &fastvirt_operator::context::Context, name: &str) -> Option<K>
where
    K: kube::Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::all(ctx.client.clone())
        .get_opt(name)
        .await
        .unwrap()
}

fn pool_config(config_map: &ConfigMap) -> PoolConfigFile {
    serde_yaml::from_str(&config_map.data.as_ref().unwrap()["pools.yaml"]).unwrap()
}

#[tokio::test]
async fn a_new_pool_gets_its_classes_profile_config_and_status() {
    let ctx = context(
        vec![
            object(pool_yaml("fast", "/var/lib/fastvirt/pools/fast", "")),
            object(node("worker-1", &[("disk", "nvme")])),
            object(node("worker-2", &[])),
            object(daemonset()),
            object(capacity("fast", "worker-1", "100Gi")),
            object(capacity("fast", "worker-2", "28Gi")),
            cdi_profile("fast"),
        ],
        true,
        true,
    )
    .await;
    reconcile_named(&ctx, "fast").await;

    let class = find::<StorageClass>(&ctx, "fast").await.unwrap();
    assert_eq!(class.provisioner, "block.fastvirt.io");
    assert_eq!(class.parameters.as_ref().unwrap()["pool"], "fast");
    assert_eq!(
        class.volume_binding_mode.as_deref(),
        Some("WaitForFirstConsumer")
    );
    assert_eq!(class.owner_references()[0].name, "fast");

    let snapshot = find::<VolumeSnapshotClass>(&ctx, "fast").await.unwrap();
    assert_eq!(snapshot.driver, "block.fastvirt.io");
    assert_eq!(snapshot.deletion_policy, "Delete");

    let profile = find::<StorageProfile>(&ctx, "fast").await.unwrap();
    assert_eq!(profile.spec.clone_strategy.as_deref(), Some("csi-clone"));
    assert_eq!(profile.spec.claim_property_sets[0].volume_mode, "Block");
    // Golden images as snapshots of the pool's own class, restored by reflink.
    assert_eq!(profile.spec.snapshot_class.as_deref(), Some("fast"));
    assert_eq!(
        profile.spec.data_import_cron_source_format.as_deref(),
        Some("snapshot")
    );

    let config = Api::<ConfigMap>::namespaced(ctx.client.clone(), NAMESPACE)
        .get("fastvirt-pools")
        .await
        .unwrap();
    let file = pool_config(&config);
    assert_eq!(file.pools.len(), 1);
    assert_eq!(file.pools[0].path, "/var/lib/fastvirt/pools/fast");
    assert_eq!(
        file.pools[0].nodes, None,
        "an empty selector means every node"
    );

    let pool = Api::<BlockPool>::all(ctx.client.clone())
        .get("fast")
        .await
        .unwrap();
    assert!(pool.finalizers().contains(&FINALIZER.to_owned()));
    let status = pool.status.unwrap();
    assert_eq!(status.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(status.matched_nodes, 2);
    assert_eq!(status.capacity_bytes, Some(128 << 30));
    // The seeded generation; kube-fake-client also counts the finalizer patch as a new
    // generation, which a real API server does not.
    assert_eq!(status.observed_generation, Some(1));
    let ready = condition(&status.conditions, "Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "StorageClassReady")
    );
    assert!(ready.last_transition_time.is_some());

    let reasons = event_reasons(&ctx).await;
    assert!(
        reasons.contains(&"StorageClassCreated".to_owned()),
        "{reasons:?}"
    );

    // The same request twice changes nothing: no new event, same hash, same status.
    reconcile_named(&ctx, "fast").await;
    assert_eq!(event_reasons(&ctx).await, reasons);
}

#[tokio::test]
async fn a_changed_parameter_replaces_the_class_and_says_so() {
    let ctx = context(
        vec![
            object(pool_yaml("fast", "/p", "")),
            object(node("worker-1", &[])),
        ],
        false,
        false,
    )
    .await;
    reconcile_named(&ctx, "fast").await;
    change_pool(&ctx, "fast", serde_json::json!({"spec": {"storageClass": {"reclaimPolicy": "Retain", "allowVolumeExpansion": false}}})).await;
    let class = find::<StorageClass>(&ctx, "fast").await.unwrap();
    assert_eq!(class.reclaim_policy.as_deref(), Some("Retain"));
    assert_eq!(class.allow_volume_expansion, Some(false));
    assert!(
        event_reasons(&ctx)
            .await
            .contains(&"StorageClassReplaced".to_owned())
    );

    // Only a mutable field changes: applied in place, no replacement.
    let before = event_reasons(&ctx).await.len();
    change_pool(
        &ctx,
        "fast",
        serde_json::json!({"spec": {"storageClass": {"allowVolumeExpansion": true}}}),
    )
    .await;
    let class = find::<StorageClass>(&ctx, "fast").await.unwrap();
    assert_eq!(class.allow_volume_expansion, Some(true));
    assert_eq!(event_reasons(&ctx).await.len(), before);
}

#[tokio::test]
async fn renaming_the_class_removes_the_old_one() {
    let ctx = context(vec![object(pool_yaml("fast", "/p", ""))], false, false).await;
    reconcile_named(&ctx, "fast").await;
    change_pool(
        &ctx,
        "fast",
        serde_json::json!({"spec": {"storageClass": {"name": "vm-disks"}}}),
    )
    .await;
    let classes = Api::<StorageClass>::all(ctx.client.clone());
    assert!(classes.get_opt("vm-disks").await.unwrap().is_some());
    assert!(classes.get_opt("fast").await.unwrap().is_none());
}

#[tokio::test]
async fn a_class_of_someone_else_is_never_taken_over() {
    let foreign: StorageClass = serde_yaml::from_str(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: fast}\nprovisioner: other.example.com\n",
    )
    .unwrap();
    let ctx = context(
        vec![object(pool_yaml("fast", "/p", "")), object(foreign)],
        false,
        false,
    )
    .await;
    let pool = Api::<BlockPool>::all(ctx.client.clone())
        .get("fast")
        .await
        .unwrap();
    let error = reconcile(Arc::new(pool), ctx.clone()).await.unwrap_err();
    assert!(matches!(error, PoolError::ForeignStorageClass(ref n) if n == "fast"));
    let class = find::<StorageClass>(&ctx, "fast").await.unwrap();
    assert_eq!(class.provisioner, "other.example.com");
    assert!(
        event_reasons(&ctx)
            .await
            .contains(&"StorageClassConflict".to_owned())
    );
}

#[tokio::test]
async fn an_invalid_spec_is_reported_not_applied() {
    let ctx = context(
        vec![object(pool_yaml(
            "fast",
            "/p",
            "storageClass: {parameters: {pool: other}}",
        ))],
        false,
        false,
    )
    .await;
    reconcile_named(&ctx, "fast").await;
    assert!(find::<StorageClass>(&ctx, "fast").await.is_none());
    let status = Api::<BlockPool>::all(ctx.client.clone())
        .get("fast")
        .await
        .unwrap()
        .status
        .unwrap();
    let ready = condition(&status.conditions, "Ready");
    assert_eq!(ready.reason, "InvalidSpec");
    assert!(
        ready.message.contains("storageClass.parameters.pool"),
        "{}",
        ready.message
    );
}

#[tokio::test]
async fn without_the_snapshot_api_the_pool_says_what_is_missing() {
    let ctx = context(vec![object(pool_yaml("fast", "/p", ""))], false, false).await;
    reconcile_named(&ctx, "fast").await;
    let status = Api::<BlockPool>::all(ctx.client.clone())
        .get("fast")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(condition(&status.conditions, "Ready").status, "True");
    assert_eq!(
        condition(&status.conditions, "SnapshotClassReady").reason,
        "SnapshotApiMissing"
    );
}

#[tokio::test]
async fn node_selectors_become_node_lists_in_the_pool_config() {
    let ctx = context(
        vec![
            object(pool_yaml("nvme", "/nvme", "nodeSelector: {disk: nvme}")),
            object(pool_yaml("any", "/any", "")),
            object(node("worker-1", &[("disk", "nvme")])),
            object(node("worker-2", &[("disk", "sata")])),
            object(node("worker-3", &[("disk", "nvme")])),
        ],
        false,
        false,
    )
    .await;
    reconcile_named(&ctx, "nvme").await;
    let config = Api::<ConfigMap>::namespaced(ctx.client.clone(), NAMESPACE)
        .get("fastvirt-pools")
        .await
        .unwrap();
    let file = pool_config(&config);
    let nvme = file.pools.iter().find(|p| p.name == "nvme").unwrap();
    assert_eq!(
        nvme.nodes,
        Some(vec!["worker-1".to_owned(), "worker-3".to_owned()])
    );
    assert_eq!(
        file.pools.iter().find(|p| p.name == "any").unwrap().nodes,
        None
    );
    let status = Api::<BlockPool>::all(ctx.client.clone())
        .get("nvme")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(status.matched_nodes, 2);
}

#[tokio::test]
async fn deletion_waits_for_the_volumes_then_cleans_up() {
    let volume: PersistentVolume = serde_yaml::from_str(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: pvc-1}\nspec:\n  capacity: {storage: 1Gi}\n  accessModes: [ReadWriteOnce]\n  csi: {driver: block.fastvirt.io, volumeHandle: fv.fast.0123456789abcdef0123456789abcdef}\n",
    )
    .unwrap();
    let ctx = context(
        vec![
            object(pool_yaml("fast", "/fast", "")),
            object(pool_yaml("other", "/other", "")),
            object(volume),
            object(daemonset()),
        ],
        true,
        false,
    )
    .await;
    reconcile_named(&ctx, "fast").await;
    reconcile_named(&ctx, "other").await;
    let config = |ctx: Arc<fastvirt_operator::context::Context>| async move {
        pool_config(
            &Api::<ConfigMap>::namespaced(ctx.client.clone(), NAMESPACE)
                .get("fastvirt-pools")
                .await
                .unwrap(),
        )
    };
    assert_eq!(config(ctx.clone()).await.pools.len(), 2);

    // kube-fake-client deletes at once even with finalizers, so start a server in the state a
    // real one reaches on `kubectl delete blockpool fast`: everything as it was, the pool marked.
    let ctx = reseed_with_deletion(&ctx, "fast").await;
    let pools = Api::<BlockPool>::all(ctx.client.clone());
    let deleting = pools.get("fast").await.unwrap();
    assert!(deleting.metadata.deletion_timestamp.is_some());
    reconcile(Arc::new(deleting.clone()), ctx.clone())
        .await
        .unwrap();
    assert!(
        find::<StorageClass>(&ctx, "fast").await.is_none(),
        "no new volumes once deletion starts"
    );
    assert!(find::<VolumeSnapshotClass>(&ctx, "fast").await.is_none());
    assert_eq!(
        config(ctx.clone()).await.pools.len(),
        2,
        "the node plugins still serve pvc-1"
    );
    let held = pools.get("fast").await.unwrap();
    assert!(held.finalizers().contains(&FINALIZER.to_owned()));
    let ready = condition(&held.status.unwrap().conditions, "Ready").clone();
    assert_eq!(ready.reason, "VolumesRemain");
    assert!(ready.message.contains("pvc-1"));
    assert!(
        event_reasons(&ctx)
            .await
            .contains(&"VolumesRemain".to_owned())
    );

    Api::<PersistentVolume>::all(ctx.client.clone())
        .delete("pvc-1", &DeleteParams::default())
        .await
        .unwrap();
    let deleting = pools.get("fast").await.unwrap();
    reconcile(Arc::new(deleting), ctx.clone()).await.unwrap();
    let names: Vec<String> = config(ctx.clone())
        .await
        .pools
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["other"]);
    let left = pools.get_opt("fast").await.unwrap();
    assert!(
        left.is_none_or(|p| !p.finalizers().contains(&FINALIZER.to_owned())),
        "the finalizer is released"
    );
    assert!(event_reasons(&ctx).await.contains(&"Deleted".to_owned()));
}

#[tokio::test]
async fn the_node_plugins_roll_only_when_the_pool_config_changes() {
    let ctx = context(
        vec![object(pool_yaml("fast", "/fast", "")), object(daemonset())],
        false,
        false,
    )
    .await;
    let daemonsets = Api::<DaemonSet>::namespaced(ctx.client.clone(), NAMESPACE);
    reconcile_named(&ctx, "fast").await;
    let first = daemonsets.get("fastvirt-node").await.unwrap();
    reconcile_named(&ctx, "fast").await;
    let second = daemonsets.get("fastvirt-node").await.unwrap();
    assert_eq!(
        first.metadata.resource_version, second.metadata.resource_version,
        "an unchanged config must not restart the node plugins"
    );
    Api::<BlockPool>::all(ctx.client.clone())
        .create(&PostParams::default(), &pool_yaml("more", "/more", ""))
        .await
        .unwrap();
    reconcile_named(&ctx, "more").await;
    let third = daemonsets.get("fastvirt-node").await.unwrap();
    assert_eq!(
        first.metadata.resource_version, third.metadata.resource_version,
        "a new pool restarts no node plugin: they follow the pool file"
    );
    let file = pool_config(
        &Api::<ConfigMap>::namespaced(ctx.client.clone(), NAMESPACE)
            .get("fastvirt-pools")
            .await
            .unwrap(),
    );
    assert!(file.pools.iter().any(|p| p.name == "more"), "{file:?}");
}

#[tokio::test]
async fn a_pool_on_an_older_pools_directory_is_refused_and_not_served() {
    let mut older = object(pool_yaml("older", "/pools/nvme", ""));
    older["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z".into();
    let mut newer = object(pool_yaml("newer", "/pools/nvme/", ""));
    newer["metadata"]["creationTimestamp"] = "2026-02-01T00:00:00Z".into();
    let ctx = context(vec![newer, older], false, false).await;
    reconcile_named(&ctx, "newer").await;
    reconcile_named(&ctx, "older").await;

    assert!(find::<StorageClass>(&ctx, "newer").await.is_none());
    assert!(find::<StorageClass>(&ctx, "older").await.is_some());
    let config = Api::<ConfigMap>::namespaced(ctx.client.clone(), NAMESPACE)
        .get("fastvirt-pools")
        .await
        .unwrap();
    let served: Vec<String> = pool_config(&config)
        .pools
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(served, ["older"]);
    let status = Api::<BlockPool>::all(ctx.client.clone())
        .get("newer")
        .await
        .unwrap()
        .status
        .unwrap();
    let ready = condition(&status.conditions, "Ready");
    assert_eq!(ready.reason, "PathConflict");
    assert!(ready.message.contains("older"), "{}", ready.message);
    assert!(
        event_reasons(&ctx)
            .await
            .contains(&"PathConflict".to_owned())
    );
}

#[tokio::test]
async fn a_node_short_of_space_sets_low_space_and_one_event() {
    let ctx = context(
        vec![
            object(pool_yaml(
                "fast",
                "/var/lib/fastvirt/pools/fast",
                "lowSpaceThreshold: 30Gi",
            )),
            object(node("worker-1", &[])),
            object(node("worker-2", &[])),
            object(daemonset()),
            object(capacity("fast", "worker-1", "100Gi")),
            object(capacity("fast", "worker-2", "28Gi")),
        ],
        false,
        false,
    )
    .await;
    reconcile_named(&ctx, "fast").await;
    reconcile_named(&ctx, "fast").await;
    let pool = Api::<BlockPool>::all(ctx.client.clone())
        .get("fast")
        .await
        .unwrap();
    let status = pool.status.unwrap();
    let low = condition(&status.conditions, "LowSpace");
    assert_eq!(
        (low.status.as_str(), low.reason.as_str()),
        ("True", "LowSpace")
    );
    assert!(
        low.message.contains("worker-2 (28672 MiB)"),
        "{}",
        low.message
    );
    assert!(!low.message.contains("worker-1"), "{}", low.message);
    assert_eq!(
        condition(&status.conditions, "Ready").status,
        "True",
        "low on space is a warning, the pool still serves"
    );
    let reasons = event_reasons(&ctx).await;
    assert_eq!(
        reasons.iter().filter(|r| *r == "LowSpace").count(),
        1,
        "one Event when it starts, not one per reconcile: {reasons:?}"
    );
}

#[tokio::test]
async fn without_snapshots_cdi_keeps_golden_images_as_pvcs() {
    let ctx = context(
        vec![
            object(pool_yaml("fast", "/var/lib/fastvirt/pools/fast", "")),
            object(daemonset()),
            cdi_profile("fast"),
        ],
        false,
        true,
    )
    .await;
    reconcile_named(&ctx, "fast").await;
    let profile = find::<StorageProfile>(&ctx, "fast").await.unwrap();
    assert_eq!(profile.spec.snapshot_class, None);
    assert_eq!(
        profile.spec.data_import_cron_source_format.as_deref(),
        Some("pvc")
    );
}

/// CDI makes and owns StorageProfiles: before it has made the class's, the pool is reconciled
/// as usual and no profile is made (a real API server refuses the operator that create).
#[tokio::test]
async fn a_profile_cdi_has_not_made_yet_is_left_to_cdi() {
    let ctx = context(
        vec![
            object(pool_yaml("fast", "/var/lib/fastvirt/pools/fast", "")),
            object(daemonset()),
        ],
        true,
        true,
    )
    .await;
    reconcile_named(&ctx, "fast").await;
    assert!(find::<StorageClass>(&ctx, "fast").await.is_some());
    assert!(find::<StorageProfile>(&ctx, "fast").await.is_none());
}
