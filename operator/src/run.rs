//! `fastvirt-operator run`: serve health and metrics, win the leader lease, fill the informer
//! caches, and run the BlockPool and NodeTuningProfile controllers until told to stop. fastvirt's
//! own kinds are listed and watched leniently ([`crate::unreadable`]): an object the types cannot
//! read is skipped and reported, and stops neither its controller nor the other one.

use crate::context::{Caches, Context, OptionalApis, Settings};
use crate::foreign::{StorageProfile, VolumeSnapshotClass};
use crate::kubevirt::types::{ClusterInstancetype, ClusterPreference};
use crate::leader::LeaseLock;
use crate::metrics::Metrics;
use crate::pool_objects::class_name;
use crate::unreadable::{self, Unreadables, lenient_ref};
use crate::{kubevirt, pool_controller, profile_controller};
use anyhow::Context as _;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use fastvirt_api::lenient::Lenient;
use fastvirt_api::{BlockPool, NodeTuningProfile, TunedNode};
use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, PersistentVolume};
use k8s_openapi::api::storage::v1::{CSIStorageCapacity, StorageClass};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, predicates, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How the `run` command was configured.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub settings: Settings,
    pub metrics_addr: SocketAddr,
    pub leader_election: bool,
    pub lease_name: String,
    pub lease_duration: Duration,
    pub identity: String,
}

/// Fills a cache from a watch in the background.
fn cache<K>(api: Api<K>) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .for_each(|_| futures::future::ready(()));
    tokio::spawn(stream);
    reader
}

/// [`cache`] of one of fastvirt's kinds, without the objects that cannot be read.
fn lenient_cache<K>(client: &Client, unreadables: &Arc<Unreadables>) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let events = watcher(
        Api::<Lenient<K>>::all(client.clone()),
        watcher::Config::default(),
    );
    let events = unreadable::readable_events(events, reader.clone(), unreadables.clone());
    let stream = reflector::reflector(writer, events)
        .default_backoff()
        .for_each(|_| futures::future::ready(()));
    tokio::spawn(stream);
    reader
}

/// Node label changes, the only node changes the controllers care about.
fn node_label_changes(client: &Client) -> impl Stream<Item = ()> + Send + 'static {
    watcher(
        Api::<PartialObjectMeta<Node>>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .touched_objects()
    .predicate_filter(predicates::labels, Default::default())
    .filter_map(|change| futures::future::ready(change.ok().map(|_| ())))
}

/// Whether the API server serves `kind` in `group/version`; `None` when it could not say (a
/// timeout, an API server restarting), so a passing failure never makes an API look removed.
async fn serves(client: &Client, group: &str, version: &str, kind: &str) -> Option<bool> {
    match client
        .list_api_group_resources(&format!("{group}/{version}"))
        .await
    {
        Ok(list) => Some(list.resources.iter().any(|r| r.kind == kind)),
        Err(kube::Error::Api(status)) if status.code == 404 => Some(false),
        Err(error) => {
            tracing::warn!(%error, group, version, "discovery failed; keeping what was known");
            None
        }
    }
}

/// Finds which optional APIs are served; true when that changed.
async fn discover(client: &Client, apis: &OptionalApis) -> bool {
    let snapshots = serves(
        client,
        "snapshot.storage.k8s.io",
        "v1",
        "VolumeSnapshotClass",
    )
    .await
    .unwrap_or(apis.snapshots());
    let cdi = serves(client, "cdi.kubevirt.io", "v1beta1", "StorageProfile")
        .await
        .unwrap_or(apis.cdi());
    let instancetypes = serves(
        client,
        kubevirt::types::GROUP,
        kubevirt::types::VERSION,
        "VirtualMachineClusterInstancetype",
    )
    .await
    .unwrap_or(apis.instancetypes());
    let changed =
        snapshots != apis.snapshots() || cdi != apis.cdi() || instancetypes != apis.instancetypes();
    if changed {
        tracing::info!(snapshots, cdi, instancetypes, "optional APIs discovered");
    }
    apis.set(snapshots, cdi);
    apis.set_instancetypes(instancetypes);
    changed
}

