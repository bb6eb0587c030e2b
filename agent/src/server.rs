//! The agent's HTTP endpoint: `/metrics` for Prometheus and `/healthz` for the kubelet's probe.

use crate::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Healthy while re-checks succeed; a run of failures longer than `grace` makes the probe fail
/// so the kubelet restarts the agent.
#[derive(Debug)]
pub struct Health {
    last_success: Mutex<Instant>,
    grace: Duration,
}

impl Health {
    pub fn new(grace: Duration) -> Self {
        Self {
            last_success: Mutex::new(Instant::now()),
            grace,
        }
    }

    pub fn succeeded(&self) {
        *self.last_success.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    pub fn healthy(&self) -> bool {
        self.last_success
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
            <= self.grace
    }
}

#[derive(Debug, Clone)]
struct ServerState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

async fn metrics(State(state): State<ServerState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}

async fn healthz(State(state): State<ServerState>) -> impl IntoResponse {
    if state.health.healthy() {
        (StatusCode::OK, "ok\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "re-checks have been failing\n",
        )
    }
}

pub fn router(metrics: Arc<Metrics>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(self::metrics))
        .route("/healthz", get(healthz))
        .with_state(ServerState { metrics, health })
}

/// Serves on a bound listener until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, health)).await
}
