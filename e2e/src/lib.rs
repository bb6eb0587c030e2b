//! fastvirt's end-to-end tools: the benchmark behind `fastvirt-bench` and the VM guest harness that
//! proves the data path the way KubeVirt uses it.

pub mod chart;
pub mod cluster;
pub mod datapath;
pub mod fio;
pub mod kubelet;
pub mod latency;
pub mod layouts;
pub mod lifecycle;
pub mod operator_bench;
pub mod pgbench;
pub mod qos_bench;
pub mod report;
pub mod snapshots;
pub mod stats;
pub mod vm;
