//! The kubelet settings a profile implies, as a drop-in file of the kubelet's configuration
//! directory (its `--config-dir`, merged over its config file in file-name order): the static CPU
//! manager with the profile's reserved CPUs, the topology manager policy and scope, and where that
//! policy aligns to NUMA nodes (`restricted`, `single-numa-node`) the static memory manager with
//! the kubelet's own memory reservation on NUMA node 0. The agent writes the file and never
//! restarts the kubelet. Until the kubelet runs with it, the TunedNode says
//! `KubeletRestartRequired` with what differs, and what a restart would break: a kubelet refuses
//! to start when its CPU or memory manager state file was written under another policy.

use crate::hostfs::HostFs;
use fastvirt_api::cpuset::CpuSet;
use fastvirt_api::kubelet_settings::{KubeletSettings, TopologyManagerPolicy};
use fastvirt_api::quantity;
use k8s_openapi::api::core::v1::Node;
use std::time::{Duration, SystemTime};

/// The drop-in's file name: late in the directory's order, so it wins over the usual ones.
pub const FILE_NAME: &str = "90-fastvirt.conf";

/// Where the kubelet keeps its files and reads its drop-ins, relative to the host root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletDirs {
    /// Its root directory (`--root-dir`), which holds `cpu_manager_state`.
    pub root: String,
    /// Its drop-in directory (`--config-dir`).
    pub config_dir: String,
}

impl KubeletDirs {
    pub fn new(root: &str, config_dir: &str) -> Self {
        Self {
            root: root.trim_matches('/').to_owned(),
            config_dir: config_dir.trim_matches('/').to_owned(),
        }
    }

    /// The drop-in, relative to the host root.
    pub fn drop_in(&self) -> String {
        format!("{}/{FILE_NAME}", self.config_dir)
    }

    fn cpu_manager_state(&self) -> String {
        format!("{}/cpu_manager_state", self.root)
    }

    fn memory_manager_state(&self) -> String {
        format!("{}/memory_manager_state", self.root)
    }
}

/// Whether the drop-in turns on the static memory manager: where the topology manager aligns
/// to NUMA nodes, as KubeVirt's NUMA passthrough needs (OpenShift's tuning does the same).
pub fn aligns_memory(settings: &KubeletSettings) -> bool {
    matches!(
        settings.topology_manager_policy,
        Some(TopologyManagerPolicy::Restricted | TopologyManagerPolicy::SingleNumaNode)
    )
}

/// The memory the kubelet reserves (kube-reserved + system-reserved + the hard eviction
/// threshold), which the static memory manager's `reservedMemory` must add up to or the kubelet
/// refuses to start. Read from its Node: capacity minus allocatable, less the hugepages the
/// kubelet also takes out of allocatable memory. `None` when the Node does not say.
pub fn reserved_memory(node: &Node) -> Option<u64> {
    let status = node.status.as_ref()?;
    let capacity = status.capacity.as_ref()?;
    let allocatable = status.allocatable.as_ref()?;
    let bytes =
        |q: &k8s_openapi::apimachinery::pkg::api::resource::Quantity| quantity::bytes(&q.0).ok();
    let total = bytes(capacity.get("memory")?)?;
    let free = bytes(allocatable.get("memory")?)?;
    let hugepages: u64 = capacity
        .iter()
        .filter(|(name, _)| name.starts_with("hugepages-"))
        .filter_map(|(_, q)| bytes(q))
        .sum();
    total.checked_sub(free)?.checked_sub(hugepages)
}

/// A byte count as a Kubernetes quantity, in MiB where it is whole MiB.
fn memory_quantity(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{}Mi", bytes >> 20)
    } else {
        bytes.to_string()
    }
}

/// The drop-in for `settings` with the profile's `reserved` CPUs and the kubelet's
/// `reserved_memory` (see [`reserved_memory`]; without it the memory manager is left out): a
/// KubeletConfiguration in JSON (which the kubelet reads as YAML), keys in a fixed order so that
/// an unchanged profile rewrites nothing.
pub fn render(
    settings: &KubeletSettings,
    reserved: &CpuSet,
    reserved_memory: Option<u64>,
) -> String {
    let mut config = serde_json::Map::new();
    config.insert("apiVersion".into(), "kubelet.config.k8s.io/v1beta1".into());
    config.insert("kind".into(), "KubeletConfiguration".into());
    config.insert("cpuManagerPolicy".into(), "static".into());
    if !reserved.is_empty() {
        config.insert("reservedSystemCPUs".into(), reserved.to_string().into());
    }
    if let Some(policy) = settings.topology_manager_policy {
        config.insert("topologyManagerPolicy".into(), policy.as_str().into());
    }
    if let Some(scope) = settings.topology_manager_scope {
        config.insert("topologyManagerScope".into(), scope.as_str().into());
    }
    if let Some(memory) = reserved_memory.filter(|_| aligns_memory(settings)) {
        config.insert("memoryManagerPolicy".into(), "Static".into());
        config.insert(
            "reservedMemory".into(),
            serde_json::json!([{"numaNode": 0, "limits": {"memory": memory_quantity(memory)}}]),
        );
    }
    let mut text =
        serde_json::to_string_pretty(&serde_json::Value::Object(config)).unwrap_or_default();
    text.push('\n');
    text
}

