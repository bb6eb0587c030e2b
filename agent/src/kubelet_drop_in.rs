//! The kubelet settings a profile implies, as a drop-in file of the kubelet's configuration
//! directory (its `--config-dir`, merged over its config file in file-name order): the static CPU
//! manager with the profile's reserved CPUs, and the topology manager policy and scope. The agent
//! writes the file and never restarts the kubelet. Until the kubelet runs with it, the TunedNode
//! says `KubeletRestartRequired` with what differs, and what a restart would break: a kubelet
//! refuses to start when its CPU manager state file was written under another policy.

use crate::hostfs::HostFs;
use fastvirt_api::cpuset::CpuSet;
use fastvirt_api::kubelet_settings::KubeletSettings;
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
}

/// The drop-in for `settings` with the profile's `reserved` CPUs: a KubeletConfiguration in JSON
/// (which the kubelet reads as YAML), keys in a fixed order so that an unchanged profile rewrites
/// nothing.
pub fn render(settings: &KubeletSettings, reserved: &CpuSet) -> String {
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
    /// When its process started, if one is found.
    pub started: Option<SystemTime>,
}

/// The running kubelet's CPU manager policy and start time, read from the host.
pub fn running(fs: &dyn HostFs, dirs: &KubeletDirs) -> RunningKubelet {
    RunningKubelet {
        cpu_manager_policy: cpu_manager_policy(fs, dirs),
        started: kubelet_started(fs),
    }
}

/// The `policyName` of the kubelet's CPU manager state file (`<root>/cpu_manager_state`), which
/// the kubelet writes with the policy it really runs; `None` without one.
pub fn cpu_manager_policy(fs: &dyn HostFs, dirs: &KubeletDirs) -> Option<String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct State {
        policy_name: String,
    }
    let text = fs.read(&dirs.cpu_manager_state()).ok()?;
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
/// the kubelet runs with the drop-in. `written`: when the drop-in was last written.
pub fn differences(
    dirs: &KubeletDirs,
    written: Option<SystemTime>,
    running: &RunningKubelet,
) -> (Vec<String>, Vec<String>) {
    let path = dirs.drop_in();
    let mut differing = Vec::new();
    let mut hazards = Vec::new();
    let policy = running.cpu_manager_policy.as_deref().unwrap_or("none");
    if policy != "static" {
        differing.push(format!(
            "the kubelet runs cpuManagerPolicy {policy}; /{path} asks for static"
        ));
        if running.cpu_manager_policy.is_some() {
            hazards.push(format!(
                "a kubelet restarted with cpuManagerPolicy static refuses to start while /{} records policy {policy}: drain the node and remove that file before the restart",
                dirs.cpu_manager_state()
            ));
        }
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
        let text = render(&settings, &CpuSet::parse("0,32").unwrap());
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
            })
        );
        assert_eq!(render(&settings, &CpuSet::parse("0,32").unwrap()), text);
        assert_eq!(
            dirs().drop_in(),
            "etc/kubernetes/kubelet.conf.d/90-fastvirt.conf"
        );
    }

    #[test]
    fn a_kubelet_on_another_policy_needs_a_restart_and_its_state_file_removed() {
        let running = RunningKubelet {
            cpu_manager_policy: Some("none".into()),
            started: Some(at(100)),
        };
        let (differing, hazards) = differences(&dirs(), Some(at(200)), &running);
        assert_eq!(differing.len(), 2, "{differing:?}");
        assert!(differing[0].contains("runs cpuManagerPolicy none"));
        assert!(differing[1].contains("started before"));
        assert_eq!(hazards.len(), 1);
        assert!(
            hazards[0].contains("/var/lib/kubelet/cpu_manager_state records policy none"),
            "{hazards:?}"
        );
    }

    #[test]
    fn a_kubelet_started_after_the_file_with_the_static_policy_is_up_to_date() {
        let running = RunningKubelet {
            cpu_manager_policy: Some("static".into()),
            started: Some(at(300)),
        };
        assert_eq!(
            differences(&dirs(), Some(at(200)), &running),
            (vec![], vec![])
        );
    }
}
