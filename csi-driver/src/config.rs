//! Driver configuration from flags, environment variables and an optional YAML file.
//! Precedence: flag, then environment variable, then file, then default.

use crate::ids::PoolName;
use clap::{Parser, ValueEnum};
use fastvirt_api::pool_config::PoolConfigFile;
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const DEFAULT_ENDPOINT: &str = "unix:///var/lib/kubelet/plugins/block.fastvirt.io/csi.sock";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/fastvirt/csi";

/// Which CSI services this process serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Controller,
    Node,
    All,
}

impl Mode {
    pub fn serves_controller(self) -> bool {
        matches!(self, Mode::Controller | Mode::All)
    }

    pub fn serves_node(self) -> bool {
        matches!(self, Mode::Node | Mode::All)
    }
}

/// Which RPC grows a volume's backing file.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Expansion {
    /// ControllerExpandVolume grows it, NodeExpandVolume grows the filesystem: the usual split,
    /// for a single controller.
    #[default]
    Controller,
    /// NodeExpandVolume does both, and the controller service does not offer expansion. For
    /// distributed deployments, where every node runs an external-resizer: with no controller
    /// expansion the resizers only record the new size, and kubelet asks the one node that has
    /// the volume to grow it.
    Node,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// Command line of `fastvirt-csi`.
#[derive(Debug, Parser, Default)]
#[command(
    name = "fastvirt-csi",
    version,
    about = "fastvirt CSI driver: node-local block and filesystem volumes backed by loop devices with direct I/O"
)]
pub struct Cli {
    /// CSI endpoint, `unix:///path/to/csi.sock`.
    #[arg(long, env = "CSI_ENDPOINT")]
    pub endpoint: Option<String>,
    /// This node's name as Kubernetes knows it (defaults to the host name).
    #[arg(long, env = "FASTVIRT_NODE_ID")]
    pub node_id: Option<String>,
    /// Services to serve.
    #[arg(long, env = "FASTVIRT_MODE", value_enum)]
    pub mode: Option<Mode>,
    /// A pool as NAME=DIR; repeat for several pools (comma-separated in the environment variable).
    #[arg(long = "pool", env = "FASTVIRT_POOLS", value_delimiter = ',')]
    pub pools: Vec<String>,
    /// Directory for the driver's own state.
    #[arg(long, env = "FASTVIRT_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Maximum number of volumes this node accepts (0: no limit).
    #[arg(long, env = "FASTVIRT_MAX_VOLUMES_PER_NODE")]
    pub max_volumes_per_node: Option<i64>,
    /// Share of each pool's filesystem kept free: never offered as capacity nor preallocated (0-50).
    #[arg(long, env = "FASTVIRT_CAPACITY_RESERVE_PERCENT")]
    pub capacity_reserve_percent: Option<u8>,
    /// How much a pool may promise (volume capacities and snapshot sizes), in percent of its usable
    /// size, where its BlockPool does not say (1-10000; 100 never promises more than it holds).
    #[arg(long, env = "FASTVIRT_OVERCOMMIT_PERCENT")]
    pub overcommit_percent: Option<u32>,
    /// Which RPC grows volumes: `node` for one controller per node (distributed provisioning).
    #[arg(long, env = "FASTVIRT_EXPANSION", value_enum)]
    pub expansion: Option<Expansion>,
    /// Log format.
    #[arg(long, env = "FASTVIRT_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// YAML configuration file; flags and environment variables override its values.
    #[arg(long, env = "FASTVIRT_CONFIG")]
    pub config: Option<PathBuf>,
    /// The pool file fastvirt-operator renders from the BlockPools (a mounted ConfigMap); its
    /// pools that include this node are added to the others. A missing file means no pools yet.
    #[arg(long, env = "FASTVIRT_POOL_CONFIG")]
    pub pool_config: Option<PathBuf>,
    /// Register with kubelet directly (no node-driver-registrar sidecar): the CSI socket's path
    /// as kubelet sees it on the host.
    #[arg(long, env = "FASTVIRT_KUBELET_REGISTRATION_PATH")]
    pub kubelet_registration_path: Option<PathBuf>,
    /// kubelet's plugin registration directory as mounted in this process (with
    /// `--kubelet-registration-path`).
    #[arg(long, env = "FASTVIRT_REGISTRATION_DIR")]
    pub registration_dir: Option<PathBuf>,
    /// Serve `/healthz` on this port (no livenessprobe sidecar needed).
    #[arg(long, env = "FASTVIRT_HEALTH_PORT")]
    pub health_port: Option<u16>,
    /// Serve Prometheus metrics (`/metrics`) on this port.
    #[arg(long, env = "FASTVIRT_METRICS_PORT")]
    pub metrics_port: Option<u16>,
    /// kubelet's root directory as mounted in this process: the pods that use a volume are
    /// found from its `pods/` and `plugins/` directories, to put I/O limits in force.
    #[arg(long, env = "FASTVIRT_KUBELET_DIR")]
    pub kubelet_dir: Option<PathBuf>,
    /// Where the host's cgroup hierarchies are mounted in this process (the pods' cgroups get
    /// the I/O limits).
    #[arg(long, env = "FASTVIRT_CGROUP_ROOT")]
    pub cgroup_root: Option<PathBuf>,
    /// The host's `/proc` as mounted in this process: processes that hold a volume's device open
    /// (QEMU with a hot-plugged disk) have its I/O limits too.
    #[arg(long, env = "FASTVIRT_PROC_DIR")]
    pub proc_dir: Option<PathBuf>,
    /// Use the Kubernetes API (in-cluster, or `KUBECONFIG`): a controller records I/O limits for
    /// volumes it does not have on their PersistentVolume, and a node plugin applies those
    /// recorded for its own volumes.
    #[arg(long, env = "FASTVIRT_KUBE_API")]
    pub kube_api: Option<bool>,
}