/// What the running kubelet shows of itself on the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunningKubelet {
    /// `policyName` of its CPU manager state file, written with the policy it runs.
    pub cpu_manager_policy: Option<String>,
    /// `policyName` of its memory manager state file (`None` or `Static`).
    pub memory_manager_policy: Option<String>,
    /// When its process started, if one is found.
    pub started: Option<SystemTime>,
}

/// The running kubelet's CPU manager policy and start time, read from the host.
pub fn running(fs: &dyn HostFs, dirs: &KubeletDirs) -> RunningKubelet {
    RunningKubelet {
        cpu_manager_policy: state_policy(fs, &dirs.cpu_manager_state()),
        memory_manager_policy: state_policy(fs, &dirs.memory_manager_state()),
        started: kubelet_started(fs),
    }
}

/// The `policyName` of the kubelet's CPU manager state file (`<root>/cpu_manager_state`), which
/// the kubelet writes with the policy it really runs; `None` without one.
pub fn cpu_manager_policy(fs: &dyn HostFs, dirs: &KubeletDirs) -> Option<String> {
    state_policy(fs, &dirs.cpu_manager_state())
}

/// The `policyName` of a kubelet checkpoint file (`cpu_manager_state`, `memory_manager_state`).
fn state_policy(fs: &dyn HostFs, path: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct State {
        policy_name: String,
    }
    let text = fs.read(path).ok()?;
    serde_json::from_str::<State>(&text)
        .ok()
        .map(|state| state.policy_name)
}

/// The drop-in as the plan sees it: where it goes and what it holds now (`None`: absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropInFile {
    pub path: String,
    pub current: Option<String>,
}

impl DropInFile {
    pub fn read(fs: &dyn HostFs, dirs: &KubeletDirs) -> Self {
        let path = dirs.drop_in();
        let current = fs.read(&path).ok();
        Self { path, current }
    }
}

/// The start time of the host's `kubelet` process: its `starttime` (clock ticks after boot, field
/// 22 of `/proc/<pid>/stat`) on the boot-time clock, turned into wall-clock time with the offset
/// between the two clocks now. Precise to a clock tick (10 ms), where `/proc/stat`'s whole-second
/// `btime` could put a kubelet restarted right after a write before it.
fn kubelet_started(fs: &dyn HostFs) -> Option<SystemTime> {
    use nix::time::{ClockId, clock_gettime};
    let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|t| *t > 0)?;
    let since_boot = Duration::from(clock_gettime(ClockId::CLOCK_BOOTTIME).ok()?);
    let boot = SystemTime::now().checked_sub(since_boot)?;
    fs.list("proc")
        .into_iter()
        .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| fs.read_trimmed(&format!("proc/{pid}/comm")).as_deref() == Some("kubelet"))
        .filter_map(|pid| {
            let stat = fs.read(&format!("proc/{pid}/stat")).ok()?;
            // Fields after the command, which may itself hold spaces and parentheses.
            let rest = stat.rsplit_once(") ")?.1;
            let start_ticks: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
            let after_boot =
                Duration::from_nanos(start_ticks.checked_mul(1_000_000_000)? / ticks_per_second);
            boot.checked_add(after_boot)
        })
        .max()
}

