//! The node plugin's `/metrics` in the real cluster, read through the API server's pod proxy (as
//! Prometheus would reach the pod): while a pod writes to a Block claim, the volume's written
//! bytes grow under its PersistentVolume's name, and the calls that attached it are counted.

use super::{POOL, apply, claim_volume, delete, node_plugin_pod, pod, pod_phase, pvc, wait};
use fastvirt_e2e::cluster;
use fastvirt_e2e::cluster::kubectl::Kubectl;

/// The chart's default `node.metrics.port`.
const METRICS_PORT: u16 = 9811;

pub fn scrape(kubectl: &Kubectl) -> anyhow::Result<String> {
    // The chart's DaemonSet runs only on the node with a kubelet.
    let name = node_plugin_pod(kubectl)?.ok_or_else(|| anyhow::anyhow!("no ready node plugin"))?;
    kubectl.run(&[
        "get",
        "--raw",
        &format!(
            "/api/v1/namespaces/{}/pods/{name}:{METRICS_PORT}/proxy/metrics",
            cluster::NAMESPACE
        ),
    ])
}

/// The value of the sample named `name` whose labels include every one of `labels`.
pub fn value(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|x| l.contains(x)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

pub fn the_plugin_reports_a_volumes_io(kubectl: &Kubectl) {
    let claim = "metrics-claim";
    apply(kubectl, &pvc(claim, POOL, true, "64Mi", None));
    let writer = "metrics-writer";
    apply(
        kubectl,
        &pod(
            writer,
            claim,
            true,
            "while true; do dd if=/dev/zero of=/dev/xvda bs=65536 count=64 oflag=direct 2>/dev/null; sleep 1; done",
        ),
    );
    wait(kubectl, "the writer running", 180, || {
        Ok((pod_phase(kubectl, writer)? == "Running").then_some(()))
    });
    let pv = claim_volume(kubectl, claim);
    let label = format!("persistentvolume=\"{pv}\"");
    let text = wait(kubectl, "the volume's writes in /metrics", 120, || {
        let text = scrape(kubectl)?;
        let written = value(&text, "fastvirt_csi_volume_written_bytes_total", &[&label]);
        Ok(written.filter(|w| *w >= (4 << 20) as f64).map(|_| text))
    });
    for method in ["NodeStageVolume", "NodePublishVolume", "CreateVolume"] {
        let ok = value(
            &text,
            "fastvirt_csi_rpc_requests_total",
            &[&format!("method=\"{method}\",code=\"OK\"")],
        );
        assert!(ok.is_some_and(|n| n >= 1.0), "{method}: {text}");
    }
    assert!(
        value(
            &text,
            "fastvirt_csi_pool_healthy",
            &[&format!("pool=\"{POOL}\"")]
        ) == Some(1.0),
        "{text}"
    );
    delete(kubectl, "pod", writer);
    delete(kubectl, "pvc", claim);
}
