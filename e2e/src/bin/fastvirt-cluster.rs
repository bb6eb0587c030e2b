//! `fastvirt-cluster up|down`: a throwaway single-machine Kubernetes cluster with fastvirt
//! installed from the working tree, for tests and for trying fastvirt out.

use anyhow::Result;
use clap::{Parser, Subcommand};
use fastvirt_e2e::cluster::{self, UpOptions};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "fastvirt-cluster",
    version,
    about = "A throwaway Kubernetes cluster on this machine with fastvirt installed (needs root)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start etcd, the control plane, containerd and a kubelet in a network namespace of their
    /// own, build and import fastvirt's images, and install the chart.
    Up {
        /// Where the cluster keeps its state, logs and pools.
        #[arg(long)]
        workdir: PathBuf,
        /// A directory with fastvirt-csi, fastvirt-operator and fastvirt-agent built already
        /// (default: `cargo build --release` in the repository).
        #[arg(long)]
        binaries: Option<PathBuf>,
        /// The fastvirt repository (default: the one this binary was built from).
        #[arg(long)]
        repo: Option<PathBuf>,
        /// The reference components (default: what scripts/install-kube.sh reports).
        #[arg(long, env = "FASTVIRT_KUBE_BIN")]
        kube_bin: Option<PathBuf>,
        /// More Helm values files for the chart.
        #[arg(long = "values")]
        values: Vec<PathBuf>,
        /// Start the cluster without installing fastvirt.
        #[arg(long)]
        no_chart: bool,
        /// Nodes in the cluster: one with the kubelet, the others kubelet-less (a Node object
        /// with its own fastvirt-csi and external-provisioner on its own pool `spread`), so
        /// scheduling across nodes can be tested.
        #[arg(long, default_value_t = 1)]
        nodes: u32,
        /// The tag fastvirt's images are imported under.
        #[arg(long, default_value = cluster::IMAGE_TAG)]
        image_tag: String,
    },
    /// Upgrade fastvirt in a running cluster as docs/install.md describes: import the new
    /// version's images under a new tag, apply its CRDs, `helm upgrade` to its chart.
    Upgrade {
        #[arg(long)]
        workdir: PathBuf,
        /// fastvirt-csi, fastvirt-operator and fastvirt-agent of the new version.
        #[arg(long)]
        binaries: PathBuf,
        /// The checkout with the new chart (default: the one this binary was built from).
        #[arg(long)]
        repo: Option<PathBuf>,
        /// The new images' tag; it must differ from the running one.
        #[arg(long)]
        image_tag: String,
    },
    /// Stop everything `up` started and undo its changes to the host.
    Down {
        #[arg(long)]
        workdir: PathBuf,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fastvirt-cluster: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Up {
            workdir,
            binaries,
            repo,
            kube_bin,
            values,
            no_chart,
            nodes,
            image_tag,
        } => {
            let state = cluster::up(&UpOptions {
                workdir,
                repo: repo.unwrap_or_else(cluster::default_repo),
                binaries,
                kube_bin,
                values,
                install_chart: !no_chart,
                nodes,
                image_tag,
            })?;
            println!("kubectl: {}", state.kube_bin.join("kubectl").display());
            println!("logs: {}", state.layout().logs().display());
            println!(
                "export KUBECONFIG={}",
                state.layout().admin_kubeconfig().display()
            );
            Ok(())
        }
        Command::Upgrade {
            workdir,
            binaries,
            repo,
            image_tag,
        } => {
            cluster::upgrade(&cluster::UpgradeOptions {
                workdir,
                repo: repo.unwrap_or_else(cluster::default_repo),
                binaries,
                image_tag,
            })?;
            println!("upgraded");
            Ok(())
        }
        Command::Down { workdir } => cluster::down(&workdir),
    }
}
