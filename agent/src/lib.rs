//! fastvirt node agent: applies, verifies, previews and restores KVM-host tuning and measures CPU
//! congestion. Planning is pure ([`plan`]); everything that touches the host goes through
//! [`hostfs::HostFs`], so the same engine runs on a real node and on a fixture tree.

pub mod apply;
pub mod bench;
pub mod cli;
pub mod commands;
pub mod congestion;
pub mod cpumask;
pub mod fixture;
pub mod host;
pub mod hostfs;
pub mod interrupts;
pub mod journal;
pub mod kubelet;
pub mod kubelet_drop_in;
pub mod metrics;
pub mod node_labels;
pub mod plan;
pub mod rbac;
pub mod reconcile;
pub mod render;
pub mod runner;
pub mod schedstat;
pub mod server;
pub mod status_lines;
pub mod sysctl_files;
pub mod write_allowlist;
