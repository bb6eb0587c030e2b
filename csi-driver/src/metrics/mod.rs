//! The node plugin's Prometheus metrics, served at `/metrics` on `--metrics-port`: every CSI call
//! by method and gRPC code with its latency ([`rpc`]), and each pool's space and each attached
//! volume's I/O, read when scraped ([`storage`]), and the I/O limits in force ([`qos`]). Every name starts with `fastvirt_csi_`;
//! `docs/configuration.md` lists them.

mod blockstat;
mod qos;
mod rpc;
mod storage;

pub use rpc::RpcMetricsLayer;

use crate::pool_set::PoolSet;
use crate::qos::QosEnforcer;
use crate::server::ServeError;
use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

/// The prefix of every metric.
pub const PREFIX: &str = "fastvirt_csi";

/// The registry and what feeds it.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    rpc: rpc::RpcMetrics,
}

impl Metrics {
    /// Metrics of `pools`, whose devices' counters are under `sys_block` (`/sys/block`), and of
    /// the limits `qos` keeps in force (a node plugin's).
    pub fn new(
        pools: Arc<PoolSet>,
        sys_block: PathBuf,
        qos: Option<Arc<QosEnforcer>>,
    ) -> Arc<Self> {
        let mut registry = Registry::with_prefix(PREFIX);
        let rpc = rpc::RpcMetrics::register(&mut registry);
        registry.register_collector(Box::new(storage::StorageCollector::new(pools, sys_block)));
        if let Some(qos) = qos {
            registry.register_collector(Box::new(qos::QosCollector::new(qos)));
        }
        Arc::new(Self { registry, rpc })
    }

    /// The layer that counts the calls of the server it wraps.
    pub fn layer(&self) -> RpcMetricsLayer {
        RpcMetricsLayer::new(self.rpc.clone())
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

async fn metrics(State(metrics): State<Arc<Metrics>>) -> impl IntoResponse {
    // A scrape reads every pool's records and devices: off the async executor.
    let text = tokio::task::spawn_blocking(move || metrics.encode())
        .await
        .unwrap_or_default();
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

/// The router, for tests.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(self::metrics))
        .with_state(metrics)
}

/// Serves `/metrics` on every address at `port` until `shutdown`.
pub async fn serve_metrics(
    metrics: Arc<Metrics>,
    port: u16,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    crate::http_endpoint::serve(router(metrics), port, "/metrics", shutdown).await
}