/// A stream that yields each time `receiver`'s value changes.
fn changes<T: Send + Sync + 'static>(
    receiver: tokio::sync::watch::Receiver<T>,
) -> impl Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(receiver, |mut receiver| async move {
        receiver.changed().await.ok()?;
        Some(((), receiver))
    })
}

/// Every change of a kind's objects, for triggers that recompute from the caches.
fn any_change<K>(client: &Client) -> impl Stream<Item = ()> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    watcher(Api::<K>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .filter_map(|event| futures::future::ready(event.ok().map(|_| ())))
}

fn http_router(metrics: Arc<Metrics>, ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move { metrics.encode() }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready.load(Ordering::Relaxed) {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "caches filling")
                    }
                }
            }),
        )
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler installs");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Waits until this replica holds the lease, then keeps renewing it; returns when the lease is
/// lost (another replica may already be writing, so the caller must stop at once).
async fn lead(
    lock: Arc<LeaseLock>,
    duration: Duration,
    metrics: Arc<Metrics>,
    won: tokio::sync::oneshot::Sender<()>,
) {
    let retry = duration / 3;
    loop {
        match lock
            .try_acquire_or_renew(k8s_openapi::jiff::Timestamp::now())
            .await
        {
            Ok(true) => break,
            Ok(false) => {}
            Err(error) => tracing::warn!(%error, "leader election"),
        }
        tokio::time::sleep(retry).await;
    }
    tracing::info!("became leader");
    metrics.leader.set(1);
    let _ = won.send(());
    let mut last_renewal = std::time::Instant::now();
    loop {
        tokio::time::sleep(retry).await;
        match lock
            .try_acquire_or_renew(k8s_openapi::jiff::Timestamp::now())
            .await
        {
            Ok(true) => last_renewal = std::time::Instant::now(),
            Ok(false) => break,
            Err(error) => {
                tracing::warn!(%error, "renewing the lease");
                if last_renewal.elapsed() >= duration {
                    break;
                }
            }
        }
    }
    metrics.leader.set(0);
    tracing::error!("lost the leader lease");
}

