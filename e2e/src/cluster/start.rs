//! `fastvirt-cluster up`.

use super::State;
use super::components::{self, Layout};
use super::host;
use super::network::KUBERNETES_SERVICE_IP;
use super::pki::{self, Client};
use super::process::{self, Component, run};
use anyhow::{Context, Result, bail, ensure};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How `up` builds the cluster.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub workdir: PathBuf,
    /// The fastvirt checkout whose chart and binaries are installed.
    pub repo: PathBuf,
    /// A directory with fastvirt-csi, fastvirt-operator and fastvirt-agent already built (tests
    /// pass `target/debug`); without it `up` runs `cargo build --release` in the repository.
    pub binaries: Option<PathBuf>,
    /// The reference components' directory; without it `scripts/install-kube.sh` is asked.
    pub kube_bin: Option<PathBuf>,
    /// More values files for the chart, after the cluster's own.
    pub values: Vec<PathBuf>,
    /// Install the chart (off: a bare cluster).
    pub install_chart: bool,
    /// Nodes: 1 is the kubelet's; more adds kubelet-less nodes (see `extra_nodes`).
    pub nodes: u32,
    /// The tag fastvirt's images are imported under and the chart runs.
    pub image_tag: String,
}

pub(super) const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
pub(super) const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Starts the cluster described by `options`; the cluster keeps running when this returns.
pub fn up(options: &UpOptions) -> Result<State> {
    ensure!(
        nix::unistd::geteuid().is_root(),
        "fastvirt-cluster needs root: it creates a network namespace, mounts and loop devices"
    );
    std::fs::create_dir_all(&options.workdir)
        .with_context(|| format!("creating {}", options.workdir.display()))?;
    let workdir = options.workdir.canonicalize()?;
    if let Some(old) = State::load(&workdir)? {
        if old.components.iter().any(Component::alive) {
            bail!(
                "a cluster is already up in {}: run `fastvirt-cluster down --workdir {}` first",
                workdir.display(),
                workdir.display()
            );
        }
        super::down(&workdir)?;
    }
    let kube_bin = match &options.kube_bin {
        Some(dir) => dir.clone(),
        None => super::kube_bin_dir(&options.repo)?,
    };
    let mut required = vec![
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubelet",
        "kubectl",
        "snapshot-controller",
        "pause",
    ];
    if options.install_chart {
        required.extend(["helm", "csi-provisioner", "csi-resizer", "csi-snapshotter"]);
    }
    for binary in required {
        ensure!(
            kube_bin.join(binary).is_file(),
            "{} has no {binary}: run scripts/install-kube.sh",
            kube_bin.display()
        );
    }
    ensure!(
        options.nodes >= 1 && (options.nodes == 1 || options.install_chart),
        "--nodes must be at least 1, and extra nodes need the chart (their provisioners use its RBAC)"
    );
    let mut state = State::new(&workdir, &kube_bin);
    state.nodes = options.nodes;
    state.image_tag = options.image_tag.clone();
    state.save()?;
    bring_up(&mut state, options).map_err(|error| {
        error.context(format!(
            "the cluster in {} did not come up; its logs are in {}; `fastvirt-cluster down --workdir {}` removes what was started",
            workdir.display(),
            state.layout().logs().display(),
            workdir.display()
        ))
    })?;
    Ok(state)
}

