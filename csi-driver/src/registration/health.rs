//! `/healthz` over HTTP for kubelet's liveness probe: the same check as the Identity Probe, run in
//! process instead of through a sidecar that dials the CSI socket.

use crate::server::ServeError;
use crate::service::Driver;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use std::future::Future;

async fn healthz(State(driver): State<Driver>) -> (StatusCode, String) {
    match tokio::task::spawn_blocking(move || driver.check_ready()).await {
        Ok(Ok(())) => (StatusCode::OK, "ok\n".to_owned()),
        Ok(Err(problem)) => (StatusCode::SERVICE_UNAVAILABLE, format!("{problem}\n")),
        Err(join) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("health check failed: {join}\n"),
        ),
    }
}

/// The router, for tests.
pub fn router(driver: Driver) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .with_state(driver)
}

/// Serves `/healthz` on every address at `port` until `shutdown`.
pub async fn serve_health(
    driver: Driver,
    port: u16,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    crate::http_endpoint::serve(router(driver), port, "/healthz", shutdown).await
}
