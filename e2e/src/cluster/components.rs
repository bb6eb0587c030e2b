//! Command lines and configuration files of the cluster's components: etcd, the control plane,
//! containerd with its CNI bridge, and the kubelet. Pure functions of the [`Layout`].

use super::network::{API_PORT, KUBERNETES_SERVICE_IP, POD_CIDR, SERVICE_CIDR};
use super::pki::Pki;
use std::ffi::OsString;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Where everything of one cluster lives.
#[derive(Debug, Clone)]
pub struct Layout {
    pub workdir: PathBuf,
    /// Short paths for unix sockets (their length is limited): /run/fastvirt-<id>.
    pub run_dir: PathBuf,
    pub kubelet_dir: PathBuf,
    pub node_ip: Ipv4Addr,
    pub node_name: String,
    /// The node's `kubernetes.io/hostname` label: deliberately not the node name, as on clouds
    /// where the two differ.
    pub hostname_label: String,
    /// The cgroup (in every hierarchy) that holds the pods.
    pub cgroup_root: String,
    /// The CNI network's name.
    pub cni_network: String,
}

impl Layout {
    pub fn pki(&self) -> Pki {
        Pki {
            dir: self.workdir.join("pki"),
        }
    }

    pub fn logs(&self) -> PathBuf {
        self.workdir.join("logs")
    }

    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.workdir.join("admin.kubeconfig")
    }

    pub fn kubeconfig(&self, who: &str) -> PathBuf {
        self.workdir.join(format!("{who}.kubeconfig"))
    }

    pub fn api_server(&self) -> String {
        format!("https://{}:{API_PORT}", self.node_ip)
    }

    pub fn etcd_url(&self) -> String {
        format!("http://{}:2379", self.node_ip)
    }

    pub fn containerd_socket(&self) -> PathBuf {
        self.run_dir.join("containerd.sock")
    }

    pub fn containerd_config(&self) -> PathBuf {
        self.workdir.join("containerd/config.toml")
    }

    pub fn cni_conf_dir(&self) -> PathBuf {
        self.workdir.join("cni/net.d")
    }

    pub fn pool_host_dir(&self) -> PathBuf {
        self.workdir.join("pools")
    }

    /// The kubelet's drop-in directory (`--config-dir`), where the agent may write its drop-in.
    pub fn kubelet_config_dir(&self) -> PathBuf {
        self.workdir.join("kubelet-config.d")
    }

    pub fn csi_state_dir(&self) -> PathBuf {
        self.workdir.join("csi-state")
    }

    pub fn images_dir(&self) -> PathBuf {
        self.workdir.join("images")
    }

    /// The cluster's data: etcd, images and their snapshots, pools, the kubelet's and the
    /// plugins' state. `down` removes it (it is gigabytes, and no later `up` reuses it);
    /// logs, pod logs and the PKI stay for a look after the fact.
    pub fn data_dirs(&self) -> Vec<PathBuf> {
        [
            "kubelet-config.d",
            "etcd",
            "containerd",
            "kubelet",
            "pools",
            "nodes",
            "csi-state",
            "images",
            "cni",
        ]
        .iter()
        .map(|name| self.workdir.join(name))
        .collect()
    }

    /// What `up` removes before it starts: everything of an earlier cluster.
    pub fn stale_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = self.data_dirs();
        dirs.extend(["pod-logs", "pki", "logs"].map(|name| self.workdir.join(name)));
        dirs
    }
}

fn args(items: &[String]) -> Vec<OsString> {
    items.iter().map(OsString::from).collect()
}

pub fn etcd_args(layout: &Layout) -> Vec<OsString> {
    let url = layout.etcd_url();
    args(&[
        format!("--data-dir={}", layout.workdir.join("etcd").display()),
        format!("--listen-client-urls={url}"),
        format!("--advertise-client-urls={url}"),
        format!("--listen-peer-urls=http://{}:2380", layout.node_ip),
        // A throwaway cluster: losing the last writes in a crash costs nothing, fsyncs cost time.
        "--unsafe-no-fsync".into(),
        "--log-level=warn".into(),
    ])
}