/// The YAML configuration file.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileConfig {
    pub endpoint: Option<String>,
    pub node_id: Option<String>,
    pub mode: Option<Mode>,
    #[serde(default)]
    pub pools: Vec<FilePool>,
    pub state_dir: Option<PathBuf>,
    pub max_volumes_per_node: Option<i64>,
    pub capacity_reserve_percent: Option<u8>,
    pub overcommit_percent: Option<u32>,
    pub log_format: Option<LogFormat>,
    pub pool_config: Option<PathBuf>,
    pub expansion: Option<Expansion>,
    pub kubelet_registration_path: Option<PathBuf>,
    pub registration_dir: Option<PathBuf>,
    pub health_port: Option<u16>,
    pub metrics_port: Option<u16>,
    pub kubelet_dir: Option<PathBuf>,
    pub cgroup_root: Option<PathBuf>,
    pub proc_dir: Option<PathBuf>,
    pub kube_api: Option<bool>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FilePool {
    pub name: String,
    pub path: PathBuf,
}

/// A pool from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    pub name: PoolName,
    pub path: PathBuf,
    /// How much the pool may promise, in percent of its usable size; 100 when absent.
    pub overcommit_percent: Option<u32>,
}

/// The effective configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub socket_path: PathBuf,
    pub node_id: String,
    pub mode: Mode,
    /// Every pool of this node at start: the fixed ones and those of the pool file.
    pub pools: Vec<PoolConfig>,
    /// Pools from flags and the configuration file, which do not change while the plugin runs.
    pub fixed_pools: Vec<PoolConfig>,
    /// The operator's pool file, which the plugin follows while it runs.
    pub pool_file: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub max_volumes_per_node: i64,
    pub capacity_reserve_percent: u8,
    /// The overcommit percentage of pools whose configuration names none.
    pub overcommit_percent: u32,
    pub expansion: Expansion,
    pub log_format: LogFormat,
    /// The built-in kubelet registrar, when asked for.
    pub registration: Option<Registration>,
    /// Port of the built-in `/healthz`, when asked for.
    pub health_port: Option<u16>,
    /// Port of `/metrics`, when asked for.
    pub metrics_port: Option<u16>,
    /// kubelet's root directory.
    pub kubelet_dir: PathBuf,
    /// Where the cgroup hierarchies are mounted.
    pub cgroup_root: PathBuf,
    /// The host's `/proc`.
    pub proc_dir: PathBuf,
    /// Whether to use the Kubernetes API for I/O limits of volumes on other nodes.
    pub kube_api: bool,
}

