//! The Helm chart, rendered by the real helm binary and checked the way a cluster would check it:
//! lint with default and production values, strict Kubernetes schemas for every object, the CRD
//! schemas for the fastvirt resources, and the wiring a CSI deployment gets wrong silently — socket
//! paths, mount propagation, privileges, RBAC against the code's own permission lists. Also the
//! Dockerfiles, for what can be checked without a Docker engine.
//!
//! helm, kubectl and the validator venv come from `scripts/install-chart-tools.sh` (run by
//! `scripts/install-deps.sh`); a missing tool fails the tests with that hint.

use anyhow::Context;
use fastvirt_e2e::chart::{
    self, Helm, Manifest, NAMESPACE, RELEASE, container, env_field_path, excess, flag_value,
    has_flag, missing, mount_of, volume,
};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const KUBERNETES_VERSION: &str = "1.37.0";
const NODE_DAEMONSET: &str = "fastvirt-node";
const CONTROLLER: &str = "fastvirt-controller";
const AGENT_DAEMONSET: &str = "fastvirt-agent";
const OPERATOR: &str = "fastvirt-operator";
const INSTALL_CHECK: &str = "fastvirt-install-check";

fn helm() -> Helm {
    Helm::find().expect("helm")
}

fn values(name: &str) -> PathBuf {
    chart::chart_tests_dir().join("values").join(name)
}

fn production() -> Vec<PathBuf> {
    vec![values("production.yaml")]
}

fn render(values: &[PathBuf], set: &[&str]) -> Manifest {
    helm().render(values, set).expect("render")
}

fn defaults() -> Manifest {
    render(&[], &[])
}

/// Default values with every optional object turned on.
fn everything() -> Manifest {
    render(
        &[],
        &[
            "examples.blockPool.enabled=true",
            "examples.nodeTuningProfile.enabled=true",
            "operator.metrics.serviceMonitor.enabled=true",
            "node.metrics.serviceMonitor.enabled=true",
        ],
    )
}

fn pod_spec<'a>(manifest: &'a Manifest, kind: &str, name: &str) -> &'a Value {
    &manifest.get(kind, name).expect("workload")["spec"]["template"]["spec"]
}

#[test]
fn lint_passes_with_default_and_production_values() {
    let helm = helm();
    for values in [Vec::new(), production()] {
        let run = helm.lint(true, &values).unwrap();
        assert!(
            run.success && run.stdout.contains("1 chart(s) linted, 0 chart(s) failed"),
            "helm lint --strict with {values:?}:\n{}",
            run.all_output()
        );
        assert!(
            !run.all_output().contains("[WARNING]") && !run.all_output().contains("[ERROR]"),
            "helm lint --strict with {values:?} reported problems:\n{}",
            run.all_output()
        );
    }
}

#[test]
fn bad_values_fail_lint_with_a_clear_message() {
    // Each file in charts/tests/values/bad-*.yaml with the words helm must say about it.
    let schema_errors: BTreeMap<&str, &str> = BTreeMap::from([
        (
            "bad-unknown-key.yaml",
            "at '/operator': additional properties 'replica' not allowed",
        ),
        (
            "bad-negative-replicas.yaml",
            "at '/operator/replicas': minimum: got -1, want 0",
        ),
        (
            "bad-wrong-type.yaml",
            "at '/node/maxVolumesPerNode': got string, want integer",
        ),
        (
            "bad-relative-kubelet-dir.yaml",
            "at '/kubeletDir': 'var/lib/kubelet' does not match pattern",
        ),
        (
            "bad-example-pool-field.yaml",
            "at '/examples/blockPool/spec/backend/file': additional properties 'thin' not allowed",
        ),
    ]);
    // Rules across values that a JSON schema cannot state: the templates fail at render time.
    let template_errors: BTreeMap<&str, &str> = BTreeMap::from([(
        "bad-example-pool-outside-pool-dirs.yaml",
        "examples.blockPool.spec.backend.file.path /srv/elsewhere is not inside any of node.poolHostDirs",
    )]);

    let on_disk: BTreeSet<String> = std::fs::read_dir(chart::chart_tests_dir().join("values"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("bad-"))
        .collect();
    let covered: BTreeSet<String> = schema_errors
        .keys()
        .chain(template_errors.keys())
        .map(|k| k.to_string())
        .collect();
    assert_eq!(
        on_disk, covered,
        "every bad-*.yaml needs its expected message here"
    );

    let helm = helm();
    for (file, message) in &schema_errors {
        let run = helm.lint(false, &[values(file)]).unwrap();
        assert!(
            !run.success,
            "helm lint accepted {file}:\n{}",
            run.all_output()
        );
        assert!(
            run.all_output().contains(message),
            "helm lint on {file} should say {message:?}, said:\n{}",
            run.all_output()
        );
    }
    for (file, message) in &template_errors {
        let run = helm.template(&[values(file)], &[]).unwrap();
        assert!(!run.success, "helm template accepted {file}");
        assert!(
            run.all_output().contains(message),
            "helm template on {file} should say {message:?}, said:\n{}",
            run.all_output()
        );
    }

    let two_leaders = helm
        .template(&[], &["operator.leaderElection.enabled=false"])
        .unwrap();
    assert!(
        !two_leaders.success
            && two_leaders
                .all_output()
                .contains("operator.replicas > 1 needs operator.leaderElection.enabled"),
        "two operator replicas without leader election must not render:\n{}",
        two_leaders.all_output()
    );
}

#[test]
fn schema_is_strict_at_every_object_level() {
    fn walk(schema: &Value, path: &str, loose: &mut Vec<String>) {
        match schema {
            Value::Object(map) => {
                if map.get("type") == Some(&Value::from("object")) {
                    let closed = match map.get("additionalProperties") {
                        Some(Value::Bool(false)) => true,
                        // A map: its values are typed by this schema.
                        Some(Value::Object(_)) => true,
                        _ => false,
                    };
                    // The parts of a Pod affinity are left to the API server's own schema.
                    let delegated = path.contains("/affinity/properties/");
                    if !closed && !delegated {
                        loose.push(path.to_owned());
                    }
                }
                for (key, value) in map {
                    walk(value, &format!("{path}/{key}"), loose);
                }
            }
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(item, &format!("{path}/{i}"), loose);
                }
            }
            _ => {}
        }
    }
    let text = std::fs::read_to_string(chart::chart_dir().join("values.schema.json")).unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    let mut loose = Vec::new();
    walk(&schema, "", &mut loose);
    assert!(
        loose.is_empty(),
        "objects without additionalProperties: {loose:?}"
    );
}

#[test]
fn values_schema_embeds_the_current_crd_spec_schemas() {
    let python = chart::validator_python().unwrap();
    let run = chart::run_program(
        &python,
        [
            chart::chart_tests_dir()
                .join("crd_schema.py")
                .into_os_string(),
            "values-defs".into(),
            chart::repo_root().join("crds").into_os_string(),
            chart::chart_dir()
                .join("values.schema.json")
                .into_os_string(),
        ],
    )
    .unwrap();
    assert!(run.success, "{}", run.all_output());
}

