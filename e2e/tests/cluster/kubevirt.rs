//! KubeVirt's side of a tuned node, against the real API server: with KubeVirt's instancetype and
//! VirtualMachine APIs served (stand-in CRDs, `e2e/fixtures/kubevirt-crds.yaml`), the operator
//! makes a profile's instancetype family and each pool's preference, updates and removes them with
//! their source, and keeps the TuningSummary; the chart's admission policy then warns, in the API
//! response's `Warning` headers, about a VM no tuned node can host, and says nothing about one
//! that fits.

use super::{POOL, TEST_NS, wait};
use fastvirt_e2e::cluster::State;
use fastvirt_e2e::cluster::kubectl::Kubectl;
use serde_json::{Value, json};

const INSTANCETYPES: &str = "virtualmachineclusterinstancetypes";
const PREFERENCES: &str = "virtualmachineclusterpreferences";
const FIXTURE: &str = include_str!("../../fixtures/kubevirt-crds.yaml");

/// Installs the stand-ins for KubeVirt's CRDs; the operator finds them at its next discovery.
pub fn install_kubevirt_apis(kubectl: &Kubectl) {
    kubectl.apply(FIXTURE).expect("KubeVirt's CRDs installed");
    kubectl
        .apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {TEST_NS}\n"
        ))
        .expect("the test namespace");
    for crd in [
        "virtualmachines.kubevirt.io",
        "virtualmachineclusterinstancetypes.instancetype.kubevirt.io",
        "virtualmachineclusterpreferences.instancetype.kubevirt.io",
    ] {
        kubectl
            .run(&[
                "wait",
                "--for=condition=Established",
                &format!("crd/{crd}"),
                "--timeout=60s",
            ])
            .expect("CRD established");
    }
}

fn family(kubectl: &Kubectl, profile: &str) -> anyhow::Result<Vec<Value>> {
    let list = kubectl.get_json(&[
        INSTANCETYPES,
        "-l",
        &format!("fastvirt.io/profile={profile}"),
    ])?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

fn patch_kubevirt_settings(kubectl: &Kubectl, profile: &str, settings: Value) {
    let patch = json!({"spec": {"kubevirt": settings}}).to_string();
    kubectl
        .run(&[
            "patch",
            "nodetuningprofile",
            profile,
            "--type=merge",
            "-p",
            &patch,
        ])
        .expect("profile patched");
}

/// A pod with the family's `nodeSelector` (the profile's node labels, no hugepages), as
/// virt-controller gives the launcher pod of a VM of the family.
fn launcher_like_pod(name: &str, profile: &str) -> String {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": TEST_NS},
        "spec": {
            "nodeSelector": {
                "node.fastvirt.io/profile": profile,
                "node.fastvirt.io/tuned": "true",
                "node.fastvirt.io/cpu-manager-policy": "static",
            },
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main",
                "image": fastvirt_e2e::cluster::TOOLBOX_IMAGE,
                "imagePullPolicy": "Never",
                "command": ["sleep", "3600"],
            }],
        },
    })
    .to_string()
}

fn summary(kubectl: &Kubectl) -> anyhow::Result<Value> {
    kubectl.get_json(&["tuningsummary", "cluster"])
}

/// The API server's answer to creating `vm` (a dry run, nothing is stored): status and the
/// `Warning` headers, read from the response itself.
fn create_vm(state: &State, vm: &Value) -> (u16, Vec<String>) {
    // Two TLS backends are linked in (aws-lc-rs comes with a dependency): name one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime
        .block_on(async {
            let kubeconfig =
                kube::config::Kubeconfig::read_from(state.layout().admin_kubeconfig())?;
            let config =
                kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
            let client = kube::Client::try_from(config)?;
            let request = http::Request::post(format!(
                "/apis/kubevirt.io/v1/namespaces/{TEST_NS}/virtualmachines?dryRun=All"
            ))
            .header("Content-Type", "application/json")
            .body(kube::client::Body::from(serde_json::to_vec(vm)?))?;
            let response = client.send(request).await?;
            let warnings = response
                .headers()
                .get_all("warning")
                .iter()
                .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
                .collect();
            anyhow::Ok((response.status().as_u16(), warnings))
        })
        .expect("the API server answers")
}

fn vm(name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": name, "namespace": TEST_NS},
        "spec": spec,
    })
}

fn vm_with_domain(name: &str, domain: Value) -> Value {
    vm(
        name,
        json!({"runStrategy": "Halted", "template": {"spec": {"domain": domain}}}),
    )
}

