//! What the operator makes for KubeVirt (`docs/kubevirt.md`): for each NodeTuningProfile a family
//! of `VirtualMachineClusterInstancetype`s that land only on its tuned nodes, for each BlockPool a
//! `VirtualMachineClusterPreference` with the disk settings its volumes suit, both only where
//! KubeVirt's instancetype API is served and owned by their source (the garbage collector removes
//! them with it); and the `TuningSummary` the chart's admission policy reads, always.

pub mod applied;
pub mod instancetypes;
pub mod preferences;
pub mod summary;
pub mod types;

use crate::apply::{apply, apply_params, remove_labelled_except};
use crate::context::Context;
use crate::pool_config::NodeMeta;
use fastvirt_api::tuning_summary::NAME;
use fastvirt_api::{
    BlockPool, NodeTuningProfile, TuningSummary, TuningSummarySpec, TuningSummaryStatus,
};
use futures::{Stream, StreamExt};
use kube::Resource;
use kube::ResourceExt;
use kube::api::{Api, Patch};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use types::{ClusterInstancetype, ClusterPreference};

/// Applies the profile's instancetype family and deletes the members it no longer has (all of
/// them when the profile turns the family off); nothing when the family is what was last
/// written ([`applied`]).
pub async fn apply_instancetypes(
    profile: &NodeTuningProfile,
    nodes: &[Arc<NodeMeta>],
    ctx: &Context,
) -> kube::Result<()> {
    let name = profile.name_any();
    if !ctx.apis.instancetypes() || !instancetypes::selectable(&name) {
        return Ok(());
    }
    let desired = instancetypes::build(profile, nodes);
    if !ctx.applied_families.differs(&name, &desired) {
        return Ok(());
    }
    for instancetype in &desired {
        // Permission: rbac::INSTANCETYPES.
        apply::<ClusterInstancetype>(ctx, instancetype).await?;
    }
    let keep: Vec<String> = desired
        .iter()
        .filter_map(|t| t.metadata.name.clone())
        .collect();
    let selector = format!("{}={name}", instancetypes::PROFILE_LABEL);
    let removed = remove_labelled_except::<ClusterInstancetype>(ctx, &selector, &keep).await?;
    if !removed.is_empty() {
        tracing::info!(profile = %name, ?removed, "removed instancetypes the profile no longer has");
    }
    ctx.applied_families.written(&name, &desired);
    Ok(())
}

/// Applies the pool's cluster preference.
pub async fn apply_preference(pool: &BlockPool, ctx: &Context) -> kube::Result<()> {
    if ctx.apis.instancetypes() {
        // Permission: rbac::PREFERENCES.
        apply::<ClusterPreference>(ctx, &preferences::build(pool)).await?;
    }
    Ok(())
}

/// The summary as it should be now.
pub async fn desired_summary(ctx: &Context) -> kube::Result<TuningSummaryStatus> {
    Ok(summary::build(
        &ctx.profiles().await?,
        &ctx.nodes().await?,
        &ctx.tuned_nodes().await?,
        ctx.apis.instancetypes(),
    ))
}

/// Writes the summary: the object (it has no spec; applied again in case someone deleted it),
/// then its status. Only a changed summary is written, so this is rare.
pub async fn publish_summary(ctx: &Context, status: TuningSummaryStatus) -> kube::Result<()> {
    let mut object = TuningSummary::new(NAME, TuningSummarySpec {});
    object.metadata.labels = Some(BTreeMap::from([(
        "app.kubernetes.io/managed-by".to_owned(),
        crate::MANAGER.to_owned(),
    )]));
    // Permission: rbac::TUNING_SUMMARY.
    apply(ctx, &object).await?;
    let body = serde_json::json!({
        "apiVersion": TuningSummary::api_version(&()),
        "kind": TuningSummary::kind(&()),
        "status": status,
    });
    // Permission: rbac::TUNING_SUMMARY_STATUS.
    Api::<TuningSummary>::all(ctx.client.clone())
        .patch_status(NAME, &apply_params(), &Patch::Apply(body))
        .await
        .map(|_| ())
}

/// How often the summary is recomputed without a trigger (an API discovered, a missed event).
const SUMMARY_RESYNC: Duration = Duration::from_secs(60);
/// Triggers that come close together make one write; the caches also catch up meanwhile.
const SUMMARY_SETTLE: Duration = Duration::from_millis(500);

/// Keeps the summary current: recomputed on every trigger (node labels, profiles, TunedNodes) and
/// every minute, written only when it changes. Runs until the operator stops.
pub async fn keep_summary(ctx: Arc<Context>, triggers: impl Stream<Item = ()> + Send) {
    let mut triggers = std::pin::pin!(triggers);
    let mut written: Option<TuningSummaryStatus> = None;
    let mut resync = tokio::time::interval(SUMMARY_RESYNC);
    loop {
        tokio::select! {
            _ = resync.tick() => {}
            next = triggers.next() => {
                if next.is_none() {
                    return;
                }
                tokio::time::sleep(SUMMARY_SETTLE).await;
            }
        }
        let desired = match desired_summary(&ctx).await {
            Ok(desired) => desired,
            Err(error) => {
                tracing::warn!(%error, "reading what the summary sums up");
                continue;
            }
        };
        if written.as_ref() == Some(&desired) {
            continue;
        }
        match publish_summary(&ctx, desired.clone()).await {
            Ok(()) => written = Some(desired),
            Err(error) => tracing::warn!(%error, "writing the TuningSummary"),
        }
    }
}

/// A Node's metadata with `labels`, for the builders' tests.
#[cfg(test)]
pub(crate) fn test_node(name: &str, labels: &[(&str, &str)]) -> Arc<NodeMeta> {
    let mut node = kube::core::PartialObjectMeta::<k8s_openapi::api::core::v1::Node>::default();
    node.metadata.name = Some(name.into());
    node.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    Arc::new(node)
}
