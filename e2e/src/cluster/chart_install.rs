//! Installing fastvirt's chart into the cluster the way a platform team would: the namespace
//! labelled for Pod Security, the real helm, then waiting until kubelet has registered the driver.

use super::components::Layout;
use super::process;
use super::start::{START_TIMEOUT, UpOptions};
use super::{NAMESPACE, RELEASE, State};
use anyhow::{Context, Result};
use std::path::Path;

/// The chart's values for this cluster: the images just imported, the built-in registrar (the
/// registrar and livenessprobe sidecars are not buildable here), and host paths in the workdir.
pub fn cluster_values(state: &State) -> serde_json::Value {
    let layout = state.layout();
    let image = |name: &str| {
        serde_json::json!({
            "repository": format!("localhost/fastvirt/{name}"),
            "tag": state.image_tag,
            "pullPolicy": "Never",
        })
    };
    serde_json::json!({
        "logFormat": "text",
        "kubeletDir": layout.kubelet_dir,
        "operator": {"replicas": 1, "image": image("fastvirt-operator")},
        "controller": {"replicas": 1},
        "node": {
            "image": image("fastvirt-csi"),
            "builtinRegistration": true,
            "stateDir": layout.csi_state_dir(),
            "poolHostDirs": [layout.pool_host_dir()],
            // The pools share the disk the tests build on; a nearly full build disk must not
            // refuse their volumes (the reserve has tests of its own).
            "capacityReservePercent": 0,
        },
        "agent": {
            "image": image("fastvirt-agent"),
            "kubeletConfigDir": layout.kubelet_config_dir(),
        },
    })
}

pub(super) fn install_chart(state: &State, layout: &Layout, options: &UpOptions) -> Result<()> {
    let kubectl = state.kubectl();
    // The node plugin and agent are privileged; the namespace says so for Pod Security admission.
    kubectl.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NAMESPACE}\n  labels:\n    pod-security.kubernetes.io/enforce: privileged\n    pod-security.kubernetes.io/warn: privileged\n"
    ))?;
    helm_upgrade(state, layout, &options.repo, &options.values)
}

/// `helm upgrade --install` of `repo`'s chart with the cluster's values (then `extra_values`),
/// waiting for its workloads and for kubelet to register the driver: the install, and an upgrade.
pub(super) fn helm_upgrade(
    state: &State,
    layout: &Layout,
    repo: &Path,
    extra_values: &[std::path::PathBuf],
) -> Result<()> {
    let kubectl = state.kubectl();
    let chart = repo.join("charts/fastvirt");
    let mut cluster = cluster_values(state);
    // An older chart (the upgrade test's previous release) lacks values added since; its schema
    // would refuse them.
    let defaults_path = chart.join("values.yaml");
    let defaults: serde_json::Value = serde_yaml::from_str(
        &std::fs::read_to_string(&defaults_path)
            .with_context(|| format!("reading {}", defaults_path.display()))?,
    )?;
    for left_out in keep_known(&mut cluster, &defaults, "") {
        eprintln!(
            "fastvirt-cluster: the chart in {} has no {left_out}; not set",
            chart.display()
        );
    }
    let values = layout.workdir.join("values.yaml");
    std::fs::write(&values, serde_yaml::to_string(&cluster)?)?;
    let mut args = vec![
        "upgrade".to_owned(),
        "--install".into(),
        RELEASE.into(),
        chart.to_string_lossy().into_owned(),
        "--namespace".into(),
        NAMESPACE.into(),
        "--values".into(),
        values.to_string_lossy().into_owned(),
    ];
    for extra in extra_values {
        args.push("--values".into());
        args.push(extra.to_string_lossy().into_owned());
    }
    args.extend(["--wait".into(), "--timeout".into(), "5m".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    kubectl.helm(&args).map_err(|error| {
        error.context(format!(
            "installing the chart; pods:\n{}",
            kubectl
                .run(&["get", "pods", "-A", "-o", "wide"])
                .unwrap_or_default()
        ))
    })?;
    wait_plugin_registered(state)
}

/// Removes from `values` every key the chart's `defaults` (its values.yaml) lack, below maps both
/// have; returns their dotted paths.
fn keep_known(
    values: &mut serde_json::Value,
    defaults: &serde_json::Value,
    prefix: &str,
) -> Vec<String> {
    let (Some(values), Some(defaults)) = (values.as_object_mut(), defaults.as_object()) else {
        return Vec::new();
    };
    let mut left_out = Vec::new();
    values.retain(|key, _| {
        let known = defaults.contains_key(key);
        if !known {
            left_out.push(format!("{prefix}{key}"));
        }
        known
    });
    for (key, value) in values.iter_mut() {
        left_out.extend(keep_known(
            value,
            &defaults[key],
            &format!("{prefix}{key}."),
        ));
    }
    left_out
}

/// Waits until kubelet lists block.fastvirt.io in the node's CSINode.
pub fn wait_plugin_registered(state: &State) -> Result<()> {
    let kubectl = state.kubectl();
    // As saved now: a restarted kubelet (`restart_kubelet`) has another pid than `state` knows.
    let saved = State::load(&state.workdir).ok().flatten();
    let kubelet = saved
        .as_ref()
        .unwrap_or(state)
        .component("kubelet")
        .cloned()
        .context("no kubelet was started")?;
    process::wait_ready(
        &kubelet,
        "registering block.fastvirt.io",
        START_TIMEOUT,
        || {
            kubectl
                .get_json(&["csinode", &state.node_name])
                .map(|csinode| {
                    csinode["spec"]["drivers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|d| d["name"] == fastvirt_csi::DRIVER_NAME)
                })
                .unwrap_or(false)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_an_older_chart_lacks_are_left_out() {
        let mut values = serde_json::json!({
            "kubeletDir": "/k",
            "agent": {"image": {"tag": "x"}, "kubeletConfigDir": "/d"},
        });
        let defaults = serde_json::json!({
            "kubeletDir": "/var/lib/kubelet",
            "agent": {"image": {"tag": ""}},
        });
        assert_eq!(
            keep_known(&mut values, &defaults, ""),
            vec!["agent.kubeletConfigDir".to_owned()]
        );
        assert_eq!(
            values,
            serde_json::json!({"kubeletDir": "/k", "agent": {"image": {"tag": "x"}}})
        );
    }
}