/// Pod Security admission enforcing `baseline` everywhere by default, as hardened clusters do:
/// the chart must label its namespace `privileged` to run the node plugin and agent.
pub fn admission_config() -> String {
    r#"apiVersion: apiserver.config.k8s.io/v1
kind: AdmissionConfiguration
plugins:
  - name: PodSecurity
    configuration:
      apiVersion: pod-security.admission.config.k8s.io/v1
      kind: PodSecurityConfiguration
      defaults:
        enforce: baseline
        enforce-version: latest
        warn: baseline
        warn-version: latest
      exemptions:
        usernames: []
        runtimeClasses: []
        namespaces: []
"#
    .to_owned()
}

pub fn apiserver_args(layout: &Layout) -> Vec<OsString> {
    let pki = layout.pki();
    let server = pki.files("apiserver");
    let kubelet_client = pki.files("apiserver-kubelet-client");
    let ip = layout.node_ip;
    args(&[
        format!("--etcd-servers={}", layout.etcd_url()),
        format!("--bind-address={ip}"),
        format!("--advertise-address={ip}"),
        format!("--secure-port={API_PORT}"),
        format!("--tls-cert-file={}", server.cert.display()),
        format!("--tls-private-key-file={}", server.key.display()),
        format!("--client-ca-file={}", pki.ca_cert().display()),
        "--authorization-mode=Node,RBAC".into(),
        // The node plugin and agent are privileged pods.
        "--allow-privileged=true".into(),
        "--enable-admission-plugins=NodeRestriction".into(),
        format!(
            "--admission-control-config-file={}",
            layout.workdir.join("admission.yaml").display()
        ),
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
        format!("--service-account-key-file={}", pki.sa_pub().display()),
        format!(
            "--service-account-signing-key-file={}",
            pki.sa_key().display()
        ),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        format!(
            "--kubelet-client-certificate={}",
            kubelet_client.cert.display()
        ),
        format!("--kubelet-client-key={}", kubelet_client.key.display()),
        format!(
            "--kubelet-certificate-authority={}",
            pki.ca_cert().display()
        ),
        "--kubelet-preferred-address-types=InternalIP".into(),
        "--profiling=false".into(),
        "--v=1".into(),
    ])
}

/// `kubelet_less_nodes`: extra nodes send no heartbeats, so the node lifecycle controller, which
/// would taint them unreachable and evict their pods, does not run.
pub fn controller_manager_args(layout: &Layout, kubelet_less_nodes: bool) -> Vec<OsString> {
    let pki = layout.pki();
    let kubeconfig = layout.kubeconfig("controller-manager");
    args(&[
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--authentication-kubeconfig={}", kubeconfig.display()),
        format!("--authorization-kubeconfig={}", kubeconfig.display()),
        format!(
            "--service-account-private-key-file={}",
            pki.sa_key().display()
        ),
        format!("--root-ca-file={}", pki.ca_cert().display()),
        "--use-service-account-credentials=true".into(),
        if kubelet_less_nodes {
            "--controllers=*,-node-lifecycle-controller".into()
        } else {
            "--controllers=*".into()
        },
        "--leader-elect=false".into(),
        "--bind-address=127.0.0.1".into(),
        format!("--service-cluster-ip-range={SERVICE_CIDR}"),
        "--v=1".into(),
    ])
}

pub fn scheduler_args(layout: &Layout) -> Vec<OsString> {
    let kubeconfig = layout.kubeconfig("scheduler");
    args(&[
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--authentication-kubeconfig={}", kubeconfig.display()),
        format!("--authorization-kubeconfig={}", kubeconfig.display()),
        "--leader-elect=false".into(),
        "--bind-address=127.0.0.1".into(),
        "--v=1".into(),
    ])
}

