//! The plugin's small HTTP endpoints (`/healthz`, `/metrics`): a router served on every address
//! at a port until shutdown.

use crate::server::ServeError;
use axum::Router;
use std::future::Future;
use std::net::SocketAddr;

/// Serves `router` on every address at `port` until `shutdown`; `what` names it in logs and errors.
pub async fn serve(
    router: Router,
    port: u16,
    what: &str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let address = SocketAddr::from(([0, 0, 0, 0], port));
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| ServeError::Io {
            context: format!("binding {what} on {address}"),
            source,
        })?;
    tracing::info!(%address, "serving {what}");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| ServeError::Io {
            context: format!("serving {what}"),
            source,
        })
}