/// What the kubelet runs that the drop-in changes, and what a restart would break; both empty when
/// the kubelet runs with the drop-in. `written`: when the drop-in was last written;
/// `static_memory`: whether it turns on the static memory manager.
pub fn differences(
    dirs: &KubeletDirs,
    written: Option<SystemTime>,
    static_memory: bool,
    running: &RunningKubelet,
) -> (Vec<String>, Vec<String>) {
    let path = dirs.drop_in();
    let mut differing = Vec::new();
    let mut hazards = Vec::new();
    let mut compare = |setting: &str, wanted: &str, state: &Option<String>, file: String| {
        let policy = state.as_deref().unwrap_or("none");
        if !policy.eq_ignore_ascii_case(wanted) {
            differing.push(format!(
                "the kubelet runs {setting} {policy}; /{path} asks for {wanted}"
            ));
            if state.is_some() {
                hazards.push(format!(
                    "a kubelet restarted with {setting} {wanted} refuses to start while /{file} records policy {policy}: drain the node and remove that file before the restart"
                ));
            }
        }
    };
    compare(
        "cpuManagerPolicy",
        "static",
        &running.cpu_manager_policy,
        dirs.cpu_manager_state(),
    );
    if static_memory {
        compare(
            "memoryManagerPolicy",
            "Static",
            &running.memory_manager_policy,
            dirs.memory_manager_state(),
        );
    }
    match (written, running.started) {
        (Some(written), Some(started)) if written > started => differing.push(format!(
            "the kubelet started before /{path} was written: restart it to read the file"
        )),
        (_, None) => differing.push("no running kubelet found on this host".to_owned()),
        _ => {}
    }
    (differing, hazards)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastvirt_api::kubelet_settings::{TopologyManagerPolicy, TopologyManagerScope};

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn dirs() -> KubeletDirs {
        KubeletDirs::new("/var/lib/kubelet", "/etc/kubernetes/kubelet.conf.d")
    }

    #[test]
    fn the_drop_in_sets_the_static_cpu_manager_and_the_topology_manager() {
        let settings = KubeletSettings {
            manage_drop_in: true,
            topology_manager_policy: Some(TopologyManagerPolicy::SingleNumaNode),
            topology_manager_scope: Some(TopologyManagerScope::Pod),
        };
        let reserved = CpuSet::parse("0,32").unwrap();
        let text = render(&settings, &reserved, Some(612 << 20));
        let config: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            config,
            serde_json::json!({
                "apiVersion": "kubelet.config.k8s.io/v1beta1",
                "kind": "KubeletConfiguration",
                "cpuManagerPolicy": "static",
                "reservedSystemCPUs": "0,32",
                "topologyManagerPolicy": "single-numa-node",
                "topologyManagerScope": "pod",
                "memoryManagerPolicy": "Static",
                "reservedMemory": [{"numaNode": 0, "limits": {"memory": "612Mi"}}],
            })
        );
        assert_eq!(render(&settings, &reserved, Some(612 << 20)), text);
        // Without the kubelet's reservation, no memory manager (a wrong sum stops the kubelet).
        let without: serde_json::Value =
            serde_json::from_str(&render(&settings, &reserved, None)).unwrap();
        assert!(without.get("memoryManagerPolicy").is_none(), "{without}");
        // best-effort does not align memory.
        let best_effort = KubeletSettings {
            topology_manager_policy: Some(TopologyManagerPolicy::BestEffort),
            ..settings.clone()
        };
        assert!(!render(&best_effort, &reserved, Some(1 << 20)).contains("memoryManager"));
        assert_eq!(memory_quantity(100 << 20), "100Mi");
        assert_eq!(memory_quantity(1000), "1000");
        assert_eq!(
            dirs().drop_in(),
            "etc/kubernetes/kubelet.conf.d/90-fastvirt.conf"
        );
    }

    #[test]
    fn a_kubelet_on_another_policy_needs_a_restart_and_its_state_file_removed() {
        let running = RunningKubelet {
            cpu_manager_policy: Some("none".into()),
            memory_manager_policy: Some("None".into()),
            started: Some(at(100)),
        };
        let (differing, hazards) = differences(&dirs(), Some(at(200)), true, &running);
        assert_eq!(differing.len(), 3, "{differing:?}");
        assert!(differing[0].contains("runs cpuManagerPolicy none"));
        assert!(differing[1].contains("runs memoryManagerPolicy None"));
        assert!(differing[2].contains("started before"));
        assert_eq!(hazards.len(), 2);
        assert!(
            hazards[0].contains("/var/lib/kubelet/cpu_manager_state records policy none"),
            "{hazards:?}"
        );
        assert!(
            hazards[1].contains("/var/lib/kubelet/memory_manager_state records policy None"),
            "{hazards:?}"
        );
        // Without the static memory manager in the drop-in, its state does not matter.
        assert_eq!(
            differences(&dirs(), Some(at(200)), false, &running).0.len(),
            2
        );
    }

    #[test]
    fn a_kubelet_started_after_the_file_with_the_static_policy_is_up_to_date() {
        let running = RunningKubelet {
            cpu_manager_policy: Some("static".into()),
            memory_manager_policy: Some("Static".into()),
            started: Some(at(300)),
        };
        assert_eq!(
            differences(&dirs(), Some(at(200)), true, &running),
            (vec![], vec![])
        );
    }

    #[test]
    fn the_reservation_is_what_the_node_keeps_back_less_hugepages() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n"},
            "status": {
                "capacity": {"memory": "16384Mi", "hugepages-2Mi": "512Mi", "hugepages-1Gi": "1Gi"},
                "allocatable": {"memory": "14236Mi", "hugepages-2Mi": "512Mi", "hugepages-1Gi": "1Gi"}
            }
        }))
        .unwrap();
        // 16384 - 14236 = 2148 MiB, of which 1536 MiB are hugepages: 612 MiB reserved.
        assert_eq!(reserved_memory(&node), Some(612 << 20));
        let bare: Node =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "n"}})).unwrap();
        assert_eq!(reserved_memory(&bare), None);
    }
}
