//! fastvirt-csi: a CSI driver for fast node-local volumes, raw block for VMs or ext4/xfs for pods.

pub mod atomic_file;
pub mod backend;
pub mod capacity;
pub mod config;
pub mod filesystem;
pub mod grpc_authority;
pub mod http_endpoint;
pub mod ids;
mod ioctl;
pub mod local;
pub mod locks;
pub mod loopdev;
pub mod metrics;
pub mod mount_options;
pub mod mounter;
pub mod mountinfo;
pub mod pagination;
pub mod pool_follower;
pub mod pool_set;
pub mod qos;
pub mod registration;
pub mod server;
pub mod service;
pub mod tools;

/// Code generated from `proto/csi.proto` (CSI v1.12.0 wire contract).
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("csi.v1");
}

/// Code generated from `proto/pluginregistration.proto` (kubelet's plugin registration API).
pub mod pluginregistration {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("pluginregistration");
}

/// The CSI plugin name.
pub const DRIVER_NAME: &str = "block.fastvirt.io";
/// Topology key that pins a volume to the node that holds it.
pub const TOPOLOGY_NODE_KEY: &str = "topology.block.fastvirt.io/node";
/// Version reported by GetPluginInfo.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