#[test]
fn chart_crds_are_the_generated_crds() {
    let list = |dir: &Path| -> BTreeMap<String, String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read_to_string(&p).unwrap(),
                )
            })
            .collect()
    };
    let generated = list(&chart::repo_root().join("crds"));
    let shipped = list(&chart::chart_dir().join("crds"));
    assert!(!generated.is_empty());
    assert_eq!(
        generated.keys().collect::<Vec<_>>(),
        shipped.keys().collect::<Vec<_>>(),
        "charts/fastvirt/crds must hold the files of crds/"
    );
    for (file, text) in &generated {
        assert!(
            shipped[file] == *text,
            "charts/fastvirt/crds/{file} differs from crds/{file}: cp crds/*.yaml charts/fastvirt/crds/"
        );
    }
}

/// Writes a rendered manifest where the validators can read it.
fn rendered_file(dir: &Path, name: &str, values: &[PathBuf], set: &[&str]) -> (PathBuf, Manifest) {
    let run = helm().template(values, set).unwrap();
    assert!(run.success, "helm template failed:\n{}", run.all_output());
    let path = dir.join(name);
    std::fs::write(&path, &run.stdout).unwrap();
    (path, Manifest::parse(&run.stdout).unwrap())
}

#[test]
fn rendered_objects_validate_against_kubernetes_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let all_on = [
        "examples.blockPool.enabled=true",
        "examples.nodeTuningProfile.enabled=true",
        "operator.metrics.serviceMonitor.enabled=true",
        "node.metrics.serviceMonitor.enabled=true",
    ];
    let renders = [
        rendered_file(dir.path(), "defaults.yaml", &[], &[]),
        rendered_file(dir.path(), "everything.yaml", &[], &all_on),
        rendered_file(dir.path(), "production.yaml", &production(), &[]),
        rendered_file(
            dir.path(),
            "minimal.yaml",
            &[],
            &[
                "agent.enabled=false",
                "controller.enabled=false",
                "node.sidecars.snapshotter.enabled=false",
                "operator.metrics.service.enabled=false",
                "operator.replicas=1",
                "operator.leaderElection.enabled=false",
            ],
        ),
    ];
    let python = chart::validator_python().unwrap();
    let validator = python.with_file_name("kubernetes-validate");
    // Kinds whose schemas come from CRDs: fastvirt's are checked against crds/ in another test;
    // the ServiceMonitor's CRD is the Prometheus Operator's.
    let crd_groups = ["fastvirt.io/", "monitoring.coreos.com/"];
    for (path, manifest) in &renders {
        let run = chart::run_program(
            &validator,
            [
                "--strict".into(),
                "--kubernetes-version".into(),
                KUBERNETES_VERSION.into(),
                path.clone().into_os_string(),
            ],
        )
        .unwrap();
        let output = run.all_output();
        assert!(
            run.success && !output.contains("ERROR"),
            "{} does not validate against Kubernetes {KUBERNETES_VERSION}:\n{output}",
            path.display()
        );
        let built_in = manifest
            .objects
            .iter()
            .filter(|o| {
                let api_version = o["apiVersion"].as_str().unwrap_or_default();
                !crd_groups.iter().any(|g| api_version.starts_with(g))
            })
            .count();
        let passed = output.matches(" passed for resource ").count();
        assert_eq!(
            passed,
            built_in,
            "{}: every built-in object must have been checked:\n{output}",
            path.display()
        );
        for line in output
            .lines()
            .filter(|l| l.contains("Couldn't find schema"))
        {
            assert!(
                crd_groups.iter().any(|g| line.contains(g)),
                "no schema for a built-in kind: {line}"
            );
        }
    }
}

/// Every fastvirt resource in `manifest`, checked by fastvirt-api's validator the way an API server
/// with strict field validation checks it: structure, enums, unknown fields and the CEL rules.
/// Returns how many there were.
fn assert_custom_resources_valid(manifest: &Manifest, what: &str) -> usize {
    let validator = fastvirt_api::validation::CrdValidator::fastvirt();
    let mut checked = 0;
    for object in &manifest.objects {
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        if api_version.starts_with("fastvirt.io/") {
            assert_eq!(validator.validate(object), Ok(()), "{what}");
            checked += 1;
        }
    }
    checked
}

#[test]
fn custom_resources_the_chart_renders_are_valid() {
    for (values, set) in [
        (production(), Vec::new()),
        (
            Vec::new(),
            vec![
                "examples.blockPool.enabled=true",
                "examples.nodeTuningProfile.enabled=true",
            ],
        ),
    ] {
        let manifest = render(&values, &set);
        assert_eq!(
            manifest.of_kind("BlockPool").count() + manifest.of_kind("NodeTuningProfile").count(),
            2
        );
        let what = format!("values {values:?} {set:?}");
        assert_eq!(assert_custom_resources_valid(&manifest, &what), 2, "{what}");
    }
}

#[test]
fn csidriver_object_matches_the_driver() {
    let manifest = defaults();
    let driver = manifest
        .get("CSIDriver", fastvirt_csi::DRIVER_NAME)
        .unwrap();
    let spec = &driver["spec"];
    assert_eq!(spec["attachRequired"], false);
    assert_eq!(spec["podInfoOnMount"], true);
    assert_eq!(spec["storageCapacity"], true);
    assert_eq!(
        spec["volumeLifecycleModes"],
        serde_json::json!(["Persistent"])
    );
}

/// The socket the plugin serves, the one every sidecar dials, and the host path the registrar
/// gives kubelet are the same file, for any kubeletDir.
#[test]
fn socket_paths_agree_between_plugin_sidecars_and_kubelet() {
    for (values, kubelet_dir) in [
        (Vec::new(), "/var/lib/kubelet"),
        (production(), "/var/lib/k0s/kubelet"),
    ] {
        let manifest = render(&values, &[]);
        let pod = pod_spec(&manifest, "DaemonSet", NODE_DAEMONSET);
        let plugin = container(pod, "fastvirt-csi").unwrap();
        let endpoint = flag_value(plugin, "--endpoint").expect("--endpoint");
        let socket_in_pod = endpoint.strip_prefix("unix://").expect("unix:// endpoint");
        let plugin_mount = mount_of(plugin, "plugin-dir").expect("plugin-dir mount");
        let mount_path = plugin_mount["mountPath"].as_str().unwrap();
        let socket_name = Path::new(socket_in_pod)
            .strip_prefix(mount_path)
            .expect("the socket lies in the plugin-dir mount");

        let plugin_dir = volume(pod, "plugin-dir").unwrap()["hostPath"]["path"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            plugin_dir,
            format!("{kubelet_dir}/plugins/{}", fastvirt_csi::DRIVER_NAME)
        );
        let socket_on_host = Path::new(&plugin_dir).join(socket_name);

        let registrar = container(pod, "node-driver-registrar").unwrap();
        assert_eq!(
            flag_value(registrar, "--kubelet-registration-path").map(Path::new),
            Some(socket_on_host.as_path())
        );
        assert_eq!(
            volume(pod, "registration-dir").unwrap()["hostPath"]["path"],
            format!("{kubelet_dir}/plugins_registry")
        );
        assert_eq!(
            mount_of(registrar, "registration-dir").unwrap()["mountPath"],
            "/registration"
        );

        for sidecar in [
            "node-driver-registrar",
            "csi-provisioner",
            "csi-snapshotter",
            "liveness-probe",
        ] {
            let sidecar_container = container(pod, sidecar).unwrap();
            let address = flag_value(sidecar_container, "--csi-address").expect("--csi-address");
            let mount = mount_of(sidecar_container, "plugin-dir")
                .unwrap_or_else(|| panic!("{sidecar} does not mount plugin-dir"));
            let dialed = Path::new(address)
                .strip_prefix(mount["mountPath"].as_str().unwrap())
                .unwrap_or_else(|_| {
                    panic!("{sidecar} dials {address} outside its plugin-dir mount")
                });
            assert_eq!(dialed, socket_name, "{sidecar}");
        }

        // The kubelet paths the plugin mounts into must be the ones kubelet uses.
        for (name, path) in [
            ("pods-dir", format!("{kubelet_dir}/pods")),
            (
                "csi-staging-dir",
                format!("{kubelet_dir}/plugins/kubernetes.io/csi"),
            ),
        ] {
            assert_eq!(
                volume(pod, name).unwrap()["hostPath"]["path"],
                path.as_str()
            );
            assert_eq!(mount_of(plugin, name).unwrap()["mountPath"], path.as_str());
        }
    }
}