pub async fn run(options: RunOptions) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster or KUBECONFIG)")?;
    let metrics = Arc::new(Metrics::default());
    // Ready means doing this replica's job: a standby waiting for the lease is; a new leader is
    // not until its caches are filled.
    let ready = Arc::new(AtomicBool::new(options.leader_election));
    let listener = tokio::net::TcpListener::bind(options.metrics_addr)
        .await
        .with_context(|| format!("binding {}", options.metrics_addr))?;
    tokio::spawn(axum::serve(listener, http_router(metrics.clone(), ready.clone())).into_future());

    let (won_tx, won_rx) = tokio::sync::oneshot::channel();
    let lock = Arc::new(LeaseLock::new(
        Api::<Lease>::namespaced(client.clone(), &options.settings.namespace),
        &options.lease_name,
        &options.identity,
        options.lease_duration,
    ));
    let leadership = if options.leader_election {
        let handle = tokio::spawn(lead(
            lock.clone(),
            options.lease_duration,
            metrics.clone(),
            won_tx,
        ));
        tokio::select! {
            _ = won_rx => {}
            _ = shutdown_signal() => return Ok(()),
        }
        ready.store(false, Ordering::Relaxed);
        Some(handle)
    } else {
        metrics.leader.set(1);
        None
    };

    let unreadables = Arc::new(Unreadables::new(
        client.clone(),
        options.identity.clone(),
        metrics.clone(),
    ));
    let caches = Caches {
        pools: lenient_cache(&client, &unreadables),
        profiles: lenient_cache(&client, &unreadables),
        nodes: {
            let (reader, writer) = reflector::store();
            let stream = reflector::reflector(
                writer,
                watcher(
                    Api::<PartialObjectMeta<Node>>::all(client.clone()),
                    watcher::Config::default(),
                ),
            )
            .default_backoff()
            .for_each(|_| futures::future::ready(()));
            tokio::spawn(stream);
            reader
        },
        tuned_nodes: lenient_cache(&client, &unreadables),
        capacities: cache(Api::<CSIStorageCapacity>::all(client.clone())),
        volumes: cache(Api::<PersistentVolume>::all(client.clone())),
    };
    for (name, ready) in [
        ("pools", caches.pools.wait_until_ready().await.is_ok()),
        ("profiles", caches.profiles.wait_until_ready().await.is_ok()),
        ("nodes", caches.nodes.wait_until_ready().await.is_ok()),
        (
            "tunednodes",
            caches.tuned_nodes.wait_until_ready().await.is_ok(),
        ),
        (
            "capacities",
            caches.capacities.wait_until_ready().await.is_ok(),
        ),
        ("volumes", caches.volumes.wait_until_ready().await.is_ok()),
    ] {
        anyhow::ensure!(ready, "the {name} cache never filled");
    }
    let pools_store = caches.pools.clone();
    let pools_by_class = caches.pools.clone();
    let profiles_store = caches.profiles.clone();
    ready.store(true, Ordering::Relaxed);

    let apis = OptionalApis::default();
    let _ = discover(&client, &apis).await;
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            options.settings.clone(),
            apis,
            options.identity.clone(),
        )
        .with_caches(caches)
        .with_metrics(metrics.clone()),
    );
    // An API that appears later (KubeVirt installed after fastvirt) has every object
    // reconciled again, so its objects are made without waiting for a resync.
    let (discovered, on_discovery) = tokio::sync::watch::channel(0u64);
    let rediscover = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                if discover(&ctx.client, &ctx.apis).await {
                    discovered.send_modify(|n| *n += 1);
                }
            }
        })
    };
    let summary = tokio::spawn(kubevirt::keep_summary(
        ctx.clone(),
        futures::stream::select_all([
            node_label_changes(&client).boxed(),
            any_change::<Lenient<NodeTuningProfile>>(&client).boxed(),
            any_change::<Lenient<TunedNode>>(&client).boxed(),
            changes(on_discovery.clone()).boxed(),
        ]),
    ));

    let all_pools = move || {
        pools_store
            .state()
            .iter()
            .map(|p| lenient_ref(&**p))
            .collect::<Vec<_>>()
    };
    let pools_on_capacity_change = all_pools.clone();
    let pools_on_volume_change = all_pools;
    let mut pool_controller = Controller::new(
        Api::<Lenient<BlockPool>>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<StorageClass>::all(client.clone()),
        watcher::Config::default(),
    )
    .reconcile_all_on(node_label_changes(&client))
    .reconcile_all_on(changes(on_discovery.clone()))
    .watches(
        Api::<CSIStorageCapacity>::all(client.clone()),
        watcher::Config::default(),
        move |_| pools_on_capacity_change(),
    )
    .watches(
        Api::<PersistentVolume>::all(client.clone()),
        watcher::Config::default(),
        move |_| pools_on_volume_change(),
    );
    if ctx.apis.snapshots() {
        pool_controller = pool_controller.owns(
            Api::<VolumeSnapshotClass>::all(client.clone()),
            watcher::Config::default(),
        );
    }
    if ctx.apis.instancetypes() {
        pool_controller = pool_controller.owns(
            Api::<ClusterPreference>::all(client.clone()),
            watcher::Config::default(),
        );
    }
    if ctx.apis.cdi() {
        // CDI may rewrite the StorageProfile it owns; put the pool's hints back.
        pool_controller = pool_controller.watches(
            Api::<StorageProfile>::all(client.clone()),
            watcher::Config::default(),
            move |profile| {
                let class = profile.metadata.name.clone().unwrap_or_default();
                pools_by_class
                    .state()
                    .iter()
                    .filter(|p| class_name(p) == class)
                    .map(|p| lenient_ref(&**p))
                    .collect::<Vec<_>>()
            },
        );
    }
    let pools = pool_controller
        .graceful_shutdown_on(shutdown_signal())
        .run(
            {
                let unreadables = unreadables.clone();
                move |pool, ctx| {
                    unreadable::reconcile(
                        pool,
                        ctx,
                        unreadables.clone(),
                        pool_controller::reconcile,
                    )
                }
            },
            |pool, error, ctx| {
                unreadable::error_policy(pool, error, ctx, pool_controller::error_policy)
            },
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));

    let all_profiles = move || {
        profiles_store
            .state()
            .iter()
            .map(|p| lenient_ref(&**p))
            .collect::<Vec<_>>()
    };
    let profiles_on_profile_change = all_profiles;
    let tuned_unreadables = unreadables.clone();
    let mut profile_controller = Controller::new(
        Api::<Lenient<NodeTuningProfile>>::all(client.clone()),
        watcher::Config::default(),
    );
    if ctx.apis.instancetypes() {
        // Someone deleting or editing an instancetype gets it back: the change makes the
        // profile's family be written again.
        let applied = ctx.applied_families.clone();
        profile_controller = profile_controller.watches(
            Api::<ClusterInstancetype>::all(client.clone()),
            watcher::Config::default(),
            move |instancetype| {
                let profile = instancetype
                    .labels()
                    .get(kubevirt::instancetypes::PROFILE_LABEL)?
                    .clone();
                applied.forget(&profile);
                Some(ObjectRef::<Lenient<NodeTuningProfile>>::new(&profile))
            },
        );
    }
    let profiles = profile_controller
        // A profile's selector or priority decides conflicts in the others too.
        .watches(
            Api::<Lenient<NodeTuningProfile>>::all(client.clone()),
            watcher::Config::default(),
            move |_| profiles_on_profile_change(),
        )
        .reconcile_all_on(node_label_changes(&client))
        .reconcile_all_on(changes(on_discovery))
        .watches(
            Api::<Lenient<TunedNode>>::all(client.clone()),
            watcher::Config::default(),
            move |tuned| {
                tuned_unreadables
                    .read(&tuned)
                    .and_then(|tuned| profile_controller::profiles_for_tuned_node(&tuned))
                    .map(|name| ObjectRef::<Lenient<NodeTuningProfile>>::new(&name))
            },
        )
        .graceful_shutdown_on(shutdown_signal())
        .run(
            move |profile, ctx| {
                unreadable::reconcile(
                    profile,
                    ctx,
                    unreadables.clone(),
                    profile_controller::reconcile,
                )
            },
            |profile, error, ctx| {
                unreadable::error_policy(profile, error, ctx, profile_controller::error_policy)
            },
            ctx.clone(),
        )
        .for_each(|_| futures::future::ready(()));

    let controllers = futures::future::join(pools, profiles);
    match leadership {
        Some(mut handle) => {
            tokio::select! {
                _ = controllers => {
                    handle.abort();
                    if let Err(error) = lock.release().await {
                        tracing::warn!(%error, "releasing the lease");
                    }
                }
                _ = &mut handle => {
                    rediscover.abort();
                    summary.abort();
                    anyhow::bail!("lost the leader lease; exiting so that only the new leader writes");
                }
            }
        }
        None => {
            controllers.await;
        }
    }
    rediscover.abort();
    summary.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get_path(router: Router, path: &str) -> (StatusCode, String) {
        let response = router
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn serves_health_readiness_and_metrics() {
        let metrics = Arc::new(Metrics::default());
        metrics.failed("blockpool", "KubeApi");
        let ready = Arc::new(AtomicBool::new(false));
        let router = http_router(metrics, ready.clone());
        assert_eq!(get_path(router.clone(), "/healthz").await.0, StatusCode::OK);
        assert_eq!(
            get_path(router.clone(), "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        ready.store(true, Ordering::Relaxed);
        assert_eq!(get_path(router.clone(), "/readyz").await.0, StatusCode::OK);
        let (status, text) = get_path(router, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(text.contains("fastvirt_operator_reconcile_failures_total{controller=\"blockpool\",reason=\"KubeApi\"} 1"));
    }
}
