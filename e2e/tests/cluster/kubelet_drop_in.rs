//! The kubelet settings a profile implies, written by the agent as a drop-in of the kubelet's
//! `--config-dir` and never applied by restarting the kubelet (the static CPU manager, the
//! topology manager, and the static memory manager with the kubelet's own reservation): the
//! TunedNode says what differs and what a restart would break; the test (a platform team's part)
//! removes the CPU and memory manager state files and restarts the kubelet, reads the kubelet's
//! own `/configz` back, and sees the agent stop asking for a restart. Deleting the profile removes
//! the drop-in, and a second restart puts the kubelet back as it was.

use super::{apply, condition_true, wait};
use fastvirt_agent::node_labels;
use fastvirt_e2e::cluster::kubectl::Kubectl;
use fastvirt_e2e::cluster::{self, State};
use serde_json::Value;

const PROFILE: &str = "kubelet-settings";

fn configz(kubectl: &Kubectl, state: &State) -> anyhow::Result<Value> {
    let path = format!("/api/v1/nodes/{}/proxy/configz", state.node_name);
    let text = kubectl.run(&["get", "--raw", &path])?;
    let value: Value = serde_json::from_str(&text)?;
    Ok(value["kubeletconfig"].clone())
}

fn kubelet_condition(kubectl: &Kubectl, state: &State) -> anyhow::Result<(bool, String)> {
    let tuned = kubectl.get_json(&["tunednode", &state.node_name])?;
    let condition = tuned["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "KubeletRestartRequired")
        .cloned()
        .unwrap_or_default();
    Ok((
        condition["status"] == "True",
        condition["message"].as_str().unwrap_or_default().to_owned(),
    ))
}

/// Removes the kubelet's CPU and memory manager state, as a kubelet changing their policies
/// needs, and restarts it.
fn restart_kubelet_afresh(state: &State) {
    let _ = std::fs::remove_file(state.kubelet_dir.join("cpu_manager_state"));
    let _ = std::fs::remove_file(state.kubelet_dir.join("memory_manager_state"));
    cluster::restart_kubelet(&state.workdir).expect("the kubelet comes back");
}

pub fn the_kubelet_runs_the_profiles_drop_in(kubectl: &Kubectl, state: &State) {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    if online.trim() == "0" {
        eprintln!("SKIP kubelet drop-in step: it isolates CPU 1, and this machine has one CPU");
        return;
    }
    // Early, so the operator's next discovery (each minute) finds them by the time they matter.
    super::kubevirt::install_kubevirt_apis(kubectl);
    let before = configz(kubectl, state).expect("the kubelet's configz");
    assert_eq!(before["cpuManagerPolicy"], "none", "{before}");
    super::mark_vm_host(kubectl, state, true);
    apply(
        kubectl,
        &format!(
            "apiVersion: fastvirt.io/v1alpha1
kind: NodeTuningProfile
metadata:
  name: {PROFILE}
spec:
  nodeSelector:
    fastvirt.io/vm-host: \"true\"
  cpu: {{reserved: \"0\", isolated: \"1\"}}
  irq: {{moveToReserved: false, banIsolatedInIrqbalance: false}}
  kubelet:
    manageDropIn: true
    topologyManagerPolicy: single-numa-node
    topologyManagerScope: container
"
        ),
    );
    let drop_in = state
        .layout()
        .kubelet_config_dir()
        .join(fastvirt_agent::kubelet_drop_in::FILE_NAME);
    let message = wait(
        kubectl,
        "the drop-in written, a restart asked for",
        180,
        || {
            let (required, message) = kubelet_condition(kubectl, state)?;
            Ok(
                (drop_in.exists() && required && message.contains("90-fastvirt.conf"))
                    .then_some(message),
            )
        },
    );
    assert!(
        message.contains("cpu_manager_state records policy none")
            && message.contains("memory_manager_state records policy None"),
        "the TunedNode says what a restart would break: {message}"
    );
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&drop_in).unwrap()).unwrap();
    assert_eq!(written["cpuManagerPolicy"], "static", "{written}");
    assert_eq!(written["reservedSystemCPUs"], "0", "{written}");
    // The static memory manager reserves exactly what the kubelet keeps back of memory, or the
    // kubelet would refuse to start: its Node's capacity less allocatable, less hugepages.
    assert_eq!(written["memoryManagerPolicy"], "Static", "{written}");
    let node = kubectl.get_json(&["node", &state.node_name]).unwrap();
    let bytes = |q: &Value| fastvirt_api::quantity::bytes(q.as_str().unwrap_or("0")).unwrap();
    let capacity = &node["status"]["capacity"];
    let hugepages: u64 = capacity
        .as_object()
        .unwrap()
        .iter()
        .filter(|(name, _)| name.starts_with("hugepages-"))
        .map(|(_, q)| bytes(q))
        .sum();
    let kept_back =
        bytes(&capacity["memory"]) - bytes(&node["status"]["allocatable"]["memory"]) - hugepages;
    let reserved = &written["reservedMemory"][0];
    assert_eq!(reserved["numaNode"], 0, "{written}");
    assert_eq!(bytes(&reserved["limits"]["memory"]), kept_back, "{written}");
    assert_eq!(
        configz(kubectl, state).unwrap()["cpuManagerPolicy"],
        "none",
        "the agent never restarts the kubelet"
    );

    restart_kubelet_afresh(state);
    let running = configz(kubectl, state).expect("the restarted kubelet's configz");
    assert_eq!(running["cpuManagerPolicy"], "static", "{running}");
    assert_eq!(running["reservedSystemCPUs"], "0", "{running}");
    assert_eq!(
        running["topologyManagerPolicy"], "single-numa-node",
        "{running}"
    );
    assert_eq!(running["topologyManagerScope"], "container", "{running}");
    assert_eq!(running["memoryManagerPolicy"], "Static", "{running}");
    assert_eq!(
        running["reservedMemory"][0]["limits"]["memory"], reserved["limits"]["memory"],
        "{running}"
    );
    wait(kubectl, "the agent content with the kubelet", 180, || {
        let (_, message) = kubelet_condition(kubectl, state)?;
        let tuned = kubectl.get_json(&["tunednode", &state.node_name])?;
        let node = kubectl.get_json(&["node", &state.node_name])?;
        let policy = node["metadata"]["labels"][node_labels::CPU_MANAGER_POLICY].clone();
        let applied = condition_true(&tuned, "Applied");
        let done = applied
            && !message.contains("90-fastvirt.conf")
            && !message.contains("cpuManagerPolicy")
            && !message.contains("memoryManagerPolicy")
            && policy == "static";
        // The last state goes into the failure message.
        anyhow::ensure!(
            done,
            "Applied {applied}, KubeletRestartRequired says {message:?}, label {policy}"
        );
        Ok(Some(()))
    });
    super::kubevirt::instancetypes_preferences_and_warnings(kubectl, state, PROFILE);

    kubectl
        .run(&[
            "delete",
            "nodetuningprofile",
            PROFILE,
            "--wait=true",
            "--timeout=60s",
        ])
        .expect("profile deleted");
    wait(kubectl, "the drop-in removed", 180, || {
        Ok((!drop_in.exists()).then_some(()))
    });
    super::kubevirt::instancetypes_go_with_the_profile(kubectl, PROFILE);
    restart_kubelet_afresh(state);
    let back = configz(kubectl, state).unwrap();
    assert_eq!(
        back["cpuManagerPolicy"], "none",
        "the kubelet is back as it was"
    );
    assert_eq!(back["memoryManagerPolicy"], "None", "{back}");
    super::mark_vm_host(kubectl, state, false);
}
