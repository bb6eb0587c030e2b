//! The operator's pure core: building the objects a `BlockPool` stands for, deciding which
//! `NodeTuningProfile` applies to a node, and aggregating `TunedNode` reports into profile status.
//! The reconcilers (read → validate → build → server-side apply → status) call these functions;
//! keeping them free of I/O makes every decision testable with YAML fixtures.

pub mod apply;
pub mod capacity;
pub mod check_install;
pub mod context;
pub mod foreign;
pub mod kubevirt;
pub mod leader;
pub mod low_space;
pub mod metrics;
pub mod pool_config;
pub mod pool_controller;
pub mod pool_objects;
pub mod profile_controller;
pub mod profile_status;
pub mod rbac;
pub mod run;
pub mod storage_class;
pub mod unreadable;

/// Field manager and `app.kubernetes.io/managed-by` value of everything the operator writes.
pub const MANAGER: &str = "fastvirt-operator";
/// The CSI driver's name, the provisioner of every StorageClass the operator builds.
pub const PROVISIONER: &str = "block.fastvirt.io";
