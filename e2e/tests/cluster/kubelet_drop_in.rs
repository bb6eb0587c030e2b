//! The kubelet settings a profile implies, written by the agent as a drop-in of the kubelet's
//! `--config-dir` and never applied by restarting the kubelet: the TunedNode says what differs
//! and what a restart would break; the test (a platform team's part) removes the CPU manager state
//! file and restarts the kubelet, reads the kubelet's own `/configz` back, and sees the agent stop
//! asking for a restart. Deleting the profile removes the drop-in, and a second restart puts the
//! kubelet back as it was.

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

/// Removes the kubelet's CPU manager state, as a kubelet changing its policy needs, and restarts it.
fn restart_kubelet_afresh(state: &State) {
    let _ = std::fs::remove_file(state.kubelet_dir.join("cpu_manager_state"));
    cluster::restart_kubelet(&state.workdir).expect("the kubelet comes back");
}

pub fn the_kubelet_runs_the_profiles_drop_in(kubectl: &Kubectl, state: &State) {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap_or_default();
    if online.trim() == "0" {
        eprintln!("SKIP kubelet drop-in step: it isolates CPU 1, and this machine has one CPU");
        return;
    }
    let before = configz(kubectl, state).expect("the kubelet's configz");
    assert_eq!(before["cpuManagerPolicy"], "none", "{before}");
    kubectl
        .run(&[
            "label",
            "node",
            &state.node_name,
            "fastvirt.io/vm-host=true",
            "--overwrite",
        ])
        .expect("node labelled");
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
    topologyManagerPolicy: best-effort
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
        message.contains("cpu_manager_state records policy none"),
        "the TunedNode says what a restart would break: {message}"
    );
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&drop_in).unwrap()).unwrap();
    assert_eq!(written["cpuManagerPolicy"], "static", "{written}");
    assert_eq!(written["reservedSystemCPUs"], "0", "{written}");
    assert_eq!(
        configz(kubectl, state).unwrap()["cpuManagerPolicy"],
        "none",
        "the agent never restarts the kubelet"
    );

    restart_kubelet_afresh(state);
    let running = configz(kubectl, state).expect("the restarted kubelet's configz");
    assert_eq!(running["cpuManagerPolicy"], "static", "{running}");
    assert_eq!(running["reservedSystemCPUs"], "0", "{running}");
    assert_eq!(running["topologyManagerPolicy"], "best-effort", "{running}");
    assert_eq!(running["topologyManagerScope"], "container", "{running}");
    wait(kubectl, "the agent content with the kubelet", 180, || {
        let (_, message) = kubelet_condition(kubectl, state)?;
        let tuned = kubectl.get_json(&["tunednode", &state.node_name])?;
        let node = kubectl.get_json(&["node", &state.node_name])?;
        let policy = node["metadata"]["labels"][node_labels::CPU_MANAGER_POLICY].clone();
        let applied = condition_true(&tuned, "Applied");
        let done = applied
            && !message.contains("90-fastvirt.conf")
            && !message.contains("cpuManagerPolicy")
            && policy == "static";
        // The last state goes into the failure message.
        anyhow::ensure!(
            done,
            "Applied {applied}, KubeletRestartRequired says {message:?}, label {policy}"
        );
        Ok(Some(()))
    });

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
    restart_kubelet_afresh(state);
    assert_eq!(
        configz(kubectl, state).unwrap()["cpuManagerPolicy"],
        "none",
        "the kubelet is back as it was"
    );
    kubectl
        .run(&["label", "node", &state.node_name, "fastvirt.io/vm-host-"])
        .expect("label removed");
}