/// With `profile` applied and the kubelet on the static CPU manager (1 isolated CPU, no
/// hugepages): the family, the preferences, the summary and the admission warnings.
pub fn instancetypes_preferences_and_warnings(kubectl: &Kubectl, state: &State, profile: &str) {
    let types = wait(kubectl, "the profile's instancetype family", 180, || {
        let types = family(kubectl, profile)?;
        Ok((types.len() == 6).then_some(types))
    });
    let medium = types
        .iter()
        .find(|t| t["metadata"]["name"] == format!("fastvirt.{profile}.medium"))
        .expect("the medium size");
    let spec = &medium["spec"];
    assert_eq!(spec["cpu"]["guest"], 1, "{medium}");
    assert_eq!(spec["cpu"]["dedicatedCPUPlacement"], true, "{medium}");
    assert_eq!(spec["cpu"]["isolateEmulatorThread"], true, "{medium}");
    assert_eq!(spec["memory"]["guest"], "2Gi", "{medium}");
    assert!(
        spec["memory"].get("hugepages").is_none(),
        "the node has no hugepages of the profile's: {medium}"
    );
    assert_eq!(spec["ioThreadsPolicy"], "supplementalPool", "{medium}");
    assert_eq!(spec["ioThreads"]["supplementalPoolThreadCount"], 1);
    assert_eq!(
        spec["nodeSelector"],
        json!({
            "node.fastvirt.io/profile": profile,
            "node.fastvirt.io/tuned": "true",
            "node.fastvirt.io/cpu-manager-policy": "static",
        })
    );
    assert_eq!(
        medium["metadata"]["ownerReferences"][0]["kind"], "NodeTuningProfile",
        "{medium}"
    );
    // The node the family selects is exactly the test node, and the scheduler puts a pod with
    // the family's selector there.
    let node = kubectl.get_json(&["node", &state.node_name]).unwrap();
    for (key, value) in spec["nodeSelector"].as_object().unwrap() {
        assert_eq!(&node["metadata"]["labels"][key], value, "node label {key}");
    }
    kubectl
        .apply(&launcher_like_pod("on-a-tuned-node", profile))
        .expect("pod created");
    let placed = wait(
        kubectl,
        "the pod with the family's selector running",
        120,
        || {
            let pod = kubectl.get_json(&["pod", "on-a-tuned-node", "-n", TEST_NS])?;
            Ok((pod["status"]["phase"] == "Running").then(|| pod["spec"]["nodeName"].clone()))
        },
    );
    assert_eq!(placed, state.node_name.as_str());
    delete_pod(kubectl, "on-a-tuned-node");

    let preference = wait(kubectl, "the pool's preference", 120, || {
        Ok(kubectl
            .get_json(&[PREFERENCES, &format!("fastvirt.{POOL}")])
            .ok())
    });
    let devices = &preference["spec"]["devices"];
    assert_eq!(devices["preferredDiskIO"], "native", "{preference}");
    assert_eq!(devices["preferredDiskCache"], "none", "{preference}");
    assert_eq!(
        devices["preferredDiskBlockSize"]["matchVolume"]["enabled"], true,
        "{preference}"
    );
    assert_eq!(devices["preferredBlockMultiQueue"], true);
    assert_eq!(devices["preferredDiskDedicatedIoThread"], true);
    assert_eq!(
        preference["spec"]["volumes"]["preferredStorageClassName"],
        POOL
    );
    assert_eq!(
        preference["metadata"]["ownerReferences"][0]["kind"],
        "BlockPool"
    );

    // The summary says what the node offers (one CPU of its own, no hugepages) and what the
    // family's smallest size takes (3 host CPUs: no node fits it).
    wait(
        kubectl,
        "the node and the family in the TuningSummary",
        120,
        || {
            let summary = summary(kubectl)?;
            let status = &summary["status"];
            let offer = status["nodes"].as_array().into_iter().flatten().any(|o| {
                o["name"] == state.node_name.as_str()
                    && o["cpuManagerStatic"] == true
                    && o["dedicatedCpus"] == 1
                    && o["tuned"] == true
            });
            let medium = status["instancetypes"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| {
                    t["name"] == format!("fastvirt.{profile}.medium")
                        && t["dedicatedCpus"] == 3
                        && t["nodes"].as_array().is_some_and(|n| n.is_empty())
                });
            // The last summary goes into the failure message.
            anyhow::ensure!(offer && medium, "{summary}");
            Ok(Some(()))
        },
    );

    // The API server type-checked the policy's CEL against the TuningSummary's schema.
    let checked = wait(kubectl, "the policy type-checked", 120, || {
        let policies = kubectl.get_json(&["validatingadmissionpolicies"])?;
        Ok(policies["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| {
                p["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("-vm-placement"))
            })
            .filter(|p| p["status"]["typeChecking"].is_object())
            .cloned())
    });
    assert!(
        checked["status"]["typeChecking"]["expressionWarnings"]
            .as_array()
            .is_none_or(|w| w.is_empty()),
        "{}",
        checked["status"]
    );

    // A VM no tuned node can host: four dedicated CPUs.
    let (status, warnings) = create_vm(
        state,
        &vm_with_domain(
            "too-many-cpus",
            json!({"cpu": {"cores": 4, "dedicatedCpuPlacement": true}}),
        ),
    );
    assert_eq!(status, 201, "Warn admits the VM");
    let warning = warnings.join("\n");
    assert!(
        warning.contains("VirtualMachine too-many-cpus asks for 4 dedicated CPUs")
            && warning.contains(&format!(
                "{} (1 dedicated CPUs, hugepages none)",
                state.node_name
            ))
            && warning.contains("Ask for fewer dedicated CPUs"),
        "the warning names what is asked, the nodes and what to change: {warnings:?}"
    );
    // Hugepages of a size no node has.
    let (_, warnings) = create_vm(
        state,
        &vm_with_domain(
            "gigantic-pages",
            json!({"cpu": {"cores": 1, "dedicatedCpuPlacement": true},
                   "memory": {"guest": "2Gi", "hugepages": {"pageSize": "1Gi"}}}),
        ),
    );
    assert!(
        warnings
            .join("\n")
            .contains("asks for 1 dedicated CPUs, hugepages of 1Gi"),
        "{warnings:?}"
    );
    // The family's smallest size takes 3 host CPUs (vCPU, emulator thread, IO thread).
    let (_, warnings) = create_vm(
        state,
        &vm(
            "medium",
            json!({"runStrategy": "Halted",
                   "instancetype": {"name": format!("fastvirt.{profile}.medium")},
                   "template": {"spec": {"domain": {}}}}),
        ),
    );
    assert!(
        warnings.join("\n").contains(&format!(
            "uses instancetype fastvirt.{profile}.medium, which takes 3 dedicated host CPUs on a node tuned by the NodeTuningProfile {profile}; no node can host it now"
        )),
        "{warnings:?}"
    );
    // A VM that fits, and one that asks for nothing special: no warning.
    for (name, domain) in [
        (
            "fits",
            json!({"cpu": {"cores": 1, "dedicatedCpuPlacement": true}}),
        ),
        ("plain", json!({"cpu": {"cores": 2}})),
    ] {
        let (status, warnings) = create_vm(state, &vm_with_domain(name, domain));
        assert_eq!(status, 201);
        assert!(warnings.is_empty(), "{name}: {warnings:?}");
    }

    // Updated with the profile: two IO threads each.
    patch_kubevirt_settings(kubectl, profile, json!({"ioThreads": 2}));
    wait(kubectl, "the family with two IO threads", 120, || {
        let types = family(kubectl, profile)?;
        Ok((types.len() == 6
            && types
                .iter()
                .all(|t| t["spec"]["ioThreads"]["supplementalPoolThreadCount"] == 2))
        .then_some(()))
    });
    wait(kubectl, "the summary's medium taking 4 CPUs", 120, || {
        let summary = summary(kubectl)?;
        Ok(summary["status"]["instancetypes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["name"] == format!("fastvirt.{profile}.medium") && t["dedicatedCpus"] == 4)
            .then_some(()))
    });
    // Turned off, the family goes; back on, it returns.
    for (instancetypes, count) in [(false, 0), (true, 6)] {
        patch_kubevirt_settings(kubectl, profile, json!({"instancetypes": instancetypes}));
        wait(kubectl, &format!("{count} instancetypes"), 120, || {
            Ok((family(kubectl, profile)?.len() == count).then_some(()))
        });
    }
}

fn delete_pod(kubectl: &Kubectl, name: &str) {
    kubectl
        .run(&[
            "delete",
            "pod",
            name,
            "-n",
            TEST_NS,
            "--wait=true",
            "--timeout=60s",
        ])
        .expect("pod deleted");
}

/// After the profile is deleted: its family goes with it (the garbage collector, through the
/// owner references), the summary forgets it, and a pod with the family's selector finds no node.
pub fn instancetypes_go_with_the_profile(kubectl: &Kubectl, profile: &str) {
    kubectl
        .apply(&launcher_like_pod("no-tuned-node", profile))
        .expect("pod created");
    wait(
        kubectl,
        "the pod unschedulable without a tuned node",
        120,
        || {
            let pod = kubectl.get_json(&["pod", "no-tuned-node", "-n", TEST_NS])?;
            let unschedulable = pod["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "PodScheduled" && c["reason"] == "Unschedulable");
            Ok(unschedulable.then_some(()))
        },
    );
    delete_pod(kubectl, "no-tuned-node");
    wait(kubectl, "the family gone with its profile", 120, || {
        Ok(family(kubectl, profile)?.is_empty().then_some(()))
    });
    wait(kubectl, "the summary without the profile", 120, || {
        let summary = summary(kubectl)?;
        let mentions = summary["status"].to_string().contains(profile);
        Ok((!mentions).then_some(()))
    });
}

/// After every pool is deleted: no fastvirt preference is left.
pub fn preferences_go_with_their_pools(kubectl: &Kubectl) {
    if kubectl
        .get_json(&[
            "crd",
            "virtualmachineclusterpreferences.instancetype.kubevirt.io",
        ])
        .is_err()
    {
        return;
    }
    wait(
        kubectl,
        "the preferences gone with their pools",
        120,
        || {
            let left = kubectl.run(&["get", PREFERENCES, "-o", "name"])?;
            Ok((!left.contains("fastvirt.")).then_some(()))
        },
    );
}
