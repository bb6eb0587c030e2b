//! /metrics and /healthz over a real socket on the loopback interface.

use fastvirt_agent::metrics::Metrics;
use fastvirt_agent::server::{self, Health};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn serves_metrics_and_health() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = Arc::new(Metrics::default());
    metrics.drift_corrections.inc_by(3);
    let health = Arc::new(Health::new(Duration::from_millis(200)));
    tokio::spawn(server::serve(listener, metrics, health.clone()));

    let body = get(addr, "/metrics").await;
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(
        body.contains("fastvirt_agent_drift_corrections_total 3"),
        "{body}"
    );
    assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));

    tokio::time::sleep(Duration::from_millis(300)).await;
    let unhealthy = get(addr, "/healthz").await;
    assert!(unhealthy.starts_with("HTTP/1.1 503"), "{unhealthy}");
    health.succeeded();
    assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
}
