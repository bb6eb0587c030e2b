//! `--nodes N`: N-1 nodes without a kubelet, so scheduling across nodes can be tested on one
//! machine. Each is a Node object (Ready, with capacity, tainted so that only pods that tolerate
//! it land there), a CSINode naming the driver, and its own `fastvirt-csi` and
//! external-provisioner processes (the chart's provisioner flags, the node plugin's
//! ServiceAccount token) on a pool of its own: a small XFS filesystem of its own size, so "a node
//! that is nearly full" is real. Pods scheduled there never run (there is no kubelet); their
//! claims are provisioned on that node, which is what capacity-aware scheduling decides.

use super::process::{self, run};
use super::{NAMESPACE, State};
use anyhow::{Context, Result};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// The taint that keeps workloads (and the chart's DaemonSets) off the kubelet-less nodes.
pub const TAINT_KEY: &str = "fastvirt.io/kubelet-less";
/// The pool name every extra node serves; a BlockPool of this name offers them all.
pub const POOL: &str = "spread";
/// The node plugin's ServiceAccount, whose token the extra provisioners use.
const NODE_SERVICE_ACCOUNT: &str = "fastvirt-node";

/// One extra node's names and places.
#[derive(Debug, Clone)]
pub struct ExtraNode {
    pub name: String,
    pub hostname_label: String,
    pub dir: PathBuf,
    pub socket: PathBuf,
    /// Its pool filesystem's size.
    pub pool_bytes: u64,
}

impl ExtraNode {
    pub fn pool_dir(&self) -> PathBuf {
        self.dir.join("pool")
    }
}

/// The extra nodes of a cluster with `nodes` nodes: node 2 gets a nearly full 320 MiB pool, every
/// further node 2 GiB.
pub fn extra_nodes(state: &State, nodes: u32) -> Vec<ExtraNode> {
    (2..=nodes)
        .map(|i| ExtraNode {
            name: format!("fastvirt-node-{i}"),
            hostname_label: format!("fastvirt-host-{i}"),
            dir: state.workdir.join("nodes").join(format!("node-{i}")),
            socket: state.run_dir.join(format!("node-{i}/csi.sock")),
            pool_bytes: if i == 2 { 320 << 20 } else { 2 << 30 },
        })
        .collect()
}

/// Registers the extra nodes and starts their plugins and provisioners.
pub fn start(state: &mut State, nodes: u32) -> Result<()> {
    let kubectl = state.kubectl();
    let token = kubectl
        .run(&[
            "create",
            "token",
            NODE_SERVICE_ACCOUNT,
            "-n",
            NAMESPACE,
            "--duration=48h",
        ])
        .context("a token of the node plugin's ServiceAccount (is the chart installed?)")?;
    let layout = state.layout();
    let kubeconfig = state.workdir.join("extra-nodes.kubeconfig");
    super::pki::token_kubeconfig(
        &kubeconfig,
        &layout.api_server(),
        &layout.pki().ca_cert(),
        token.trim(),
    )?;
    for node in extra_nodes(state, nodes) {
        make_pool_filesystem(&node)?;
        register(&kubectl, &node)?;
        start_plugin(state, &node)?;
        start_provisioner(state, &node, &kubeconfig)?;
    }
    Ok(())
}

fn make_pool_filesystem(node: &ExtraNode) -> Result<()> {
    std::fs::create_dir_all(node.pool_dir())?;
    let image = node.dir.join("pool.xfs");
    let file =
        std::fs::File::create(&image).with_context(|| format!("creating {}", image.display()))?;
    file.set_len(node.pool_bytes)?;
    drop(file);
    run("mkfs.xfs", &["-q", &image.to_string_lossy()])?;
    run(
        "mount",
        &[
            "-o",
            "loop",
            &image.to_string_lossy(),
            &node.pool_dir().to_string_lossy(),
        ],
    )
    .with_context(|| format!("mounting the pool of {}", node.name))?;
    Ok(())
}