/// Where the built-in registrar announces the plugin to kubelet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The CSI socket's host path, which kubelet dials.
    pub kubelet_endpoint: PathBuf,
    /// kubelet's `plugins_registry` directory as this process sees it.
    pub registration_dir: PathBuf,
}

pub const DEFAULT_KUBELET_DIR: &str = "/var/lib/kubelet";
pub const DEFAULT_CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Where kubelet's plugin registration directory is mounted in the node plugin's container.
pub const DEFAULT_REGISTRATION_DIR: &str = "/registration";

/// Default share of a pool kept free, so thin volumes never meet a full filesystem.
pub const DEFAULT_CAPACITY_RESERVE_PERCENT: u8 = 5;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid YAML for its type, or names a field the type does not know (the
    /// error names it and the closest known field).
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: fastvirt_api::strict_yaml::StrictError,
    },
    #[error("endpoint {0:?} must be unix:///absolute/path or an absolute path")]
    Endpoint(String),
    #[error("pool {0:?} must be NAME=DIR with an absolute DIR")]
    PoolSyntax(String),
    #[error(transparent)]
    PoolName(#[from] crate::ids::IdError),
    #[error("pool {0} is configured twice")]
    DuplicatePool(String),
    #[error("node mode needs at least one pool (--pool NAME=DIR)")]
    NoPools,
    #[error("node id must be 1-253 printable characters without '/', got {0:?}")]
    NodeId(String),
    #[error("max volumes per node must not be negative")]
    MaxVolumes,
    #[error("capacity reserve must be 0-50 percent, got {0}")]
    Reserve(u8),
    #[error("overcommit must be 1-10000 percent, got {0}")]
    Overcommit(u32),
    #[error("kubelet registration path {0:?} must be an absolute socket path")]
    RegistrationPath(PathBuf),
}