#[test]
fn sidecars_run_in_distributed_mode_with_capacity_tracking() {
    let manifest = defaults();
    let pod = pod_spec(&manifest, "DaemonSet", NODE_DAEMONSET);
    for c in pod["containers"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        assert!(
            !has_flag(c, "--leader-election"),
            "{name}: one instance per node, no leader election"
        );
    }

    let provisioner = container(pod, "csi-provisioner").unwrap();
    for flag in [
        "--node-deployment",
        "--enable-capacity",
        "--extra-create-metadata",
        "--strict-topology",
    ] {
        assert!(has_flag(provisioner, flag), "csi-provisioner needs {flag}");
    }
    assert_eq!(
        flag_value(provisioner, "--immediate-topology"),
        Some("false")
    );
    // Level 1: the pod's owner, the DaemonSet, owns the CSIStorageCapacity objects.
    assert_eq!(
        flag_value(provisioner, "--capacity-ownerref-level"),
        Some("1")
    );
    assert_eq!(
        env_field_path(provisioner, "NODE_NAME"),
        Some("spec.nodeName")
    );
    assert_eq!(
        env_field_path(provisioner, "NAMESPACE"),
        Some("metadata.namespace")
    );
    assert_eq!(
        env_field_path(provisioner, "POD_NAME"),
        Some("metadata.name")
    );

    let snapshotter = container(pod, "csi-snapshotter").unwrap();
    assert!(has_flag(snapshotter, "--node-deployment"));
    assert_eq!(
        env_field_path(snapshotter, "NODE_NAME"),
        Some("spec.nodeName")
    );

    // The cluster's one resizer only records sizes: the volume's node grows it.
    assert_eq!(
        flag_value(container(pod, "fastvirt-csi").unwrap(), "--expansion"),
        Some("node")
    );
    assert!(
        container(pod, "csi-resizer").is_err(),
        "one resizer per cluster, not per node"
    );
    let controller = pod_spec(&manifest, "Deployment", CONTROLLER);
    let resizer = container(controller, "csi-resizer").unwrap();
    assert_eq!(
        flag_value(resizer, "--handle-volume-inuse-error"),
        Some("false")
    );
    assert!(has_flag(resizer, "--leader-election"));
    assert!(has_flag(resizer, "--extra-modify-metadata"));
    let central = container(controller, "fastvirt-csi").unwrap();
    assert_eq!(flag_value(central, "--mode"), Some("controller"));
    assert_eq!(flag_value(central, "--expansion"), Some("node"));
    assert_eq!(flag_value(central, "--kube-api"), Some("true"));
    // Both containers meet at one socket.
    assert_eq!(
        flag_value(central, "--endpoint").and_then(|e| e.strip_prefix("unix://")),
        flag_value(resizer, "--csi-address")
    );

    // The plugin's liveness probe asks the livenessprobe sidecar, which must listen there.
    let plugin = container(pod, "fastvirt-csi").unwrap();
    let probe_port = &plugin["livenessProbe"]["httpGet"]["port"];
    let port_number = plugin["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| &p["name"] == probe_port)
        .expect("the probe's named port")["containerPort"]
        .as_u64()
        .unwrap();
    let liveness = container(pod, "liveness-probe").unwrap();
    assert_eq!(
        flag_value(liveness, "--health-port"),
        Some(port_number.to_string().as_str())
    );
    let registrar = container(pod, "node-driver-registrar").unwrap();
    let registrar_port = registrar["ports"][0]["containerPort"].as_u64().unwrap();
    assert_eq!(
        flag_value(registrar, "--http-endpoint"),
        Some(format!(":{registrar_port}").as_str())
    );
    assert_eq!(
        registrar["livenessProbe"]["httpGet"]["port"],
        registrar["ports"][0]["name"]
    );

    // The node id is the node's name: the topology value and the provisioner's NODE_NAME agree.
    assert_eq!(flag_value(plugin, "--node-id"), Some("$(NODE_NAME)"));
    assert_eq!(env_field_path(plugin, "NODE_NAME"), Some("spec.nodeName"));
    assert_eq!(flag_value(plugin, "--mode"), Some("all"));
    assert_eq!(
        flag_value(plugin, "--pool-config"),
        Some("/etc/fastvirt/pools/pools.yaml")
    );
    assert_eq!(pod["priorityClassName"], "system-node-critical");

    // Sidecar images are the values' current upstream releases.
    let images: BTreeMap<&str, &str> = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["name"].as_str().unwrap(), c["image"].as_str().unwrap()))
        .collect();
    assert_eq!(
        images["node-driver-registrar"],
        "registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.17.0"
    );
    // The versions the test cluster builds from their Go modules and runs (install-kube.sh).
    let built = built_versions();
    assert_eq!(
        images["csi-provisioner"],
        format!(
            "registry.k8s.io/sig-storage/csi-provisioner:{}",
            built["PROVISIONER_VERSION"]
        )
    );
    let controller_images: BTreeMap<&str, &str> =
        pod_spec(&manifest, "Deployment", CONTROLLER)["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["name"].as_str().unwrap(), c["image"].as_str().unwrap()))
            .collect();
    assert_eq!(
        controller_images["csi-resizer"],
        format!(
            "registry.k8s.io/sig-storage/csi-resizer:{}",
            built["RESIZER_VERSION"]
        )
    );
    assert_eq!(
        images["csi-snapshotter"],
        format!(
            "registry.k8s.io/sig-storage/csi-snapshotter:{}",
            built["SNAPSHOTTER_VERSION"]
        )
    );
    assert_eq!(
        images["liveness-probe"],
        "registry.k8s.io/sig-storage/livenessprobe:v2.20.0"
    );
    assert_eq!(
        images["fastvirt-csi"],
        "ghcr.io/fastvirt/fastvirt-csi:0.1.0"
    );
}

/// `NAME=version` lines of `scripts/install-kube.sh --print-versions`.
fn built_versions() -> BTreeMap<String, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-kube.sh");
    let out = std::process::Command::new("bash")
        .arg(&script)
        .arg("--print-versions")
        .output()
        .expect("install-kube.sh runs");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
        .collect()
}

