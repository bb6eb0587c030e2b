//! Reconciles a BlockPool: read → validate and build (pure, in `storage_class` and
//! `pool_objects`) → server-side apply → status. Deletion waits until no volume of the pool is
//! left, because the node plugins need the pool's configuration to serve those volumes.

use crate::apply::{apply, apply_params, remove_labelled_except};
use crate::context::Context;
use crate::foreign::{StorageProfile, VolumeSnapshotClass};
use crate::pool_objects::{POOL_LABEL, class_name, snapshot_class, storage_profile};
use crate::{capacity, low_space, pool_config, storage_class};
use fastvirt_api::condition::carry_transition_times;
use fastvirt_api::{BlockPool, BlockPoolStatus, Condition};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

/// Keeps a pool until its volumes are gone and its configuration is withdrawn.
pub const FINALIZER: &str = "fastvirt.io/pool-protection";
const CONTROLLER: &str = "blockpool";
/// Capacity and node counts change without events on the pool; look again this often.
const RESYNC: Duration = Duration::from_secs(300);
const WAIT_FOR_VOLUMES: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("StorageClass {0} exists and does not belong to this pool; rename one of them")]
    ForeignStorageClass(String),
}

impl PoolError {
    /// The `reason` label of the failure metric.
    pub fn reason(&self) -> &'static str {
        match self {
            PoolError::Kube(_) => "KubeApi",
            PoolError::ForeignStorageClass(_) => "ForeignStorageClass",
        }
    }
}

/// What reconciling one pool found, for its status.
struct Outcome {
    conditions: Vec<Condition>,
    storage_class: Option<String>,
}

pub async fn reconcile(pool: Arc<BlockPool>, ctx: Arc<Context>) -> Result<Action, PoolError> {
    let started = std::time::Instant::now();
    let result = if pool.metadata.deletion_timestamp.is_some() {
        cleanup(&pool, &ctx).await
    } else {
        apply_pool(&pool, &ctx).await
    };
    ctx.metrics.reconciled(CONTROLLER, started.elapsed());
    if result.is_ok() {
        ctx.succeeded(&pool.name_any());
    }
    result
}