impl Cli {
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => load_file(path)?,
            None => FileConfig::default(),
        };
        let endpoint = self
            .endpoint
            .or(file.endpoint)
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        let node_id = match self.node_id.or(file.node_id) {
            Some(id) => id,
            None => nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        validate_node_id(&node_id)?;
        let mode = self.mode.or(file.mode).unwrap_or(Mode::All);
        let mut pools = if self.pools.is_empty() {
            file.pools
                .into_iter()
                .map(|p| {
                    Ok(PoolConfig {
                        name: PoolName::new(&p.name)?,
                        path: p.path,
                        overcommit_percent: None,
                    })
                })
                .collect::<Result<Vec<_>, ConfigError>>()?
        } else {
            self.pools
                .iter()
                .map(|spec| parse_pool(spec))
                .collect::<Result<Vec<_>, _>>()?
        };
        let pool_config = self.pool_config.or(file.pool_config);
        let fixed_pools = pools.clone();
        if let Some(path) = &pool_config {
            pools.extend(operator_pools(path, &node_id)?);
        }
        check_pools(&pools)?;
        // With an operator-rendered pool file, no pools is a state that passes: the plugin follows
        // the file, and picks up the first BlockPool that selects its node.
        if pools.is_empty() && mode.serves_node() && pool_config.is_none() {
            return Err(ConfigError::NoPools);
        }
        let max_volumes_per_node = self
            .max_volumes_per_node
            .or(file.max_volumes_per_node)
            .unwrap_or(0);
        if max_volumes_per_node < 0 {
            return Err(ConfigError::MaxVolumes);
        }
        let capacity_reserve_percent = self
            .capacity_reserve_percent
            .or(file.capacity_reserve_percent)
            .unwrap_or(DEFAULT_CAPACITY_RESERVE_PERCENT);
        if capacity_reserve_percent > 50 {
            return Err(ConfigError::Reserve(capacity_reserve_percent));
        }
        let overcommit_percent = self
            .overcommit_percent
            .or(file.overcommit_percent)
            .unwrap_or(crate::backend::overcommit::DEFAULT_PERCENT);
        if !(1..=10_000).contains(&overcommit_percent) {
            return Err(ConfigError::Overcommit(overcommit_percent));
        }
        let registration = match self
            .kubelet_registration_path
            .or(file.kubelet_registration_path)
        {
            Some(path) if !path.is_absolute() || path.file_name().is_none() => {
                return Err(ConfigError::RegistrationPath(path));
            }
            Some(kubelet_endpoint) => Some(Registration {
                kubelet_endpoint,
                registration_dir: self
                    .registration_dir
                    .or(file.registration_dir)
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_REGISTRATION_DIR)),
            }),
            None => None,
        };
        Ok(Config {
            fixed_pools,
            pool_file: pool_config,
            registration,
            health_port: self.health_port.or(file.health_port),
            metrics_port: self.metrics_port.or(file.metrics_port),
            kubelet_dir: self
                .kubelet_dir
                .or(file.kubelet_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_KUBELET_DIR)),
            cgroup_root: self
                .cgroup_root
                .or(file.cgroup_root)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CGROUP_ROOT)),
            proc_dir: self
                .proc_dir
                .or(file.proc_dir)
                .unwrap_or_else(|| PathBuf::from("/proc")),
            kube_api: self.kube_api.or(file.kube_api).unwrap_or(false),
            capacity_reserve_percent,
            overcommit_percent,
            expansion: self.expansion.or(file.expansion).unwrap_or_default(),
            socket_path: socket_path(&endpoint)?,
            node_id,
            mode,
            pools,
            state_dir: self
                .state_dir
                .or(file.state_dir)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            max_volumes_per_node,
            log_format: self
                .log_format
                .or(file.log_format)
                .unwrap_or(LogFormat::Text),
        })
    }
}

impl Config {
    /// Where the QoS enforcer looks.
    pub fn qos_paths(&self) -> crate::qos::QosPaths {
        crate::qos::QosPaths {
            kubelet_dir: self.kubelet_dir.clone(),
            cgroup_root: self.cgroup_root.clone(),
            proc_dir: self.proc_dir.clone(),
        }
    }

    /// This node's pools now: the fixed ones and those the pool file names for this node today.
    pub fn current_pools(&self) -> Result<Vec<PoolConfig>, ConfigError> {
        let mut pools = self.fixed_pools.clone();
        if let Some(path) = &self.pool_file {
            pools.extend(operator_pools(path, &self.node_id)?);
        }
        check_pools(&pools)?;
        Ok(pools)
    }
}

/// Pool directories are absolute and pool names unique.
fn check_pools(pools: &[PoolConfig]) -> Result<(), ConfigError> {
    for (i, pool) in pools.iter().enumerate() {
        if !pool.path.is_absolute() {
            return Err(ConfigError::PoolSyntax(format!(
                "{}={}",
                pool.name,
                pool.path.display()
            )));
        }
        if pools[..i].iter().any(|p| p.name == pool.name) {
            return Err(ConfigError::DuplicatePool(pool.name.to_string()));
        }
    }
    Ok(())
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    fastvirt_api::strict_yaml::from_str(&text).map_err(|source| ConfigError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// The pools of the operator's pool file that include `node`.
fn operator_pools(path: &Path, node: &str) -> Result<Vec<PoolConfig>, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    // Written by the operator: an unknown field is version skew between it and this plugin, and
    // fails loudly (with the closest known field) rather than dropping a pool's setting.
    let file: PoolConfigFile =
        fastvirt_api::strict_yaml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })?;
    file.for_node(node)
        .map(|entry| {
            Ok(PoolConfig {
                name: PoolName::new(&entry.name)?,
                path: PathBuf::from(&entry.path),
                overcommit_percent: entry.overcommit_percent,
            })
        })
        .collect()
}