#[test]
fn builtin_registration_replaces_the_registrar_and_livenessprobe() {
    let manifest = render(&[], &["node.builtinRegistration=true"]);
    let pod = pod_spec(&manifest, "DaemonSet", NODE_DAEMONSET);
    assert!(container(pod, "node-driver-registrar").is_err());
    assert!(container(pod, "liveness-probe").is_err());
    let plugin = container(pod, "fastvirt-csi").unwrap();
    assert_eq!(
        flag_value(plugin, "--kubelet-registration-path"),
        Some("/var/lib/kubelet/plugins/block.fastvirt.io/csi.sock")
    );
    assert_eq!(
        flag_value(plugin, "--registration-dir"),
        Some("/registration")
    );
    assert_eq!(flag_value(plugin, "--health-port"), Some("9808"));
    let mounts: Vec<&str> = plugin["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["name"] == "registration-dir")
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert_eq!(mounts, ["/registration"]);
    assert_eq!(plugin["livenessProbe"]["httpGet"]["port"], "healthz");
}

#[test]
fn optional_sidecars_can_be_left_out() {
    let manifest = render(
        &[],
        &[
            "controller.enabled=false",
            "node.sidecars.snapshotter.enabled=false",
        ],
    );
    let pod = pod_spec(&manifest, "DaemonSet", NODE_DAEMONSET);
    assert!(manifest.get("Deployment", CONTROLLER).is_err());
    assert!(container(pod, "csi-snapshotter").is_err());
    let grants = manifest.grants_of(NAMESPACE, NODE_DAEMONSET).unwrap();
    assert!(
        !grants
            .iter()
            .any(|g| g.resource == "volumesnapshotcontents/status"
                || g.resource == "persistentvolumeclaims/status"),
        "without their sidecars, nothing may update snapshot contents or PVC status"
    );
}

#[test]
fn privileges_and_mount_propagation_only_where_needed() {
    for manifest in [everything(), render(&production(), &[])] {
        let mut privileged = BTreeSet::new();
        let mut bidirectional = BTreeSet::new();
        for (owner, c) in manifest.containers() {
            let name = c["name"].as_str().unwrap();
            if c["securityContext"]["privileged"] == true {
                privileged.insert(format!("{owner}/{name}"));
            } else {
                assert_eq!(
                    c["securityContext"]["allowPrivilegeEscalation"], false,
                    "{owner}/{name}"
                );
                assert_eq!(
                    c["securityContext"]["capabilities"]["drop"],
                    serde_json::json!(["ALL"]),
                    "{owner}/{name}"
                );
                assert_eq!(
                    c["securityContext"]["readOnlyRootFilesystem"], true,
                    "{owner}/{name}"
                );
            }
            for mount in c["volumeMounts"].as_array().into_iter().flatten() {
                if mount["mountPropagation"] == "Bidirectional" {
                    bidirectional.insert(format!(
                        "{owner}/{name}:{}",
                        mount["mountPath"].as_str().unwrap()
                    ));
                }
            }
        }
        assert_eq!(
            privileged,
            BTreeSet::from([
                format!("DaemonSet/{NODE_DAEMONSET}/fastvirt-csi"),
                format!("DaemonSet/{AGENT_DAEMONSET}/agent"),
            ])
        );
        let kubelet_dir = pod_spec(&manifest, "DaemonSet", NODE_DAEMONSET)["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "pods-dir")
            .unwrap()["hostPath"]["path"]
            .as_str()
            .unwrap()
            .trim_end_matches("/pods")
            .to_owned();
        assert_eq!(
            bidirectional,
            BTreeSet::from([
                format!("DaemonSet/{NODE_DAEMONSET}/fastvirt-csi:{kubelet_dir}/pods"),
                format!(
                    "DaemonSet/{NODE_DAEMONSET}/fastvirt-csi:{kubelet_dir}/plugins/kubernetes.io/csi"
                ),
            ]),
            "only the mounts the plugin makes for kubelet propagate back to the host"
        );

        // hostPID only for the agent, which reads other processes' schedstat.
        for object in manifest.objects.iter() {
            let kind = object["kind"].as_str().unwrap_or_default();
            let name = object["metadata"]["name"].as_str().unwrap_or_default();
            let pod = match kind {
                "Pod" => &object["spec"],
                "Deployment" | "DaemonSet" => &object["spec"]["template"]["spec"],
                _ => continue,
            };
            let is_agent = kind == "DaemonSet" && name == AGENT_DAEMONSET;
            assert_eq!(pod["hostPID"] == true, is_agent, "hostPID on {kind}/{name}");
            assert!(pod["hostNetwork"].is_null(), "hostNetwork on {kind}/{name}");
        }

        let agent_pod = pod_spec(&manifest, "DaemonSet", AGENT_DAEMONSET);
        let agent = container(agent_pod, "agent").unwrap();
        assert_eq!(
            volume(agent_pod, "host-root").unwrap()["hostPath"]["path"],
            "/"
        );
        let host_root = mount_of(agent, "host-root").unwrap();
        assert_eq!(host_root["mountPath"], "/host");
        assert_eq!(host_root["mountPropagation"], "HostToContainer");
        assert_eq!(flag_value(agent, "--host-root"), Some("/host"));
        assert_eq!(flag_value(agent, "--node-name"), Some("$(NODE_NAME)"));
        assert_eq!(env_field_path(agent, "NODE_NAME"), Some("spec.nodeName"));
        assert_eq!(agent["args"][0], "run");

        // The operator and the install check run as non-root.
        for (kind, name, pod) in [
            (
                "Deployment",
                OPERATOR,
                pod_spec(&manifest, "Deployment", OPERATOR),
            ),
            (
                "Pod",
                INSTALL_CHECK,
                &manifest.get("Pod", INSTALL_CHECK).unwrap()["spec"],
            ),
        ] {
            assert_eq!(
                pod["securityContext"]["runAsNonRoot"], true,
                "{kind}/{name}"
            );
            assert_ne!(pod["securityContext"]["runAsUser"], 0, "{kind}/{name}");
        }
    }
}

#[test]
fn pools_reach_the_plugin_at_their_host_paths() {
    let manifest = render(&production(), &[]);
    let pod = pod_spec(&manifest, "DaemonSet", NODE_DAEMONSET);
    let plugin = container(pod, "fastvirt-csi").unwrap();
    for dir in ["/var/lib/fastvirt/pools", "/mnt/nvme0/fastvirt"] {
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["hostPath"]["path"] == dir)
            .unwrap_or_else(|| panic!("no hostPath volume for pool dir {dir}"));
        let mount = mount_of(plugin, volume["name"].as_str().unwrap()).expect("pool dir mount");
        assert_eq!(
            mount["mountPath"], dir,
            "pool paths in pools.yaml are host paths"
        );
        assert_eq!(
            mount["mountPropagation"], "HostToContainer",
            "a filesystem mounted on the pool dir later must become visible"
        );
    }
    let state_dir = flag_value(plugin, "--state-dir").unwrap();
    let state = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["hostPath"]["path"] == state_dir)
        .expect("state dir from the host");
    assert_eq!(
        mount_of(plugin, state["name"].as_str().unwrap()).unwrap()["mountPath"],
        state_dir
    );

    // The plugin reads the ConfigMap the operator writes; both get its name from one value.
    let pool_config = volume(pod, "pool-config").unwrap();
    assert_eq!(pool_config["configMap"]["optional"], true);
    let config_map = pool_config["configMap"]["name"].as_str().unwrap();
    let config_mount = mount_of(plugin, "pool-config").unwrap()["mountPath"]
        .as_str()
        .unwrap();
    assert_eq!(
        flag_value(plugin, "--pool-config"),
        Some(
            format!(
                "{config_mount}/{}",
                fastvirt_api::pool_config::CONFIG_MAP_KEY
            )
            .as_str()
        ),
        "the plugin reads the key the operator writes"
    );
    let operator = container(pod_spec(&manifest, "Deployment", OPERATOR), "operator").unwrap();
    assert_eq!(flag_value(operator, "--pool-config-map"), Some(config_map));
    assert_eq!(
        flag_value(operator, "--node-daemonset"),
        Some(NODE_DAEMONSET)
    );
    assert_eq!(operator["args"][0], "run");
    assert_eq!(
        env_field_path(operator, "FASTVIRT_NAMESPACE"),
        Some("metadata.namespace")
    );
    assert_eq!(env_field_path(operator, "POD_NAME"), Some("metadata.name"));
    assert_eq!(flag_value(operator, "--leader-election"), Some("true"));
}

