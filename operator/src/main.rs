//! `fastvirt-operator`: keeps the cluster objects behind BlockPools and NodeTuningProfiles right.

use clap::{Parser, Subcommand, ValueEnum};
use fastvirt_operator::context::Settings;
use fastvirt_operator::run::{RunOptions, run};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Parser)]
#[command(name = "fastvirt-operator", version, about)]
struct Cli {
    /// Log format.
    #[arg(
        long,
        env = "FASTVIRT_LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the controllers (the operator Deployment's command).
    Run(RunArgs),
    /// Check an installation: the CRDs are served and nodes registered the driver (the Helm test).
    CheckInstall {
        /// The CSI driver name to look for on the CSINodes.
        #[arg(long, default_value = fastvirt_operator::PROVISIONER)]
        driver: String,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Namespace of the pool ConfigMap, the node DaemonSet and the leader Lease.
    #[arg(long, env = "FASTVIRT_NAMESPACE")]
    namespace: String,
    /// Name of the ConfigMap the operator renders the pool configuration into.
    #[arg(
        long,
        env = "FASTVIRT_POOL_CONFIG_MAP",
        default_value = "fastvirt-pools"
    )]
    pool_config_map: String,
    /// The CSI node DaemonSet, owner of the pool ConfigMap.
    #[arg(long, env = "FASTVIRT_NODE_DAEMONSET")]
    node_daemonset: Option<String>,
    /// The directories the node plugins mount from the host (the chart's `node.poolHostDirs`),
    /// comma-separated: a BlockPool whose path is under none of them is refused. Unset: not
    /// checked.
    #[arg(long, env = "FASTVIRT_POOL_HOST_DIRS", value_delimiter = ',')]
    pool_host_dirs: Vec<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "FASTVIRT_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Elect a leader among replicas on a Lease.
    #[arg(long, env = "FASTVIRT_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Name of the leader Lease.
    #[arg(long, env = "FASTVIRT_LEASE_NAME", default_value = "fastvirt-operator")]
    lease_name: String,
    /// How long a lease lasts without renewal.
    #[arg(long, env = "FASTVIRT_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    lease_duration: Duration,
    /// This replica's name in the Lease (the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "fastvirt-operator".into())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    // One crypto provider for the API client's TLS, chosen here: builds that also enable another
    // leave rustls unable to choose, and it would panic on the first connection.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match cli.command {
        Command::Run(args) => {
            let options = RunOptions {
                settings: Settings {
                    namespace: args.namespace,
                    pool_config_map: args.pool_config_map,
                    node_daemonset: args.node_daemonset,
                    pool_host_dirs: args.pool_host_dirs,
                },
                metrics_addr: args.metrics_addr,
                leader_election: args.leader_election,
                lease_name: args.lease_name,
                lease_duration: args.lease_duration,
                identity: args.identity.unwrap_or_else(hostname),
            };
            match run(options).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => {
                    tracing::error!("{error:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckInstall { driver } => {
            let client = match kube::Client::try_default().await {
                Ok(client) => client,
                Err(error) => {
                    eprintln!("connecting to the Kubernetes API: {error}");
                    return ExitCode::FAILURE;
                }
            };
            match fastvirt_operator::check_install::check_install(&client, &driver).await {
                Ok(passed) => {
                    for line in passed {
                        println!("ok: {line}");
                    }
                    ExitCode::SUCCESS
                }
                Err(error) => {
                    eprintln!("failed: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