fn parse_pool(spec: &str) -> Result<PoolConfig, ConfigError> {
    let (name, dir) = spec
        .split_once('=')
        .ok_or_else(|| ConfigError::PoolSyntax(spec.to_owned()))?;
    let path = PathBuf::from(dir);
    if !path.is_absolute() {
        return Err(ConfigError::PoolSyntax(spec.to_owned()));
    }
    Ok(PoolConfig {
        name: PoolName::new(name)?,
        path,
        overcommit_percent: None,
    })
}

/// The socket path of a `unix://` endpoint.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, ConfigError> {
    let path = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))
        .unwrap_or(endpoint);
    let path = PathBuf::from(path);
    if !path.is_absolute() || path.file_name().is_none() {
        return Err(ConfigError::Endpoint(endpoint.to_owned()));
    }
    Ok(path)
}

fn validate_node_id(id: &str) -> Result<(), ConfigError> {
    let ok =
        !id.is_empty() && id.len() <= 253 && id.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
    if ok {
        Ok(())
    } else {
        Err(ConfigError::NodeId(id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        let mut argv = vec!["fastvirt-csi"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap()
    }

    #[test]
    fn flags_only() {
        let config = cli(&[
            "--endpoint",
            "unix:///run/csi.sock",
            "--node-id",
            "n1",
            "--pool",
            "default=/pools/a",
            "--pool",
            "fast=/pools/b",
        ])
        .resolve()
        .unwrap();
        assert_eq!(config.socket_path, Path::new("/run/csi.sock"));
        assert_eq!(config.node_id, "n1");
        assert_eq!(config.mode, Mode::All);
        assert_eq!(config.pools.len(), 2);
        assert_eq!(config.pools[1].name.as_str(), "fast");
        assert_eq!(config.state_dir, Path::new(DEFAULT_STATE_DIR));
    }

    #[test]
    fn the_operator_pool_file_adds_the_pools_of_this_node() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pools.yaml");
        std::fs::write(
            &file,
            "pools:\n- name: everywhere\n  path: /pools/all\n- name: nvme\n  path: /pools/nvme\n  nodes: [n1, n2]\n- name: elsewhere\n  path: /pools/other\n  nodes: [n3]\n",
        )
        .unwrap();
        let config = cli(&["--node-id", "n1", "--pool-config", file.to_str().unwrap()])
            .resolve()
            .unwrap();
        let names: Vec<&str> = config.pools.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["everywhere", "nvme"]);
        assert_eq!(config.pools[1].path, Path::new("/pools/nvme"));
        assert_eq!(config.current_pools().unwrap(), config.pools);

        // The plugin follows the file: a pool that selects this node later is in the current pools.
        std::fs::write(
            &file,
            "pools:\n- name: nvme\n  path: /pools/nvme\n  nodes: [n1]\n- name: later\n  path: /pools/later\n",
        )
        .unwrap();
        let now: Vec<String> = config
            .current_pools()
            .unwrap()
            .iter()
            .map(|p| p.name.to_string())
            .collect();
        assert_eq!(now, ["nvme", "later"]);

        // No file yet (no BlockPool): the node plugin starts with no pools.
        let missing = dir.path().join("absent.yaml");
        let config = cli(&[
            "--node-id",
            "n1",
            "--pool-config",
            missing.to_str().unwrap(),
        ])
        .resolve()
        .unwrap();
        assert!(config.pools.is_empty());

        std::fs::write(&file, "pools: [{name: x, path: /x, extra: 1}]\n").unwrap();
        assert!(matches!(
            cli(&["--node-id", "n1", "--pool-config", file.to_str().unwrap()]).resolve(),
            Err(ConfigError::Parse { .. })
        ));
        std::fs::write(&file, "pools: [{name: x, path: /x}, {name: x, path: /y}]\n").unwrap();
        assert!(matches!(
            cli(&["--node-id", "n1", "--pool-config", file.to_str().unwrap()]).resolve(),
            Err(ConfigError::DuplicatePool(_))
        ));
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.yaml");
        std::fs::write(&file, "endpoint: unix:///from/file.sock\nnodeId: file-node\nmode: node\npools:\n  - name: default\n    path: /file/pool\nmaxVolumesPerNode: 50\ncapacityReservePercent: 10\nlogFormat: json\n").unwrap();
        let from_file = cli(&["--config", file.to_str().unwrap()])
            .resolve()
            .unwrap();
        assert_eq!(from_file.socket_path, Path::new("/from/file.sock"));
        assert_eq!(from_file.mode, Mode::Node);
        assert_eq!(
            from_file.pools,
            vec![PoolConfig {
                name: PoolName::new("default").unwrap(),
                path: "/file/pool".into(),
                overcommit_percent: None,
            }]
        );
        assert_eq!(from_file.max_volumes_per_node, 50);
        assert_eq!(from_file.capacity_reserve_percent, 10);
        assert_eq!(from_file.log_format, LogFormat::Json);
        let overridden = cli(&[
            "--config",
            file.to_str().unwrap(),
            "--node-id",
            "flag-node",
            "--pool",
            "x=/flag/pool",
            "--mode",
            "all",
        ])
        .resolve()
        .unwrap();
        assert_eq!(overridden.node_id, "flag-node");
        assert_eq!(overridden.mode, Mode::All);
        assert_eq!(overridden.pools[0].path, Path::new("/flag/pool"));
        assert_eq!(overridden.socket_path, Path::new("/from/file.sock"));
    }

    #[test]
    fn bad_configurations_are_explained() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.yaml");
        std::fs::write(&file, "nodeId: n\npoolz: []\n").unwrap();
        assert!(matches!(
            cli(&["--config", file.to_str().unwrap()]).resolve(),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            cli(&["--node-id", "n", "--pool", "nodir"]).resolve(),
            Err(ConfigError::PoolSyntax(_))
        ));
        assert!(matches!(
            cli(&["--node-id", "n", "--pool", "a=relative"]).resolve(),
            Err(ConfigError::PoolSyntax(_))
        ));
        assert!(matches!(
            cli(&["--node-id", "n", "--pool", "A=/x"]).resolve(),
            Err(ConfigError::PoolName(_))
        ));
        assert!(matches!(
            cli(&["--node-id", "n", "--pool", "a=/x", "--pool", "a=/y"]).resolve(),
            Err(ConfigError::DuplicatePool(_))
        ));
        assert!(matches!(
            cli(&["--node-id", "n"]).resolve(),
            Err(ConfigError::NoPools)
        ));
        assert!(
            cli(&["--node-id", "n", "--mode", "controller"])
                .resolve()
                .is_ok()
        );
        assert!(matches!(
            cli(&["--node-id", "a/b", "--pool", "a=/x"]).resolve(),
            Err(ConfigError::NodeId(_))
        ));
        assert!(matches!(
            cli(&[
                "--node-id",
                "n",
                "--pool",
                "a=/x",
                "--endpoint",
                "tcp://1.2.3.4:1"
            ])
            .resolve(),
            Err(ConfigError::Endpoint(_))
        ));
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            socket_path("unix:///a/b.sock").unwrap(),
            Path::new("/a/b.sock")
        );
        assert_eq!(
            socket_path("unix:/a/b.sock").unwrap(),
            Path::new("/a/b.sock")
        );
        assert_eq!(socket_path("/a/b.sock").unwrap(), Path::new("/a/b.sock"));
        assert!(socket_path("unix://relative.sock").is_err());
        assert!(socket_path("/").is_err());
    }
}
