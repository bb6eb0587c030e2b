//! The `run` loop: reconcile at start, on every relevant change to a profile or this node, and at
//! least every interval; serve metrics and health meanwhile. It never reboots and never restarts
//! the kubelet, and it leaves the host tuned when it stops (restore happens when no profile
//! selects the node, or by `fastvirt-agent restore`).

use crate::cli::RunArgs;
use crate::hostfs::{HostFs, RealHostFs};
use crate::metrics::Metrics;
use crate::reconcile::{Agent, AgentConfig};
use crate::server::{self, Health};
use anyhow::Context;
use fastvirt_api::NodeTuningProfile;
use fastvirt_api::lenient::Lenient;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Resource, ResourceExt};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// Changes arriving together (a label and an annotation) are taken in one reconcile.
const SETTLE: Duration = Duration::from_secs(1);

/// Wakes the loop when a profile's spec (its generation) changes or one is deleted. Status updates
/// of profiles are ignored: the operator writes them in answer to our TunedNode, and reacting to
/// them would make the two chase each other. Watched leniently: a profile that cannot be read
/// wakes the loop like any other (the reconcile reports it) instead of failing the watch.
fn watch_profiles(client: kube::Client, wake: Arc<Notify>) {
    tokio::spawn(async move {
        let mut generations: BTreeMap<String, Option<i64>> = BTreeMap::new();
        // rbac::PROFILES
        let api = Api::<Lenient<NodeTuningProfile>>::all(client);
        let mut events = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(Event::Apply(profile) | Event::InitApply(profile)) => {
                    let generation = profile.meta().generation;
                    let previous = generations.insert(profile.name_any(), generation);
                    if previous != Some(generation) {
                        wake.notify_one();
                    }
                }
                Ok(Event::Delete(profile)) => {
                    generations.remove(&profile.name_any());
                    wake.notify_one();
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "watching NodeTuningProfiles"),
            }
        }
    });
}

/// Wakes the loop when this node's labels or annotations change.
fn watch_node(client: kube::Client, node_name: String, wake: Arc<Notify>) {
    tokio::spawn(async move {
        let mut seen = None;
        // rbac::NODES
        let api = Api::<Node>::all(client);
        let config = watcher::Config::default().fields(&format!("metadata.name={node_name}"));
        let mut events = watcher(api, config)
            .default_backoff()
            .applied_objects()
            .boxed();
        while let Some(event) = events.next().await {
            match event {
                Ok(node) => {
                    let identity = Some((node.labels().clone(), node.annotations().clone()));
                    if seen != identity {
                        seen = identity;
                        wake.notify_one();
                    }
                }
                Err(error) => tracing::warn!(%error, "watching node {node_name}"),
            }
        }
    });
}

async fn shutdown() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => return std::future::pending().await,
        };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

pub async fn run(args: &RunArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster service account or KUBECONFIG)")?;
    let fs: Arc<dyn HostFs> = Arc::new(RealHostFs::new(&args.host.host_root));
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::new(args.interval * 3 + Duration::from_secs(60)));
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding {}", args.metrics_addr))?;
    let (server_metrics, server_health) = (metrics.clone(), health.clone());
    tokio::spawn(async move {
        if let Err(error) = server::serve(listener, server_metrics, server_health).await {
            tracing::error!(%error, "metrics server stopped");
        }
    });
    let config = AgentConfig {
        node_name: args.node_name.clone(),
        max_hugepage_percent: args.max_hugepage_percent,
        kubelet_dirs: args.kubelet.dirs(),
    };
    let agent = Agent::new(client.clone(), config, fs, metrics.clone());
    let wake = Arc::new(Notify::new());
    watch_profiles(client.clone(), wake.clone());
    watch_node(client, args.node_name.clone(), wake.clone());
    tracing::info!(node = %args.node_name, interval = ?args.interval, "agent running");
    let stop = shutdown();
    tokio::pin!(stop);
    loop {
        match agent.reconcile_once().await {
            Ok(status) => {
                health.succeeded();
                tracing::info!(
                    profile = status.profile.as_deref().unwrap_or("-"),
                    drift_corrections = status.drift_corrections,
                    reboot_required = status.reboot_required,
                    kubelet_restart_required = status.kubelet_restart_required,
                    "re-checked"
                );
            }
            Err(error) => {
                metrics.recheck_failures.inc();
                tracing::warn!(%error, "re-check failed");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(args.interval) => {}
            _ = wake.notified() => tokio::time::sleep(SETTLE).await,
            _ = &mut stop => break,
        }
    }
    tracing::info!("stopping; the host stays tuned");
    Ok(())
}
