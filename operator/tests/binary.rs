//! The `fastvirt-operator` binary as a Deployment runs it, before any API server answers: it must
//! serve health and metrics, keep trying for the lease, and never panic (a TLS set-up that panics
//! on the first connection once slipped through every other test).

use fastvirt_test_support::{free_port, http_get, unreachable_kubeconfig, wait_for};
use std::process::Command;

#[test]
fn serves_health_and_waits_for_the_lease_without_an_api_server() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("operator.log");
    let port = free_port();
    let output = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fastvirt-operator"))
        .args([
            "run",
            "--namespace",
            "fastvirt-system",
            "--lease-duration",
            "3s",
        ])
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{port}"))
        .env("KUBECONFIG", unreachable_kubeconfig(dir.path()))
        .env("RUST_LOG", "info")
        .env_remove("FASTVIRT_NAMESPACE")
        .stdout(output.try_clone().unwrap())
        .stderr(output)
        .spawn()
        .unwrap();
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let healthy = wait_for(20, || {
        http_get(port, "/healthz").is_some_and(|(c, _)| c == 200)
    });
    // At least two attempts at the lease, each a real connection.
    let retried = wait_for(20, || log_text().matches("leader election").count() >= 2);
    let still_running = child.try_wait().unwrap().is_none();
    let ready = http_get(port, "/readyz");
    let metrics = http_get(port, "/metrics");
    child.kill().ok();
    child.wait().ok();
    let log = log_text();
    assert!(healthy, "no /healthz: {log}");
    assert!(retried, "no retried lease attempt: {log}");
    assert!(still_running, "the operator exited: {log}");
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(
        ready.map(|(c, _)| c),
        Some(200),
        "a standby replica is ready"
    );
    assert!(
        metrics.is_some_and(|(_, body)| body.contains("fastvirt_operator_leader 0")),
        "no leader gauge"
    );
}