#[test]
fn operator_metrics_service_and_service_monitor_select_the_operator() {
    let manifest = everything();
    let deployment = manifest.get("Deployment", OPERATOR).unwrap();
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let service = manifest
        .get("Service", "fastvirt-operator-metrics")
        .unwrap();
    for (key, value) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&pod_labels[key], value, "service selector {key}");
    }
    let operator = container(&deployment["spec"]["template"]["spec"], "operator").unwrap();
    let metrics_addr = flag_value(operator, "--metrics-addr").unwrap();
    let port = operator["ports"][0]["containerPort"].as_u64().unwrap();
    assert_eq!(metrics_addr, format!("0.0.0.0:{port}"));
    assert_eq!(
        service["spec"]["ports"][0]["targetPort"],
        operator["ports"][0]["name"]
    );
    assert_eq!(operator["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(operator["readinessProbe"]["httpGet"]["path"], "/readyz");

    let monitor = manifest.get("ServiceMonitor", OPERATOR).unwrap();
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(
            &service["metadata"]["labels"][key], value,
            "ServiceMonitor selector {key}"
        );
    }
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        service["spec"]["ports"][0]["name"]
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
}

#[test]
fn every_object_carries_the_recommended_labels() {
    for manifest in [everything(), render(&production(), &[])] {
        let required = [
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by",
            "app.kubernetes.io/part-of",
            "app.kubernetes.io/component",
            "helm.sh/chart",
        ];
        for object in &manifest.objects {
            let name = format!("{}/{}", object["kind"], object["metadata"]["name"]);
            let mut label_sets = vec![("object", &object["metadata"]["labels"])];
            if !object["spec"]["template"].is_null() {
                label_sets.push((
                    "pod template",
                    &object["spec"]["template"]["metadata"]["labels"],
                ));
            }
            for (what, labels) in label_sets {
                for key in required {
                    assert!(labels[key].is_string(), "{name} {what} lacks {key}");
                }
                assert_eq!(labels["app.kubernetes.io/instance"], RELEASE, "{name}");
            }
            let workload_selector = if object["spec"]["template"].is_null() {
                None
            } else {
                object["spec"]["selector"]["matchLabels"].as_object()
            };
            if let Some(selector) = workload_selector {
                let pod_labels = &object["spec"]["template"]["metadata"]["labels"];
                for (key, value) in selector {
                    assert_eq!(&pod_labels[key], value, "{name} selector {key}");
                }
                assert!(
                    !selector.contains_key("app.kubernetes.io/version")
                        && !selector.contains_key("helm.sh/chart"),
                    "{name}: a selector must not change on upgrade"
                );
            }
        }
    }
}

#[test]
fn images_resources_and_scheduling_come_from_values_per_component() {
    let manifest = render(&production(), &[]);
    let expect_image = |kind: &str, name: &str, container_name: &str, image: &str| {
        let c = container(pod_spec(&manifest, kind, name), container_name).unwrap();
        assert_eq!(c["image"], image, "{name}/{container_name}");
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert!(
            c["resources"]["requests"].is_object(),
            "{name}/{container_name} resources"
        );
    };
    expect_image(
        "Deployment",
        OPERATOR,
        "operator",
        "registry.example.com/fastvirt/fastvirt-operator:0.1.0",
    );
    expect_image(
        "DaemonSet",
        NODE_DAEMONSET,
        "fastvirt-csi",
        "registry.example.com/fastvirt/fastvirt-csi:0.1.0",
    );
    expect_image(
        "DaemonSet",
        AGENT_DAEMONSET,
        "agent",
        "registry.example.com/fastvirt/fastvirt-agent:0.1.0",
    );
    let install_check = &manifest.get("Pod", INSTALL_CHECK).unwrap()["spec"]["containers"][0];
    assert_eq!(
        install_check["image"],
        "registry.example.com/fastvirt/fastvirt-operator:0.1.0"
    );

    let node = pod_spec(&manifest, "DaemonSet", NODE_DAEMONSET);
    assert_eq!(node["nodeSelector"]["fastvirt.io/vm-host"], "true");
    assert_eq!(node["tolerations"][0]["key"], "kubevirt.io/dedicated");
    assert_eq!(node["imagePullSecrets"][0]["name"], "registry-credentials");
    let operator = pod_spec(&manifest, "Deployment", OPERATOR);
    assert!(operator["affinity"]["podAntiAffinity"].is_object());
    assert_eq!(operator["priorityClassName"], "system-cluster-critical");
    let provisioner = container(node, "csi-provisioner").unwrap();
    assert!(
        has_flag(provisioner, "--kube-api-qps"),
        "extraArgs reach the sidecar"
    );
}

#[test]
fn helm_test_pod_runs_the_install_check() {
    let manifest = defaults();
    let pod = manifest.get("Pod", INSTALL_CHECK).unwrap();
    assert_eq!(pod["metadata"]["annotations"]["helm.sh/hook"], "test");
    assert_eq!(pod["spec"]["restartPolicy"], "Never");
    let check = &pod["spec"]["containers"][0];
    assert_eq!(check["args"][0], "check-install");
    assert_eq!(
        flag_value(check, "--driver"),
        Some(fastvirt_csi::DRIVER_NAME)
    );
    assert_eq!(pod["spec"]["serviceAccountName"], INSTALL_CHECK);
    // The ServiceAccount and its rules are release objects, not hooks: they exist when it runs.
    let account = manifest.get("ServiceAccount", INSTALL_CHECK).unwrap();
    assert!(account["metadata"]["annotations"]["helm.sh/hook"].is_null());
}

