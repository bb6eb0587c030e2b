//! Command-line interface: every option has an environment fallback for the DaemonSet.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "fastvirt-agent",
    version,
    about = "Applies, verifies, previews and restores KVM-host tuning; measures CPU congestion"
)]
pub struct Cli {
    #[arg(
        long,
        env = "FASTVIRT_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print what applying a profile would change, and what cannot change at runtime. Writes nothing.
    Plan(ProfileArgs),
    /// Apply a profile: journal the originals, write, read back; roll back this apply on failure.
    Apply(ProfileArgs),
    /// Put back every value the journal holds.
    Restore(RestoreArgs),
    /// Measure per-CPU utilisation and run-queue wait, live.
    Congestion(CongestionArgs),
    /// DaemonSet mode: apply the NodeTuningProfile selecting this node, re-check, report status.
    Run(RunArgs),
    /// Benchmark plan + apply, the re-check cost and memory on a synthetic 256-CPU host.
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub struct HostArgs {
    /// The host's root filesystem (the DaemonSet mounts it at /host).
    #[arg(long, env = "FASTVIRT_HOST_ROOT", default_value = "/")]
    pub host_root: PathBuf,
}

/// Where the node's kubelet keeps its state and reads its drop-ins.
#[derive(Debug, Args)]
pub struct KubeletArgs {
    /// The kubelet's root directory on the host, below --host-root (its CPU manager state file
    /// tells the policy the kubelet really runs).
    #[arg(long, env = "FASTVIRT_KUBELET_DIR", default_value = "/var/lib/kubelet")]
    pub kubelet_dir: String,
    /// The kubelet's drop-in directory on the host, below --host-root (its `--config-dir`), where
    /// a profile with `kubelet.manageDropIn` has the agent write `90-fastvirt.conf`.
    #[arg(
        long,
        env = "FASTVIRT_KUBELET_CONFIG_DIR",
        default_value = "/etc/kubernetes/kubelet.conf.d"
    )]
    pub kubelet_config_dir: String,
}

impl KubeletArgs {
    pub fn dirs(&self) -> crate::kubelet_drop_in::KubeletDirs {
        crate::kubelet_drop_in::KubeletDirs::new(&self.kubelet_dir, &self.kubelet_config_dir)
    }
}

#[derive(Debug, Args)]
pub struct ProfileArgs {
    /// A NodeTuningProfile manifest, or just its spec, in YAML or JSON.
    #[arg(long)]
    pub profile: PathBuf,
    #[command(flatten)]
    pub host: HostArgs,
    /// Refuse hugepage pools larger than this share of the host's memory.
    #[arg(long, env = "FASTVIRT_MAX_HUGEPAGE_PERCENT", default_value_t = 80, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_hugepage_percent: u32,
    /// KubeVirt's KSM handler manages KSM on this node: leave KSM alone.
    #[arg(long)]
    pub ksm_handled_by_kubevirt: bool,
    #[command(flatten)]
    pub kubelet: KubeletArgs,
    #[arg(long, value_enum, default_value = "table")]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub host: HostArgs,
    #[arg(long, value_enum, default_value = "table")]
    pub output: Output,
}

fn duration(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(seconds) if seconds > 0.0 => Ok(Duration::from_secs_f64(seconds)),
        Ok(_) => Err("the interval must be positive".to_owned()),
        Err(_) => humantime::parse_duration(text).map_err(|e| e.to_string()),
    }
}

#[derive(Debug, Args)]
pub struct CongestionArgs {
    /// Measurement interval: seconds, or a duration like 500ms.
    #[arg(long, default_value = "1", value_parser = duration)]
    pub interval: Duration,
    /// Stop after this many intervals (0: until interrupted).
    #[arg(long, default_value_t = 0)]
    pub count: u64,
    /// CPUs to mark as isolated (kernel list), to see their waits apart.
    #[arg(long, default_value = "")]
    pub isolated: String,
    #[command(flatten)]
    pub host: HostArgs,
    #[arg(long, value_enum, default_value = "table")]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The node this agent runs on.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    #[command(flatten)]
    pub host: HostArgs,
    /// How often to re-check the host and correct drift.
    #[arg(long, env = "FASTVIRT_RECHECK_INTERVAL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Where /metrics and /healthz are served.
    #[arg(
        long,
        env = "FASTVIRT_AGENT_METRICS_ADDR",
        default_value = "0.0.0.0:9810"
    )]
    pub metrics_addr: SocketAddr,
    /// Refuse hugepage pools larger than this share of the host's memory.
    #[arg(long, env = "FASTVIRT_MAX_HUGEPAGE_PERCENT", default_value_t = 80, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_hugepage_percent: u32,
    #[command(flatten)]
    pub kubelet: KubeletArgs,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Plan + apply runs (each on a fresh tree); the median is reported.
    #[arg(long, default_value_t = 11)]
    pub runs: usize,
    /// Steady-state re-checks to measure CPU time over.
    #[arg(long, default_value_t = 30)]
    pub rechecks: u32,
    /// Re-check interval the CPU share is computed for.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Write the results section into this Markdown file (between the agent's markers).
    #[arg(long)]
    pub write_docs: Option<PathBuf>,
}