/// Retries a failed pool with a growing delay, and records why it failed.
pub fn error_policy(pool: Arc<BlockPool>, error: &PoolError, ctx: Arc<Context>) -> Action {
    ctx.metrics.failed(CONTROLLER, error.reason());
    let delay = ctx.next_backoff(&pool.name_any());
    tracing::warn!(pool = %pool.name_any(), %error, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Writes the pool's finalizers, on the condition that the pool did not change since it was read.
async fn set_finalizers(
    pool: &BlockPool,
    ctx: &Context,
    finalizers: Vec<&str>,
) -> kube::Result<()> {
    // Permission: rbac::BLOCK_POOL_FINALIZERS and patch of rbac::BLOCK_POOLS.
    let patch = serde_json::json!({
        "metadata": {"finalizers": finalizers, "resourceVersion": pool.resource_version()}
    });
    Api::<BlockPool>::all(ctx.client.clone())
        .patch(
            &pool.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}

async fn ensure_finalizer(pool: &BlockPool, ctx: &Context) -> kube::Result<()> {
    if pool.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(());
    }
    let mut finalizers: Vec<&str> = pool.finalizers().iter().map(String::as_str).collect();
    finalizers.push(FINALIZER);
    set_finalizers(pool, ctx, finalizers).await
}

async fn remove_finalizer(pool: &BlockPool, ctx: &Context) -> kube::Result<()> {
    let finalizers = pool
        .finalizers()
        .iter()
        .map(String::as_str)
        .filter(|f| *f != FINALIZER)
        .collect();
    set_finalizers(pool, ctx, finalizers).await
}

async fn apply_pool(pool: &BlockPool, ctx: &Context) -> Result<Action, PoolError> {
    ensure_finalizer(pool, ctx).await?;
    let generation = pool.metadata.generation;
    let reference = pool.object_ref(&());

    let desired = match storage_class::build(pool) {
        Ok(class) => class,
        Err(error) => {
            ctx.event(
                &reference,
                true,
                "InvalidSpec",
                "Validate",
                error.to_string(),
            )
            .await;
            let outcome = Outcome {
                conditions: vec![Condition::new(
                    "Ready",
                    false,
                    "InvalidSpec",
                    error.to_string(),
                    generation,
                )],
                storage_class: None,
            };
            write_status(pool, ctx, outcome).await?;
            // Nothing changes until the spec does.
            return Ok(Action::await_change());
        }
    };
    let left_out = publish_pool_config(ctx, None).await?;
    if let Some(why) = left_out.get(&pool.name_any()) {
        let path = &pool.spec.backend.file.path;
        let (reason, message) = match why {
            pool_config::LeftOut::PathConflict { older } => (
                "PathConflict",
                format!(
                    "directory {path} is, contains or lies inside the directory of the older pool {older} on a node both have; no node serves this pool until one of them moves"
                ),
            ),
            pool_config::LeftOut::OutsideHostDirs { host_dirs } => (
                "PathOutsideHostDirs",
                format!(
                    "directory {path} is not under any directory the node plugins mount from the host ({}); a pool there would live in the plugin container's own filesystem and lose its volumes at the next restart. Move the pool under one of them, or add its directory to the chart value node.poolHostDirs",
                    host_dirs.join(", ")
                ),
            ),
        };
        ctx.event(&reference, true, reason, "Validate", message.clone())
            .await;
        let outcome = Outcome {
            conditions: vec![Condition::new("Ready", false, reason, message, generation)],
            storage_class: None,
        };
        write_status(pool, ctx, outcome).await?;
        // The other pool may move, or the chart's directories change, without an event on this one.
        return Ok(Action::requeue(WAIT_FOR_VOLUMES));
    }
    let mut conditions = Vec::new();
    let class = apply_storage_class(pool, ctx, &desired).await?;
    remove_stale::<StorageClass>(pool, ctx, &class).await?;

    apply_snapshot_class(pool, ctx, &mut conditions).await?;
    if ctx.apis.cdi()
        && let Some(profile) = storage_profile(
            pool,
            snapshot_class(pool)
                .filter(|_| ctx.apis.snapshots())
                .and_then(|class| class.metadata.name),
        )
    {
        // CDI makes a StorageProfile for every StorageClass and owns it; the operator only sets
        // its hints once it is there (the StorageProfile watch brings the pool back then), so a
        // profile CDI has not made yet is no error. Permission: rbac::STORAGE_PROFILES.
        let name = profile.metadata.name.clone().unwrap_or_default();
        let profiles = kube::Api::<StorageProfile>::all(ctx.client.clone());
        if profiles.get_opt(&name).await?.is_some() {
            apply::<StorageProfile>(ctx, &profile).await?;
        } else {
            tracing::debug!(pool = %name, "CDI has not made the class's StorageProfile yet");
        }
    }
    crate::kubevirt::apply_preference(pool, ctx).await?;

    conditions.insert(
        0,
        Condition::new(
            "Ready",
            true,
            "StorageClassReady",
            format!("StorageClass {class} offers the pool"),
            generation,
        ),
    );
    if let Some(low) = low_space::condition(pool, &ctx.capacities().await?) {
        let previous = pool.status.as_ref().map(|s| s.conditions.as_slice());
        if low_space::started(previous.unwrap_or_default(), &low) {
            ctx.event(&reference, true, "LowSpace", "Watch", low.message.clone())
                .await;
        }
        conditions.push(low);
    }
    let outcome = Outcome {
        conditions,
        storage_class: Some(class),
    };
    write_status(pool, ctx, outcome).await?;
    Ok(Action::requeue(RESYNC))
}

/// Applies the StorageClass, replacing it when a field the API server keeps immutable must change.
async fn apply_storage_class(
    pool: &BlockPool,
    ctx: &Context,
    desired: &StorageClass,
) -> Result<String, PoolError> {
    // Permission: rbac::STORAGE_CLASSES.
    let api = Api::<StorageClass>::all(ctx.client.clone());
    let name = desired.metadata.name.clone().unwrap_or_default();
    let reference = pool.object_ref(&());
    match api.get_opt(&name).await? {
        Some(existing) if !belongs_to(&existing.metadata, pool) => {
            let error = PoolError::ForeignStorageClass(name);
            ctx.event(
                &reference,
                true,
                "StorageClassConflict",
                "ApplyStorageClass",
                error.to_string(),
            )
            .await;
            return Err(error);
        }
        Some(existing) => {
            if let Some(field) = storage_class::needs_replacement(&existing, desired) {
                // Deleting a class never touches its volumes: PVs only name it, and the new
                // class has the same name.
                api.delete(&name, &DeleteParams::default()).await?;
                // Created by server-side apply, like every later update: one field manager owns
                // the class, so later changes (defaultClass: false) are not lost to a second one.
                apply(ctx, desired).await?;
                ctx.event(
                    &reference,
                    false,
                    "StorageClassReplaced",
                    "ReplaceStorageClass",
                    format!(
                        "StorageClass {name} was replaced because its {field} changed; existing volumes keep working"
                    ),
                )
                .await;
                return Ok(name);
            }
            apply(ctx, desired).await?;
        }
        None => {
            apply(ctx, desired).await?;
            ctx.event(
                &reference,
                false,
                "StorageClassCreated",
                "CreateStorageClass",
                format!("StorageClass {name} offers the pool"),
            )
            .await;
        }
    }
    Ok(name)
}

fn belongs_to(
    metadata: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    pool: &BlockPool,
) -> bool {
    metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(POOL_LABEL))
        .is_some_and(|p| Some(p) == pool.metadata.name.as_ref())
}

/// Deletes the pool's objects of kind `K` other than `keep` (e.g. after a rename); `keep: ""`
/// deletes them all.
async fn remove_stale<K>(pool: &BlockPool, ctx: &Context, keep: &str) -> kube::Result<Vec<String>>
where
    K: Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
        + Clone
        + Debug
        + DeserializeOwned,
{
    let selector = format!("{POOL_LABEL}={}", pool.name_any());
    remove_labelled_except::<K>(ctx, &selector, &[keep.to_owned()]).await
}

async fn apply_snapshot_class(
    pool: &BlockPool,
    ctx: &Context,
    conditions: &mut Vec<Condition>,
) -> kube::Result<()> {
    let wanted = snapshot_class(pool);
    if !ctx.apis.snapshots() {
        if wanted.is_some() {
            conditions.push(Condition::new(
                "SnapshotClassReady",
                false,
                "SnapshotApiMissing",
                "the cluster does not serve snapshot.storage.k8s.io/v1; install the external-snapshotter CRDs",
                pool.metadata.generation,
            ));
        }
        return Ok(());
    }
    // Permission: rbac::SNAPSHOT_CLASSES.
    match wanted {
        Some(class) => {
            let name = class.metadata.name.clone().unwrap_or_default();
            apply(ctx, &class).await?;
            remove_stale::<VolumeSnapshotClass>(pool, ctx, &name).await?;
            conditions.push(Condition::new(
                "SnapshotClassReady",
                true,
                "Applied",
                format!("VolumeSnapshotClass {name}"),
                pool.metadata.generation,
            ));
        }
        None => {
            remove_stale::<VolumeSnapshotClass>(pool, ctx, "").await?;
        }
    }
    Ok(())
}

/// Renders the pool ConfigMap from every pool except `leaving`; the node plugins follow the file.
/// Returns the pools left out of it, and why.
async fn publish_pool_config(
    ctx: &Context,
    leaving: Option<&str>,
) -> kube::Result<BTreeMap<String, pool_config::LeftOut>> {
    let pools = ctx.pools().await?;
    let nodes = ctx.nodes().await?;
    let present: Vec<&BlockPool> = pools
        .iter()
        .map(AsRef::as_ref)
        .filter(|p| p.metadata.name.as_deref() != leaving)
        .collect();
    let settings = &ctx.settings;
    let pool_config::Rendered { file, left_out } =
        pool_config::render(&present, &nodes, &settings.pool_host_dirs);
    // Permission: rbac::NODE_DAEMONSET.
    let daemonsets = Api::<DaemonSet>::namespaced(ctx.client.clone(), &settings.namespace);
    let daemonset = match &settings.node_daemonset {
        Some(name) => daemonsets.get_opt(name).await?,
        None => None,
    };
    let owner = daemonset.as_ref().and_then(pool_config::daemonset_owner);
    let config_map =
        pool_config::config_map(&settings.pool_config_map, &settings.namespace, &file, owner);
    // Permission: rbac::POOL_CONFIG_MAP.
    let mut body = serde_json::to_value(&config_map).expect("a ConfigMap serializes");
    body["apiVersion"] = "v1".into();
    body["kind"] = "ConfigMap".into();
    Api::<ConfigMap>::namespaced(ctx.client.clone(), &settings.namespace)
        .patch(
            &settings.pool_config_map,
            &apply_params(),
            &Patch::Apply(body),
        )
        .await?;
    if let (Some(name), None) = (&settings.node_daemonset, &daemonset) {
        tracing::warn!(daemonset = %name, "node DaemonSet not found; the pool ConfigMap has no owner");
    }
    Ok(left_out)
}

async fn cleanup(pool: &BlockPool, ctx: &Context) -> Result<Action, PoolError> {
    if !pool.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let reference = pool.object_ref(&());
    // No new volumes: the classes go first.
    remove_stale::<StorageClass>(pool, ctx, "").await?;
    if ctx.apis.snapshots() {
        remove_stale::<VolumeSnapshotClass>(pool, ctx, "").await?;
    }
    let volumes = ctx.pool_volumes(&pool.name_any()).await?;
    if !volumes.is_empty() {
        let shown: Vec<&str> = volumes.iter().take(5).map(String::as_str).collect();
        let message = format!(
            "{} volumes still live in the pool ({}{}); delete their claims to finish deleting it",
            volumes.len(),
            shown.join(", "),
            if volumes.len() > shown.len() {
                ", …"
            } else {
                ""
            }
        );
        ctx.event(&reference, true, "VolumesRemain", "Delete", message.clone())
            .await;
        let outcome = Outcome {
            conditions: vec![Condition::new(
                "Ready",
                false,
                "VolumesRemain",
                message,
                pool.metadata.generation,
            )],
            storage_class: None,
        };
        write_status(pool, ctx, outcome).await?;
        return Ok(Action::requeue(WAIT_FOR_VOLUMES));
    }
    publish_pool_config(ctx, Some(&pool.name_any())).await?;
    ctx.event(
        &reference,
        false,
        "Deleted",
        "Delete",
        "the pool has no volumes left; its classes and configuration are removed".into(),
    )
    .await;
    remove_finalizer(pool, ctx).await?;
    Ok(Action::await_change())
}

async fn write_status(pool: &BlockPool, ctx: &Context, outcome: Outcome) -> kube::Result<()> {
    let nodes = ctx.nodes().await?;
    let capacities = ctx.capacities().await?;
    let previous = pool.status.clone().unwrap_or_default();
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = BlockPoolStatus {
        conditions: carry_transition_times(&previous.conditions, outcome.conditions, &now),
        storage_class_name: outcome.storage_class,
        matched_nodes: pool_config::matched_nodes(pool, &nodes),
        capacity_bytes: capacity::sum_for_class(&capacities, &class_name(pool)),
        observed_generation: pool.metadata.generation,
    };
    if pool.status.as_ref() == Some(&status) {
        return Ok(());
    }
    // Permission: rbac::BLOCK_POOL_STATUS.
    let body = serde_json::json!({
        "apiVersion": "fastvirt.io/v1alpha1",
        "kind": "BlockPool",
        "status": status,
    });
    Api::<BlockPool>::all(ctx.client.clone())
        .patch_status(&pool.name_any(), &apply_params(), &Patch::Apply(body))
        .await?;
    Ok(())
}