#[test]
fn notes_tell_how_to_check_the_install() {
    let run = helm()
        .run([
            "install".into(),
            RELEASE.into(),
            chart::chart_dir().into_os_string(),
            "--namespace".into(),
            NAMESPACE.into(),
            "--dry-run=client".into(),
        ])
        .unwrap();
    assert!(run.success, "{}", run.all_output());
    let notes = run.stdout.split("NOTES:").nth(1).expect("NOTES rendered");
    for expected in [
        format!("kubectl -n {NAMESPACE} rollout status daemonset/{NODE_DAEMONSET}"),
        format!("helm test {RELEASE} -n {NAMESPACE}"),
        "kubectl get csinodes".to_owned(),
        "/var/lib/fastvirt/pools".to_owned(),
        "--enable-distributed-snapshotting".to_owned(),
    ] {
        assert!(
            notes.contains(&expected),
            "NOTES lack {expected:?}:\n{notes}"
        );
    }
}

fn assert_exact_rbac(
    manifest: &Manifest,
    account: &str,
    needed: &[fastvirt_api::rbac::Permission],
) {
    let grants = manifest
        .grants_of(NAMESPACE, account)
        .with_context(|| format!("grants of {account}"))
        .unwrap();
    assert!(!grants.is_empty(), "{account} is bound to nothing");
    let missing = missing(needed, &grants);
    assert!(missing.is_empty(), "{account} lacks: {missing:#?}");
    let excess = excess(&grants, needed);
    assert!(
        excess.is_empty(),
        "{account} holds more than it calls for: {excess:#?}"
    );
    assert!(
        manifest.get("ServiceAccount", account).is_ok(),
        "{account} has no ServiceAccount"
    );
}

#[test]
fn rbac_grants_exactly_what_each_binary_calls() {
    let manifest = defaults();
    assert_exact_rbac(&manifest, OPERATOR, fastvirt_operator::rbac::REQUIRED);
    assert_exact_rbac(&manifest, AGENT_DAEMONSET, fastvirt_agent::rbac::REQUIRED);
    assert_exact_rbac(&manifest, NODE_DAEMONSET, chart::NODE_SIDECARS);
    assert_exact_rbac(&manifest, CONTROLLER, chart::CONTROLLER);

    // The one DaemonSet the operator may patch is the node plugin it restarts.
    let daemonset_grants: Vec<_> = manifest
        .grants_of(NAMESPACE, OPERATOR)
        .unwrap()
        .into_iter()
        .filter(|g| g.resource == "daemonsets")
        .collect();
    assert!(!daemonset_grants.is_empty());
    for grant in daemonset_grants {
        assert_eq!(grant.resource_names, vec![NODE_DAEMONSET.to_owned()]);
    }

    // Each workload runs as its own account.
    assert_eq!(
        pod_spec(&manifest, "Deployment", OPERATOR)["serviceAccountName"],
        OPERATOR
    );
    assert_eq!(
        pod_spec(&manifest, "DaemonSet", NODE_DAEMONSET)["serviceAccountName"],
        NODE_DAEMONSET
    );
    assert_eq!(
        pod_spec(&manifest, "Deployment", CONTROLLER)["serviceAccountName"],
        CONTROLLER
    );
    assert_eq!(
        pod_spec(&manifest, "DaemonSet", AGENT_DAEMONSET)["serviceAccountName"],
        AGENT_DAEMONSET
    );
}

#[test]
fn install_check_account_holds_exactly_its_permissions() {
    assert_exact_rbac(
        &defaults(),
        INSTALL_CHECK,
        fastvirt_operator::rbac::CHECK_INSTALL,
    );
}

#[test]
fn operator_without_leader_election_holds_no_leases() {
    let manifest = render(
        &[],
        &[
            "operator.replicas=1",
            "operator.leaderElection.enabled=false",
        ],
    );
    let grants = manifest.grants_of(NAMESPACE, OPERATOR).unwrap();
    assert!(!grants.iter().any(|g| g.resource == "leases"));
    let operator = container(pod_spec(&manifest, "Deployment", OPERATOR), "operator").unwrap();
    assert_eq!(flag_value(operator, "--leader-election"), Some("false"));
}

// ---- Dockerfiles -------------------------------------------------------------------------------

/// The binaries the workspace builds, from `cargo metadata`.
fn workspace_binaries() -> BTreeSet<String> {
    let output = std::process::Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(chart::repo_root())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .filter(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "bin"))
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Dockerfile instructions with continuation lines joined and comments dropped.
fn instructions(text: &str) -> Vec<String> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(trimmed);
            joined.push(std::mem::take(&mut current));
        }
    }
    joined
}

/// The tools the driver runs: every `run("…")`/`run_raw("…")` in csi-driver/src, plus the
/// mkfs programs it names by filesystem.
fn driver_tools() -> BTreeSet<String> {
    fn scan(dir: &Path, found: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                scan(&path, found);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for call in ["run(", "run_raw("] {
                    for (at, _) in text.match_indices(call) {
                        let rest = text[at + call.len()..].trim_start();
                        if let Some(quoted) = rest.strip_prefix('"') {
                            let name: String = quoted.chars().take_while(|c| *c != '"').collect();
                            if !name.is_empty() && !name.contains(' ') {
                                found.insert(name);
                            }
                        }
                    }
                }
            }
        }
    }
    let mut tools = BTreeSet::new();
    scan(&chart::repo_root().join("csi-driver/src"), &mut tools);
    tools.extend(["mkfs.ext4".to_owned(), "mkfs.xfs".to_owned()]);
    tools
}

/// The Debian package that ships `tool` on this (Debian) machine, from dpkg's file lists.
fn debian_package_of(tool: &str) -> Option<String> {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let output = std::process::Command::new("dpkg")
            .args(["-S", &format!("{dir}/{tool}")])
            .output()
            .ok()?;
        if output.status.success() {
            let text = String::from_utf8_lossy(&output.stdout);
            return text.split(':').next().map(|p| p.trim().to_owned());
        }
    }
    None
}

