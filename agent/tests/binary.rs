//! The `fastvirt-agent run` binary as the DaemonSet runs it, before any API server answers: it
//! must serve its metrics, keep re-checking, never panic, and never touch the host it was given.

use fastvirt_test_support::{free_port, http_get, unreachable_kubeconfig, wait_for};
use std::process::Command;

#[test]
fn runs_and_retries_without_an_api_server() {
    let dir = tempfile::tempdir().unwrap();
    let host_root = dir.path().join("host");
    std::fs::create_dir_all(&host_root).unwrap();
    let log = dir.path().join("agent.log");
    let output = std::fs::File::create(&log).unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fastvirt-agent"))
        .args(["run", "--node-name", "node-a", "--interval", "1s"])
        .arg("--host-root")
        .arg(&host_root)
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{port}"))
        .env("KUBECONFIG", unreachable_kubeconfig(dir.path()))
        .env("RUST_LOG", "info")
        .stdout(output.try_clone().unwrap())
        .stderr(output)
        .spawn()
        .unwrap();
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    let serving = wait_for(20, || {
        http_get(port, "/metrics").is_some_and(|(c, _)| c == 200)
    });
    let retried = wait_for(20, || log_text().matches("re-check failed").count() >= 2);
    let still_running = child.try_wait().unwrap().is_none();
    child.kill().ok();
    child.wait().ok();
    let log = log_text();
    assert!(serving, "no /metrics: {log}");
    assert!(retried, "no repeated re-check: {log}");
    assert!(still_running, "the agent exited: {log}");
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(
        std::fs::read_dir(&host_root).unwrap().count(),
        0,
        "nothing is written without a profile"
    );
}
