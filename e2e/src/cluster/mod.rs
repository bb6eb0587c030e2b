//! `fastvirt-cluster`: a throwaway single-machine Kubernetes cluster built from the reference
//! components (`scripts/install-kube.sh`), with fastvirt's chart installed from the working tree.
//!
//! `up` starts etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd and one
//! kubelet inside a network namespace of the cluster's own, builds fastvirt's images and imports
//! them, installs the chart with the real helm and waits until kubelet has registered the node
//! plugin. `down` stops all of it and takes back every change it made to the host.

mod chart_install;
pub mod components;
pub mod extra_nodes;
pub mod host;
pub mod images;
pub mod kubectl;
pub mod network;
mod node_images;
pub mod pki;
pub mod process;
mod restart;
mod start;
mod stop;
mod upgrade;

use anyhow::{Context, Result};
use components::Layout;
use network::Network;
use process::Component;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

pub use chart_install::{cluster_values, wait_plugin_registered};
pub use node_images::{build_fastvirt_binaries, chart_sidecar_image};
pub use restart::{restart_apiserver, restart_kubelet};
pub use start::{UpOptions, up};
pub use stop::down;
pub use upgrade::{UpgradeOptions, upgrade};

/// The pod sandbox image containerd is told to use; built from `install-kube.sh`'s pause binary.
pub const PAUSE_IMAGE: &str = "localhost/fastvirt/pause:test";
/// busybox, for test pods and demos.
pub const TOOLBOX_IMAGE: &str = "localhost/fastvirt/toolbox:test";
/// The default tag of fastvirt's own images built from the working tree.
pub const IMAGE_TAG: &str = "dev";
/// Where the chart is installed.
pub const NAMESPACE: &str = "fastvirt-system";
/// The Helm release name.
pub const RELEASE: &str = "fastvirt";

/// What `up` started and changed, kept in `<workdir>/cluster.json` so `down` can undo it; written
/// after every step, so a half-started cluster is taken down too.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    pub id: String,
    pub workdir: PathBuf,
    pub run_dir: PathBuf,
    pub network: Network,
    pub kube_bin: PathBuf,
    pub kubelet_dir: PathBuf,
    pub node_name: String,
    pub hostname_label: String,
    pub cgroup_root: String,
    /// `up` made `/` a shared mount; `down` makes it private again.
    pub made_root_shared: bool,
    /// When `up` started (seconds since the epoch), to tell the cluster's leftovers from others'.
    pub started_at: u64,
    /// Where fastvirt's binaries came from (the extra nodes run fastvirt-csi from there).
    #[serde(default)]
    pub fastvirt_binaries: PathBuf,
    /// Nodes in the cluster: the kubelet's, and kubelet-less extra ones (`--nodes`).
    #[serde(default = "one")]
    pub nodes: u32,
    /// The tag of fastvirt's images the chart runs (`upgrade` imports new ones under another).
    #[serde(default = "default_image_tag")]
    pub image_tag: String,
    pub components: Vec<Component>,
}

impl State {
    /// A new cluster's names, derived from its work directory so two clusters never collide.
    pub fn new(workdir: &Path, kube_bin: &Path) -> Self {
        let digest = Sha256::digest(workdir.as_os_str().as_encoded_bytes());
        let id: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
        // 10.250.<slot>.0/30 per cluster; slot 0 avoided so the first octets read clearly.
        let slot = digest[4].max(1);
        Self {
            run_dir: PathBuf::from(format!("/run/fastvirt-{id}")),
            network: Network::for_id(&id, slot),
            kube_bin: kube_bin.to_owned(),
            kubelet_dir: workdir.join("kubelet"),
            node_name: "fastvirt-node-1".into(),
            hostname_label: "fastvirt-host-1".into(),
            cgroup_root: format!("fastvirt-{id}"),
            made_root_shared: false,
            started_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            components: Vec::new(),
            fastvirt_binaries: PathBuf::new(),
            nodes: 1,
            image_tag: IMAGE_TAG.to_owned(),
            workdir: workdir.to_owned(),
            id,
        }
    }

    pub fn path(workdir: &Path) -> PathBuf {
        workdir.join("cluster.json")
    }

    pub fn load(workdir: &Path) -> Result<Option<Self>> {
        let path = Self::path(workdir);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(
                serde_json::from_str(&text)
                    .with_context(|| format!("reading {}", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    pub fn save(&self) -> Result<()> {
        let path = Self::path(&self.workdir);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    pub fn layout(&self) -> Layout {
        Layout {
            workdir: self.workdir.clone(),
            run_dir: self.run_dir.clone(),
            kubelet_dir: self.kubelet_dir.clone(),
            node_ip: self.network.node_ip,
            node_name: self.node_name.clone(),
            hostname_label: self.hostname_label.clone(),
            cgroup_root: format!("/{}", self.cgroup_root),
            cni_network: format!("fastvirt-{}", self.id),
        }
    }

    pub fn kubectl(&self) -> kubectl::Kubectl {
        kubectl::Kubectl::new(&self.kube_bin, &self.layout().admin_kubeconfig())
    }

    pub fn component(&self, name: &str) -> Option<&Component> {
        self.components.iter().find(|c| c.name == name)
    }
}

fn one() -> u32 {
    1
}

fn default_image_tag() -> String {
    IMAGE_TAG.to_owned()
}

/// The directory `scripts/install-kube.sh` reports (its last line), running it if needed:
/// `FASTVIRT_KUBE_BIN` when set, else the script's answer (seconds once built).
pub fn kube_bin_dir(repo: &Path) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("FASTVIRT_KUBE_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let script = repo.join("scripts/install-kube.sh");
    let output = std::process::Command::new("bash")
        .arg(&script)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "{} failed ({})",
        script.display(),
        output.status
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let last = text
        .lines()
        .last()
        .context("install-kube.sh printed nothing")?;
    Ok(PathBuf::from(last.trim()))
}

/// The repository this binary was built from.
pub fn default_repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("."))
}