#[test]
fn dockerfiles_pin_their_bases_and_build_workspace_binaries() {
    let binaries = workspace_binaries();
    let images = chart::repo_root().join("images");
    let expected = BTreeMap::from([
        ("csi.Dockerfile", "fastvirt-csi"),
        ("operator.Dockerfile", "fastvirt-operator"),
        ("agent.Dockerfile", "fastvirt-agent"),
    ]);
    let present: BTreeSet<String> = std::fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".Dockerfile"))
        .collect();
    assert_eq!(
        present,
        expected
            .keys()
            .map(|k| k.to_string())
            .collect::<BTreeSet<_>>()
    );

    let is_digest = |reference: &str| {
        reference
            .split_once("@sha256:")
            .is_some_and(|(name, digest)| {
                name.contains(':')
                    && digest.len() == 64
                    && digest
                        .chars()
                        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            })
    };
    for (file, binary) in &expected {
        let text = std::fs::read_to_string(images.join(file)).unwrap();
        let steps = instructions(&text);
        let mut stages = BTreeSet::new();
        let mut final_user = None;
        for step in &steps {
            let words: Vec<&str> = step.split_whitespace().collect();
            match words[0].to_ascii_uppercase().as_str() {
                "FROM" => {
                    let reference = words[1];
                    assert!(
                        stages.contains(reference) || is_digest(reference),
                        "{file}: FROM {reference} is neither an earlier stage nor tag@sha256:digest"
                    );
                    if let Some(position) = words.iter().position(|w| w.eq_ignore_ascii_case("AS"))
                    {
                        stages.insert(words[position + 1].to_owned());
                    }
                    final_user = None;
                }
                "USER" => final_user = Some(words[1].to_owned()),
                "RUN" if step.contains("cargo build") => {
                    let built = flag_after(&words, "--bin").expect("cargo build --bin");
                    assert_eq!(built, *binary, "{file} builds the wrong binary");
                    assert!(
                        binaries.contains(built),
                        "{file}: {built} is not a workspace [[bin]]"
                    );
                    assert!(step.contains("--locked"), "{file}: cargo build --locked");
                }
                "COPY" if step.contains("--from=") => {
                    let source = words[words.len() - 2];
                    let name = Path::new(source).file_name().unwrap().to_string_lossy();
                    assert!(
                        binaries.contains(name.as_ref()),
                        "{file} copies {source}, not a workspace binary"
                    );
                }
                _ => {}
            }
        }
        let entrypoint = steps
            .iter()
            .find(|s| s.starts_with("ENTRYPOINT"))
            .unwrap_or_else(|| panic!("{file} has no ENTRYPOINT"));
        assert!(
            entrypoint.contains(&format!("/usr/local/bin/{binary}\"")),
            "{file}: {entrypoint}"
        );
        let user =
            final_user.unwrap_or_else(|| panic!("{file}: the runtime stage must name its USER"));
        if *binary == "fastvirt-operator" {
            assert!(
                !user.starts_with('0') && !user.starts_with("root"),
                "{file}: the operator needs no root, runs as {user}"
            );
        }
        assert!(
            images.join(format!("{file}.dockerignore")).is_file(),
            "{file}.dockerignore keeps target/ out of the build context"
        );
    }

    // The node image installs the package of every tool the driver runs.
    let csi = std::fs::read_to_string(images.join("csi.Dockerfile")).unwrap();
    let install = instructions(&csi)
        .into_iter()
        .find(|s| s.contains("apt-get install"))
        .expect("csi.Dockerfile installs the driver's tools");
    let installed: BTreeSet<&str> = install
        .split_whitespace()
        .skip_while(|w| *w != "install")
        .take_while(|w| *w != "&&")
        .filter(|w| !w.starts_with('-') && *w != "install")
        .collect();
    let tools = driver_tools();
    for tool in [
        "blkid",
        "fsfreeze",
        "mkfs.ext4",
        "mkfs.xfs",
        "resize2fs",
        "xfs_growfs",
        "btrfs",
    ] {
        assert!(
            tools.contains(tool),
            "the driver scan lost {tool}: {tools:?}"
        );
    }
    for tool in &tools {
        let package = debian_package_of(tool)
            .unwrap_or_else(|| panic!("no Debian package on this machine ships {tool}"));
        assert!(
            installed.contains(package.as_str()),
            "csi.Dockerfile must install {package} for {tool}; installs {installed:?}"
        );
    }
}

fn flag_after<'a>(words: &[&'a str], flag: &str) -> Option<&'a str> {
    words
        .iter()
        .position(|w| *w == flag)
        .and_then(|i| words.get(i + 1).copied())
}

#[test]
fn chart_images_have_dockerfiles() {
    let manifest = defaults();
    for (_, c) in manifest.containers() {
        let image = c["image"].as_str().unwrap();
        if let Some(rest) = image.strip_prefix("ghcr.io/fastvirt/") {
            let component = rest.split(':').next().unwrap();
            let dockerfile = format!("{}.Dockerfile", component.trim_start_matches("fastvirt-"));
            assert!(
                chart::repo_root()
                    .join("images")
                    .join(&dockerfile)
                    .is_file(),
                "{image} has no images/{dockerfile}"
            );
        } else {
            assert!(
                image.starts_with("registry.k8s.io/sig-storage/"),
                "unexpected image {image}"
            );
        }
    }
}

/// The README's install walk-through: its BlockPool, PVC and VirtualMachine fit together and are
/// valid resources.
#[test]
fn readme_install_example_is_valid() {
    let readme = std::fs::read_to_string(chart::repo_root().join("README.md")).unwrap();
    let section = readme
        .split("\n## Install on a cluster\n")
        .nth(1)
        .expect("README has an \"Install on a cluster\" section")
        .split("\n## ")
        .next()
        .unwrap();
    let yaml: Vec<&str> = section
        .split("```yaml\n")
        .skip(1)
        .map(|block| block.split("```").next().unwrap())
        .collect();
    let manifest = Manifest::parse(&yaml.join("---\n")).unwrap();
    let pool = manifest.of_kind("BlockPool").next().expect("a BlockPool");
    let claim = manifest
        .of_kind("PersistentVolumeClaim")
        .next()
        .expect("a PVC");
    let vm = manifest
        .of_kind("VirtualMachine")
        .next()
        .expect("a VirtualMachine");
    // The operator names the StorageClass after the pool unless the pool names it.
    let class = pool["spec"]["storageClass"]["name"]
        .as_str()
        .unwrap_or_else(|| pool["metadata"]["name"].as_str().unwrap());
    assert_eq!(claim["spec"]["storageClassName"], class);
    assert_eq!(claim["spec"]["volumeMode"], "Block");
    let claimed = vm["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]);
    assert!(claimed, "the VirtualMachine uses the PVC");
    let pool_path = pool["spec"]["backend"]["file"]["path"].as_str().unwrap();
    assert!(
        pool_path.starts_with("/var/lib/fastvirt/pools/"),
        "inside the default poolHostDirs"
    );

    assert_eq!(assert_custom_resources_valid(&manifest, "README"), 1);

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("readme.yaml");
    std::fs::write(&file, yaml.join("---\n")).unwrap();
    let python = chart::validator_python().unwrap();
    let run = chart::run_program(
        &python.with_file_name("kubernetes-validate"),
        [
            "--strict".into(),
            "--kubernetes-version".into(),
            KUBERNETES_VERSION.into(),
            file.into_os_string(),
        ],
    )
    .unwrap();
    assert!(
        run.success
            && run
                .all_output()
                .contains("passed for resource persistentvolumeclaim/vm1-data"),
        "{}",
        run.all_output()
    );
}

/// Newest modification time of the files under `dir`.
fn newest_file(dir: &Path) -> std::time::SystemTime {
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let time = if path.is_dir() {
            newest_file(&path)
        } else {
            path.metadata().unwrap().modified().unwrap()
        };
        newest = newest.max(time);
    }
    newest
}