fn register(kubectl: &super::kubectl::Kubectl, node: &ExtraNode) -> Result<()> {
    kubectl.apply(&format!(
        "apiVersion: v1
kind: Node
metadata:
  name: {name}
  labels:
    kubernetes.io/hostname: {hostname}
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    {topology}: {name}
spec:
  taints:
    - key: {TAINT_KEY}
      value: \"true\"
      effect: NoSchedule
---
apiVersion: storage.k8s.io/v1
kind: CSINode
metadata:
  name: {name}
spec:
  drivers:
    - name: {driver}
      nodeID: {name}
      topologyKeys: [{topology}]
",
        name = node.name,
        hostname = node.hostname_label,
        topology = fastvirt_csi::TOPOLOGY_NODE_KEY,
        driver = fastvirt_csi::DRIVER_NAME,
    ))?;
    let status = serde_json::json!({"status": {
        "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
        "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
        "conditions": [{
            "type": "Ready",
            "status": "True",
            "reason": "KubeletLess",
            "message": "a fastvirt-cluster node without a kubelet: pods scheduled here never run",
        }],
    }});
    kubectl.run(&[
        "patch",
        "node",
        &node.name,
        "--subresource=status",
        "--type=merge",
        "-p",
        &status.to_string(),
    ])?;
    // The API server's TaintNodesByCondition admission gives every new node this taint; the node
    // lifecycle controller lifts it when the node is Ready, and it does not run here.
    let _ = kubectl.run(&[
        "taint",
        "node",
        &node.name,
        "node.kubernetes.io/not-ready:NoSchedule-",
    ]);
    Ok(())
}

fn start_plugin(state: &mut State, node: &ExtraNode) -> Result<()> {
    let binary = state.fastvirt_binaries.join("fastvirt-csi");
    let args: Vec<OsString> = vec![
        "--mode=all".into(),
        format!("--endpoint=unix://{}", node.socket.display()).into(),
        format!("--node-id={}", node.name).into(),
        format!("--pool={POOL}={}", node.pool_dir().display()).into(),
        format!("--state-dir={}", node.dir.join("state").display()).into(),
        "--expansion=node".into(),
        "--capacity-reserve-percent=0".into(),
    ];
    let name = format!("{}-csi", node.name);
    let plugin = super::start::start_program(state, &name, &binary, args)?;
    let socket = node.socket.clone();
    process::wait_ready(&plugin, "serving", Duration::from_secs(30), || {
        socket.exists()
    })
}

fn start_provisioner(
    state: &mut State,
    node: &ExtraNode,
    kubeconfig: &std::path::Path,
) -> Result<()> {
    let binary = state.kube_bin.join("csi-provisioner");
    // The chart's flags for the node-deployment provisioner (templates/node/daemonset.yaml),
    // capacity objects without an owner (there is no pod to own them).
    let args: Vec<OsString> = vec![
        format!("--csi-address={}", node.socket.display()).into(),
        format!("--kubeconfig={}", kubeconfig.display()).into(),
        "--node-deployment".into(),
        "--strict-topology".into(),
        "--immediate-topology=false".into(),
        "--enable-capacity".into(),
        "--capacity-ownerref-level=-1".into(),
        "--capacity-poll-interval=5s".into(),
        "--extra-create-metadata".into(),
        "--timeout=120s".into(),
        "--v=2".into(),
    ];
    let name = format!("{}-provisioner", node.name);
    let component = process::start(
        &name,
        &state.network.netns,
        &binary,
        &args,
        &state.layout().logs(),
        &[
            ("PATH", super::start::PATH),
            ("NODE_NAME", node.name.as_str()),
            ("NAMESPACE", NAMESPACE),
        ],
    )?;
    state.components.push(component.clone());
    state.save()?;
    std::thread::sleep(Duration::from_secs(2));
    anyhow::ensure!(component.alive(), component.failure("exited at start"));
    Ok(())
}