fn bring_up(state: &mut State, options: &UpOptions) -> Result<()> {
    let layout = state.layout();
    // Every `up` is a new cluster: nothing of an earlier one's data (etcd, images, pools) is kept.
    host::remove_dirs_without_mounts(&layout.stale_dirs())?;
    for dir in [
        layout.logs(),
        layout.workdir.join("etcd"),
        layout.workdir.join("containerd"),
        layout.cni_conf_dir(),
        layout.workdir.join("kubelet"),
        layout.pool_host_dir(),
        layout.csi_state_dir(),
        layout.images_dir(),
        layout.run_dir.clone(),
    ] {
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    state.network.create()?;
    state.save()?;
    if !host::root_is_shared()? {
        host::make_root_shared()?;
        state.made_root_shared = true;
        state.save()?;
    }
    write_pki(state, &layout)?;
    std::fs::write(
        layout.workdir.join("admission.yaml"),
        components::admission_config(),
    )?;

    let etcd = start(state, "etcd", components::etcd_args(&layout))?;
    let etcd_address = SocketAddr::from((layout.node_ip, 2379));
    process::wait_ready(&etcd, "serving", START_TIMEOUT, || {
        TcpStream::connect_timeout(&etcd_address, Duration::from_millis(200)).is_ok()
    })?;
    let apiserver = start(state, "kube-apiserver", components::apiserver_args(&layout))?;
    let kubectl = state.kubectl();
    process::wait_ready(&apiserver, "ready", START_TIMEOUT, || {
        kubectl.run(&["get", "--raw", "/readyz"]).is_ok()
    })?;
    let controller_manager = start(
        state,
        "kube-controller-manager",
        components::controller_manager_args(&layout, state.nodes > 1),
    )?;
    start(state, "kube-scheduler", components::scheduler_args(&layout))?;
    // The ServiceAccount controller creating `default` shows the controller manager at work.
    process::wait_ready(&controller_manager, "working", START_TIMEOUT, || {
        kubectl
            .run(&["get", "serviceaccount", "default", "-n", "default"])
            .is_ok()
    })?;

    host::create_cgroup(&state.cgroup_root)?;
    start_containerd(state, &layout)?;
    let binaries = super::node_images::fastvirt_binaries(options)?;
    let chart_repo = options.install_chart.then_some(options.repo.as_path());
    super::node_images::import_images(state, &layout, chart_repo, &binaries)?;
    start_kubelet(state, &layout)?;
    start_snapshot_controller(state, &layout)?;
    if options.install_chart {
        super::chart_install::install_chart(state, &layout, options)?;
    }
    if state.nodes > 1 {
        super::extra_nodes::start(state, state.nodes)?;
    }
    Ok(())
}

fn start(state: &mut State, name: &str, args: Vec<std::ffi::OsString>) -> Result<Component> {
    let program = state.kube_bin.join(name);
    start_program(state, name, &program, args)
}

pub(super) fn start_program(
    state: &mut State,
    name: &str,
    program: &Path,
    args: Vec<std::ffi::OsString>,
) -> Result<Component> {
    let component = process::start(
        name,
        &state.network.netns,
        program,
        &args,
        &state.layout().logs(),
        &[("PATH", PATH)],
    )?;
    state.components.push(component.clone());
    state.save()?;
    Ok(component)
}

fn write_pki(state: &State, layout: &Layout) -> Result<()> {
    let node_ip = IpAddr::V4(layout.node_ip);
    let server_names = pki::names(
        &[
            node_ip,
            IpAddr::V4(KUBERNETES_SERVICE_IP),
            IpAddr::from([127, 0, 0, 1]),
        ],
        &[
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ],
    );
    let kubelet_names = pki::names(&[node_ip], &[&state.node_name]);
    let node_user = format!("system:node:{}", state.node_name);
    let clients = [
        Client {
            file: "admin",
            user: "fastvirt-admin",
            groups: &["system:masters"],
        },
        Client {
            file: "controller-manager",
            user: "system:kube-controller-manager",
            groups: &[],
        },
        Client {
            file: "scheduler",
            user: "system:kube-scheduler",
            groups: &[],
        },
        Client {
            file: "kubelet",
            user: &node_user,
            groups: &["system:nodes"],
        },
        Client {
            file: "apiserver-kubelet-client",
            user: "kube-apiserver-kubelet-client",
            groups: &["system:masters"],
        },
    ];
    let pki = pki::create(&layout.pki().dir, &server_names, &kubelet_names, &clients)?;
    let server = layout.api_server();
    for (who, file) in [
        ("admin", "admin"),
        ("controller-manager", "controller-manager"),
        ("scheduler", "scheduler"),
        ("kubelet", "kubelet"),
    ] {
        pki::kubeconfig(
            &layout.kubeconfig(who),
            &server,
            &pki.ca_cert(),
            &pki.files(file),
        )?;
    }
    Ok(())
}

fn start_containerd(state: &mut State, layout: &Layout) -> Result<()> {
    let cni_bin = ["/usr/lib/cni", "/opt/cni/bin"]
        .into_iter()
        .find(|d| Path::new(d).join("bridge").exists())
        .context("no CNI bridge plugin: install containernetworking-plugins (scripts/install-kube.sh does)")?;
    std::fs::write(
        layout.containerd_config(),
        components::containerd_config(layout, cni_bin),
    )?;
    std::fs::write(
        layout.cni_conf_dir().join("10-fastvirt.conflist"),
        components::cni_config(layout),
    )?;
    let program = which("containerd")?;
    let config = layout.containerd_config();
    let containerd = start_program(
        state,
        "containerd",
        &program,
        vec!["--config".into(), config.into()],
    )?;
    let socket = layout.containerd_socket();
    process::wait_ready(&containerd, "serving", START_TIMEOUT, || {
        ctr(layout, &["version"]).is_ok()
    })
    .with_context(|| format!("containerd on {}", socket.display()))
}

pub(super) fn ctr(layout: &Layout, args: &[&str]) -> Result<String> {
    let socket = layout.containerd_socket();
    let socket = socket.to_string_lossy();
    let mut full = vec!["--address", &socket, "--namespace", "k8s.io"];
    full.extend(args);
    run("ctr", &full)
}

pub(super) fn which(program: &str) -> Result<PathBuf> {
    for dir in PATH.split(':') {
        let candidate = Path::new(dir).join(program);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("{program} is not installed (scripts/install-kube.sh installs it)")
}

fn start_kubelet(state: &mut State, layout: &Layout) -> Result<()> {
    std::fs::create_dir_all(layout.kubelet_config_dir())?;
    std::fs::write(
        layout.workdir.join("kubelet/config.json"),
        components::kubelet_config(layout),
    )?;
    let kubelet = start(state, "kubelet", components::kubelet_args(layout))?;
    let kubectl = state.kubectl();
    let node = state.node_name.clone();
    process::wait_ready(&kubelet, "a Ready node", START_TIMEOUT, || {
        node_ready(&kubectl, &node).unwrap_or(false)
    })?;
    if state.nodes > 1 {
        // Without the node lifecycle controller (see controller_manager_args) nothing lifts the
        // taint kubelet registers with; lift it as that controller would once the node is Ready.
        let _ = kubectl.run(&[
            "taint",
            "node",
            &node,
            "node.kubernetes.io/not-ready:NoSchedule-",
        ]);
    }
    Ok(())
}

pub fn node_ready(kubectl: &super::kubectl::Kubectl, node: &str) -> Result<bool> {
    let node = kubectl.get_json(&["node", node])?;
    Ok(node["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// The VolumeSnapshot CRDs and the snapshot controller, which are not part of fastvirt's chart
/// (a cluster has one); distributed snapshotting, since each node snapshots its own volumes.
fn start_snapshot_controller(state: &mut State, layout: &Layout) -> Result<()> {
    let crds = state
        .kube_bin
        .parent()
        .map(|p| p.join("crds"))
        .unwrap_or_default();
    let kubectl = state.kubectl();
    kubectl
        .run(&["apply", "--server-side", "-f", &crds.to_string_lossy()])
        .context("creating the VolumeSnapshot CRDs")?;
    let admin = layout.admin_kubeconfig();
    let controller = start(
        state,
        "snapshot-controller",
        vec![
            format!("--kubeconfig={}", admin.display()).into(),
            "--leader-election=false".into(),
            "--enable-distributed-snapshotting".into(),
            "--v=2".into(),
        ],
    )?;
    // Alive after a short while means its flags and connection were accepted.
    std::thread::sleep(Duration::from_secs(2));
    ensure!(controller.alive(), controller.failure("exited at start"));
    Ok(())
}