/// The arguments the chart gives each fastvirt container are accepted by that binary's real
/// command line: clap rejects an unknown flag or a bad value before it gets to `--help`.
///
/// `cargo test --workspace` (scripts/test.sh, CI) builds the three binaries next to this test;
/// a run of this test alone may find them missing or older than their sources, and then says so
/// and checks nothing, except under CI=true, where that is a failure.
#[test]
fn chart_arguments_are_accepted_by_the_binaries() {
    let build_dir = std::env::current_exe()
        .unwrap()
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .to_path_buf();
    let root = chart::repo_root();
    let binaries = [
        ("fastvirt-csi", "csi-driver"),
        ("fastvirt-operator", "operator"),
        ("fastvirt-agent", "agent"),
    ];
    let mut stale = Vec::new();
    for (binary, crate_dir) in binaries {
        let path = build_dir.join(binary);
        let sources =
            newest_file(&root.join(crate_dir).join("src")).max(newest_file(&root.join("api/src")));
        let fresh = path
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|built| built >= sources);
        if !fresh {
            stale.push(format!("{} (cargo build -p {binary})", path.display()));
        }
    }
    if !stale.is_empty() {
        let message = format!("missing or older than their sources: {}", stale.join(", "));
        assert!(std::env::var_os("CI").is_none(), "{message}");
        eprintln!("chart_arguments_are_accepted_by_the_binaries checked nothing: {message}");
        return;
    }

    let manifest = render(&production(), &[]);
    let runs = [
        ("DaemonSet", NODE_DAEMONSET, "fastvirt-csi", "fastvirt-csi"),
        ("Deployment", OPERATOR, "operator", "fastvirt-operator"),
        ("DaemonSet", AGENT_DAEMONSET, "agent", "fastvirt-agent"),
    ];
    let mut commands: Vec<(String, &Value)> = runs
        .iter()
        .map(|(kind, name, container_name, binary)| {
            let pod = pod_spec(&manifest, kind, name);
            (binary.to_string(), container(pod, container_name).unwrap())
        })
        .collect();
    let install_check = &manifest.get("Pod", INSTALL_CHECK).unwrap()["spec"]["containers"][0];
    commands.push(("fastvirt-operator".to_owned(), install_check));
    for (binary, c) in commands {
        // kubelet expands $(NODE_NAME) from the container's environment.
        let mut args: Vec<String> = c["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().replace("$(NODE_NAME)", "node-1"))
            .collect();
        args.push("--help".to_owned());
        let run = chart::run_program(&build_dir.join(&binary), args.clone()).unwrap();
        assert!(
            run.success,
            "{binary} rejects the chart's arguments {args:?}:\n{}",
            run.all_output()
        );
    }
}

#[test]
fn vm_placement_policy_warns_by_default_and_can_deny() {
    let binding_actions = |manifest: &Manifest| {
        manifest
            .of_kind("ValidatingAdmissionPolicyBinding")
            .find(|b| {
                b["spec"]["policyName"]
                    .as_str()
                    .unwrap_or_default()
                    .ends_with("-vm-placement")
            })
            .map(|b| b["spec"]["validationActions"].clone())
    };
    let manifest = defaults();
    let policy = manifest
        .of_kind("ValidatingAdmissionPolicy")
        .find(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .ends_with("-vm-placement")
        })
        .expect("the VM placement policy");
    assert_eq!(policy["spec"]["paramKind"]["kind"], "TuningSummary");
    assert_eq!(
        policy["spec"]["failurePolicy"], "Ignore",
        "never blocks VMs by failing"
    );
    assert_eq!(
        policy["spec"]["matchConstraints"]["resourceRules"][0]["resources"][0],
        "virtualmachines"
    );
    assert_eq!(
        binding_actions(&manifest),
        Some(serde_json::json!(["Warn"]))
    );
    let deny = render(&[], &["kubevirt.admissionPolicy.action=Deny"]);
    assert_eq!(binding_actions(&deny), Some(serde_json::json!(["Deny"])));
    let off = render(&[], &["kubevirt.admissionPolicy.enabled=false"]);
    assert_eq!(binding_actions(&off), None);
    assert!(
        helm()
            .render(&[], &["kubevirt.admissionPolicy.action=Audit"])
            .is_err(),
        "the schema allows only Warn and Deny"
    );
}

#[test]
fn node_metrics_service_and_service_monitor_select_the_node_plugins() {
    let manifest = everything();
    let daemonset = manifest.get("DaemonSet", NODE_DAEMONSET).unwrap();
    let pod_labels = &daemonset["spec"]["template"]["metadata"]["labels"];
    let service = manifest.get("Service", "fastvirt-node-metrics").unwrap();
    assert_eq!(
        service["spec"]["clusterIP"], "None",
        "one endpoint per plugin"
    );
    for (key, value) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&pod_labels[key], value, "service selector {key}");
    }
    let plugin = container(&daemonset["spec"]["template"]["spec"], "fastvirt-csi").unwrap();
    let port = flag_value(plugin, "--metrics-port").unwrap();
    let named = plugin["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "metrics")
        .expect("a container port named metrics");
    assert_eq!(named["containerPort"].to_string(), port);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");
    let monitor = manifest.get("ServiceMonitor", NODE_DAEMONSET).unwrap();
    for (key, value) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&service["metadata"]["labels"][key], value, "{key}");
    }
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
}

/// The metric names a PromQL expression reads: `fastvirt_csi_…` identifiers.
fn metric_names(expression: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expression;
    while let Some(start) = rest.find("fastvirt_csi_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn every_dashboard_query_names_a_metric_the_plugin_exports() {
    let manifest = defaults();
    let config_map = manifest
        .get("ConfigMap", "fastvirt-node-dashboard")
        .unwrap();
    assert_eq!(
        config_map["metadata"]["labels"]["grafana_dashboard"], "1",
        "Grafana's sidecar finds it by this label"
    );
    let dashboard: Value = serde_json::from_str(
        config_map["data"]["fastvirt-storage.json"]
            .as_str()
            .unwrap(),
    )
    .expect("the dashboard is JSON");
    // What the plugin's registry encodes once it has answered a call: each family's TYPE line,
    // and the sample names the exposition format gives each type.
    let pools = std::sync::Arc::new(fastvirt_csi::pool_set::PoolSet::files(5, 100));
    let qos = fastvirt_csi::qos::QosEnforcer::new(
        std::sync::Arc::clone(&pools),
        fastvirt_csi::qos::QosPaths {
            kubelet_dir: "/nonexistent".into(),
            cgroup_root: "/nonexistent".into(),
            proc_dir: "/nonexistent".into(),
        },
    );
    let metrics = fastvirt_csi::metrics::Metrics::new(
        pools,
        "/sys/block".into(),
        Some(std::sync::Arc::new(qos)),
    );
    let answer = tower::service_fn(|_: http::Request<()>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(()))
    });
    let call = tower::ServiceExt::oneshot(
        tower::Layer::layer(&metrics.layer(), answer),
        http::Request::post("/csi.v1.Identity/Probe")
            .body(())
            .unwrap(),
    );
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(call)
        .unwrap();
    let exported = metrics.encode();
    let mut samples = std::collections::BTreeSet::new();
    for line in exported.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            for suffix in suffixes {
                samples.insert(format!("{name}{suffix}"));
            }
        }
    }
    assert!(samples.len() > 10, "{exported}");
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expression = target["expr"].as_str().unwrap();
            let names = metric_names(expression);
            assert!(!names.is_empty(), "{expression} reads no fastvirt metric");
            for name in names {
                assert!(
                    samples.contains(&name),
                    "panel {:?} reads {name}, which fastvirt-csi does not export ({samples:?})",
                    panel["title"]
                );
                queried += 1;
            }
        }
    }
    assert!(queried >= 12, "{queried}");
    let variable = &dashboard["templating"]["list"][1]["query"]["query"];
    for name in metric_names(variable.as_str().unwrap()) {
        assert!(samples.contains(&name), "{name}");
    }
}