/// containerd with its own root, state and socket, the pause image we import as sandbox, and our
/// CNI configuration directory. No `oom_score`: containerd keeps the score it starts with.
pub fn containerd_config(layout: &Layout, cni_bin_dir: &str) -> String {
    let root = layout.workdir.join("containerd/root");
    let state = layout.run_dir.join("containerd-state");
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"

[grpc]
  address = "{socket}"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  enable_selinux = false
  # Lowering an OOM score needs CAP_SYS_RESOURCE, which some hosts (sandboxes, nested
  # containers) withhold; runc then fails every pod ("can't get final child's PID"). Clamping
  # to containerd's own score keeps every container at or above it.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin_dir}"
    conf_dir = "{cni_conf}"
"#,
        root = root.display(),
        state = state.display(),
        socket = layout.containerd_socket().display(),
        pause = super::PAUSE_IMAGE,
        cni_conf = layout.cni_conf_dir().display(),
    )
}

/// A bridge in the cluster's namespace with host-local addresses; no masquerading, since nothing
/// is meant to leave the namespace.
pub fn cni_config(layout: &Layout) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": layout.cni_network,
        "plugins": [{
            "type": "bridge",
            "bridge": "fvcni0",
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "dataDir": layout.workdir.join("cni/ipam"),
                "ranges": [[{"subnet": POD_CIDR}]],
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        }],
    })
    .to_string()
}

pub fn kubelet_config(layout: &Layout) -> String {
    let pki = layout.pki();
    let serving = pki.files("kubelet-serving");
    serde_json::json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": layout.node_ip.to_string(),
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "tlsCertFile": serving.cert,
        "tlsPrivateKeyFile": serving.key,
        "authentication": {
            "anonymous": {"enabled": false},
            "webhook": {"enabled": true},
            "x509": {"clientCAFile": pki.ca_cert()},
        },
        "authorization": {"mode": "Webhook"},
        // Debian's containerd 1.6 cannot tell kubelet its cgroup driver; both use cgroupfs.
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": layout.cgroup_root,
        // This machine has cgroup v1 (with a cgroup2 mount); kubelet 1.35+ refuses it by default.
        "failCgroupV1": false,
        "failSwapOn": false,
        "containerRuntimeEndpoint": format!("unix://{}", layout.containerd_socket().display()),
        "clusterDomain": "cluster.local",
        "clusterDNS": [],
        "resolvConf": "/etc/resolv.conf",
        // The images are imported by hand: never garbage-collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": false,
        // A changed ConfigMap reaches a pod's volume at the pod's next sync (1 min by default):
        // the node plugin follows its pool file, and a shorter period keeps the tests short.
        "syncFrequency": "10s",
        // A container killed on purpose (the chaos test kills the node plugin several times) comes
        // back within seconds instead of after a crash-loop back-off that doubles up to 5 min.
        "crashLoopBackOff": {"maxContainerRestartPeriod": "2s"},
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "rotateCertificates": false,
        "serverTLSBootstrap": false,
        "enableControllerAttachDetach": true,
        "kubeletCgroups": "",
        "localStorageCapacityIsolation": true,
        "shutdownGracePeriod": "0s",
        // Pod logs under the work directory, not the host's /var/log/pods, so `down` leaves
        // nothing behind.
        "podLogsDir": layout.workdir.join("pod-logs"),
    })
    .to_string()
}

pub fn kubelet_args(layout: &Layout) -> Vec<OsString> {
    args(&[
        format!(
            "--config={}",
            layout.workdir.join("kubelet/config.json").display()
        ),
        format!("--config-dir={}", layout.kubelet_config_dir().display()),
        format!("--kubeconfig={}", layout.kubeconfig("kubelet").display()),
        format!("--root-dir={}", layout.kubelet_dir.display()),
        format!("--hostname-override={}", layout.node_name),
        format!("--node-ip={}", layout.node_ip),
        format!(
            "--node-labels=kubernetes.io/hostname={}",
            layout.hostname_label
        ),
        "--v=2".into(),
    ])
}

/// The kubernetes Service address, which the NAT rules translate to the API server.
pub fn kubernetes_service() -> String {
    format!("{KUBERNETES_SERVICE_IP}")
}
