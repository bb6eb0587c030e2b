//! The Helm chart under test: finding the real helm binary and the schema validators that
//! `scripts/install-chart-tools.sh` installs, rendering `charts/fastvirt`, and reading the rendered
//! objects — containers, volumes, and the RBAC rules each ServiceAccount ends up with.

use anyhow::{Context, Result, bail, ensure};
use fastvirt_api::rbac::{Permission, Scope};
use serde_json::Value;
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The permissions the CSI sidecars in the node pod need, as their documentation lists them for
/// this deployment shape: distributed provisioning with capacity tracking and distributed
/// snapshotting, neither with leader election. fastvirt-csi itself only watches the
/// PersistentVolumes labelled with its node (`list`, `watch`, which the provisioner's rule has),
/// so these are all the node ServiceAccount may hold.
pub const NODE_SIDECARS: &[Permission] = &[
    // external-provisioner: PVs of its node's PVCs (patch: finalizers since v5), and the PVC's
    // selected-node annotation for immediate binding with --node-deployment.
    Permission::cluster(
        "",
        "persistentvolumes",
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    Permission::cluster(
        "",
        "persistentvolumeclaims",
        &["get", "list", "watch", "update"],
    ),
    Permission::cluster(
        "storage.k8s.io",
        "storageclasses",
        &["get", "list", "watch"],
    ),
    Permission::cluster("storage.k8s.io", "csinodes", &["get", "list", "watch"]),
    Permission::cluster(
        "storage.k8s.io",
        "volumeattachments",
        &["get", "list", "watch"],
    ),
    // external-provisioner and external-resizer read the VolumeAttributesClass a PVC names.
    Permission::cluster(
        "storage.k8s.io",
        "volumeattributesclasses",
        &["get", "list", "watch"],
    ),
    Permission::cluster("", "nodes", &["get", "list", "watch"]),
    // external-provisioner: the VolumeSnapshots it restores from.
    Permission::cluster(
        "snapshot.storage.k8s.io",
        "volumesnapshots",
        &["get", "list", "watch", "update"],
    ),
    // external-provisioner reads contents (restore); external-snapshotter binds and updates them.
    Permission::cluster(
        "snapshot.storage.k8s.io",
        "volumesnapshotcontents",
        &["get", "list", "watch", "update", "patch"],
    ),
    Permission::cluster(
        "snapshot.storage.k8s.io",
        "volumesnapshotcontents/status",
        &["update", "patch"],
    ),
    Permission::cluster(
        "snapshot.storage.k8s.io",
        "volumesnapshotclasses",
        &["get", "list", "watch"],
    ),
    Permission::cluster(
        "",
        "events",
        &["list", "watch", "create", "update", "patch"],
    ),
    // external-provisioner --enable-capacity: CSIStorageCapacity objects in its own namespace,
    // owned by the DaemonSet it finds through its pod (--capacity-ownerref-level=1).
    Permission::namespaced(
        "storage.k8s.io",
        "csistoragecapacities",
        &[
            "get", "list", "watch", "create", "update", "patch", "delete",
        ],
    ),
    Permission::namespaced("", "pods", &["get"]),
];

/// The permissions of the controller pod: external-resizer with leader election, without
/// volume-in-use handling (`--handle-volume-inuse-error=false`, so it watches no pods) and with
/// VolumeAttributesClasses, and fastvirt-csi's reading of a PersistentVolume and recording of the
/// I/O limits asked for on it (`get`, `patch`).
pub const CONTROLLER: &[Permission] = &[
    Permission::cluster("", "persistentvolumes", &["get", "list", "watch", "patch"]),
    Permission::cluster("", "persistentvolumeclaims", &["get", "list", "watch"]),
    Permission::cluster("", "persistentvolumeclaims/status", &["patch"]),
    Permission::cluster(
        "storage.k8s.io",
        "volumeattributesclasses",
        &["get", "list", "watch"],
    ),
    Permission::cluster(
        "",
        "events",
        &["list", "watch", "create", "update", "patch"],
    ),
    Permission::namespaced(
        "coordination.k8s.io",
        "leases",
        &["get", "watch", "list", "delete", "update", "create"],
    ),
];

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e lives in the workspace")
        .to_path_buf()
}

pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/fastvirt")
}

/// Files the chart tests use besides the chart: values files and the CRD schema checker.
pub fn chart_tests_dir() -> PathBuf {
    repo_root().join("charts/tests")
}

fn tools_bin() -> PathBuf {
    repo_root().join("target/tools/bin")
}

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// A program the tests need: from its environment variable, the repo's tools dir, or PATH.
fn locate(env: &str, installed: PathBuf, program: &str) -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(env) {
        return Ok(PathBuf::from(path));
    }
    if installed.is_file() {
        return Ok(installed);
    }
    on_path(program).with_context(|| {
        format!(
            "{program} not found ({env} unset, nothing at {}, not on PATH): run scripts/install-chart-tools.sh",
            installed.display()
        )
    })
}

/// The outcome of one helm run, kept whole for assertion messages.
#[derive(Debug)]
pub struct Run {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from_output(output: Output) -> Run {
        Run {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// The helm binary, version 4.
#[derive(Debug)]
pub struct Helm {
    binary: PathBuf,
}

impl Helm {
    pub fn find() -> Result<Helm> {
        let binary = locate("FASTVIRT_HELM", tools_bin().join("helm"), "helm")?;
        let helm = Helm { binary };
        let version = helm.run(["version", "--short"])?;
        ensure!(
            version.success && version.stdout.starts_with("v4."),
            "{} is not helm v4: {}",
            helm.binary.display(),
            version.all_output()
        );
        Ok(helm)
    }

    pub fn run<I, S>(&self, args: I) -> Result<Run>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let output = Command::new(&self.binary)
            .args(args.into_iter().map(Into::into))
            .stdin(Stdio::null())
            // No kubeconfig: lint and template must not need a cluster.
            .env("KUBECONFIG", "/dev/null")
            .output()
            .with_context(|| format!("running {}", self.binary.display()))?;
        Ok(Run::from_output(output))
    }

    /// `helm lint [--strict] charts/fastvirt -f VALUES...`.
    pub fn lint(&self, strict: bool, values: &[PathBuf]) -> Result<Run> {
        let mut args: Vec<OsString> = vec!["lint".into()];
        if strict {
            args.push("--strict".into());
        }
        args.push(chart_dir().into());
        for file in values {
            args.push("--values".into());
            args.push(file.into());
        }
        self.run(args)
    }

    /// `helm template` of the chart as release `fastvirt` in namespace `fastvirt-system`.
    pub fn template(&self, values: &[PathBuf], set: &[&str]) -> Result<Run> {
        let mut args: Vec<OsString> = vec![
            "template".into(),
            RELEASE.into(),
            chart_dir().into(),
            "--namespace".into(),
            NAMESPACE.into(),
        ];
        for file in values {
            args.push("--values".into());
            args.push(file.into());
        }
        for assignment in set {
            args.push("--set".into());
            args.push(assignment.into());
        }
        self.run(args)
    }

    /// Renders the chart and parses the result; fails on any helm error.
    pub fn render(&self, values: &[PathBuf], set: &[&str]) -> Result<Manifest> {
        let run = self.template(values, set)?;
        ensure!(run.success, "helm template failed:\n{}", run.all_output());
        Manifest::parse(&run.stdout)
    }
}

pub const RELEASE: &str = "fastvirt";
pub const NAMESPACE: &str = "fastvirt-system";

/// The Python of the validator venv (kubernetes-validate, jsonschema).
pub fn validator_python() -> Result<PathBuf> {
    locate(
        "FASTVIRT_CHART_PYTHON",
        repo_root().join("target/tools/venv/bin/python"),
        "python3",
    )
}

pub fn run_program<I, S>(program: &Path, args: I) -> Result<Run>
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let output = Command::new(program)
        .args(args.into_iter().map(Into::into))
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    Ok(Run::from_output(output))
}

/// The objects `helm template` rendered, in order.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub objects: Vec<Value>,
}

impl Manifest {
    pub fn parse(yaml: &str) -> Result<Manifest> {
        let mut objects = Vec::new();
        for document in serde_yaml::Deserializer::from_str(yaml) {
            let value: Value = serde::Deserialize::deserialize(document)
                .context("a rendered document is not YAML")?;
            if !value.is_null() {
                objects.push(value);
            }
        }
        Ok(Manifest { objects })
    }

    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.objects.iter().filter(move |o| o["kind"] == kind)
    }

    pub fn get(&self, kind: &str, name: &str) -> Result<&Value> {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .with_context(|| format!("no {kind} named {name} in the rendered chart"))
    }

    /// Every container of every workload and hook pod, with the object it belongs to.
    pub fn containers(&self) -> Vec<(String, &Value)> {
        let mut found = Vec::new();
        for object in &self.objects {
            let pod_spec = match object["kind"].as_str() {
                Some("Pod") => &object["spec"],
                Some("Deployment" | "DaemonSet" | "StatefulSet") => {
                    &object["spec"]["template"]["spec"]
                }
                _ => continue,
            };
            let owner = format!(
                "{}/{}",
                object["kind"].as_str().unwrap_or_default(),
                object["metadata"]["name"].as_str().unwrap_or_default()
            );
            for key in ["initContainers", "containers"] {
                for container in pod_spec[key].as_array().into_iter().flatten() {
                    found.push((owner.clone(), container));
                }
            }
        }
        found
    }

    /// What `service_account` in `namespace` may do, through the (Cluster)RoleBindings naming it.
    pub fn grants_of(&self, namespace: &str, service_account: &str) -> Result<Vec<Grant>> {
        let mut grants = Vec::new();
        for kind in ["ClusterRoleBinding", "RoleBinding"] {
            for binding in self.of_kind(kind) {
                let names_account = binding["subjects"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|s| {
                        s["kind"] == "ServiceAccount"
                            && s["name"] == service_account
                            && s["namespace"] == namespace
                    });
                if !names_account {
                    continue;
                }
                let role_kind = binding["roleRef"]["kind"].as_str().unwrap_or_default();
                let role_name = binding["roleRef"]["name"].as_str().unwrap_or_default();
                let role = self.get(role_kind, role_name).with_context(|| {
                    format!(
                        "{kind} {} refers to a missing role",
                        binding["metadata"]["name"]
                    )
                })?;
                // A RoleBinding grants only within its namespace, whatever role it refers to.
                let scope = if kind == "ClusterRoleBinding" {
                    Scope::Cluster
                } else {
                    ensure!(
                        binding["metadata"]["namespace"] == namespace
                            && (role_kind == "ClusterRole"
                                || role["metadata"]["namespace"] == namespace),
                        "RoleBinding {} and its role are not both in {namespace}",
                        binding["metadata"]["name"]
                    );
                    Scope::Namespace
                };
                grants.extend(Grant::from_role(role, scope)?);
            }
        }
        Ok(grants)
    }
}

/// One verb on one resource, as a rendered rule grants it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    pub api_group: String,
    pub resource: String,
    pub verb: String,
    pub scope: ScopeKey,
    /// Empty: every object of the resource.
    pub resource_names: Vec<String>,
}

/// `Scope` with an order, so grants sort and print stably.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ScopeKey {
    Cluster,
    Namespace,
}

impl From<Scope> for ScopeKey {
    fn from(scope: Scope) -> ScopeKey {
        match scope {
            Scope::Cluster => ScopeKey::Cluster,
            Scope::Namespace => ScopeKey::Namespace,
        }
    }
}

impl Grant {
    fn from_role(role: &Value, scope: Scope) -> Result<Vec<Grant>> {
        let strings = |value: &Value, what: &str| -> Result<Vec<String>> {
            match value {
                Value::Null => Ok(Vec::new()),
                Value::Array(items) => items
                    .iter()
                    .map(|i| {
                        i.as_str()
                            .map(str::to_owned)
                            .with_context(|| format!("{what} holds a non-string"))
                    })
                    .collect(),
                _ => bail!("{what} is not a list"),
            }
        };
        let mut grants = Vec::new();
        for rule in role["rules"].as_array().into_iter().flatten() {
            let names = strings(&rule["resourceNames"], "resourceNames")?;
            for group in strings(&rule["apiGroups"], "apiGroups")? {
                for resource in strings(&rule["resources"], "resources")? {
                    for verb in strings(&rule["verbs"], "verbs")? {
                        grants.push(Grant {
                            api_group: group.clone(),
                            resource: resource.clone(),
                            verb,
                            scope: scope.into(),
                            resource_names: names.clone(),
                        });
                    }
                }
            }
        }
        Ok(grants)
    }

    fn describe(&self) -> String {
        let group = if self.api_group.is_empty() {
            "core"
        } else {
            &self.api_group
        };
        let names = if self.resource_names.is_empty() {
            String::new()
        } else {
            format!(" (only {})", self.resource_names.join(", "))
        };
        format!(
            "{:?}: {} {}/{}{names}",
            self.scope, self.verb, group, self.resource
        )
    }
}

fn covers(grant: &Grant, permission: &Permission, verb: &str) -> bool {
    let wildcard = |granted: &str, wanted: &str| granted == "*" || granted == wanted;
    wildcard(&grant.api_group, permission.api_group)
        && wildcard(&grant.resource, permission.resource)
        && wildcard(&grant.verb, verb)
        // A cluster-wide grant also covers a namespaced need; not the other way round.
        && (grant.scope == ScopeKey::Cluster || ScopeKey::from(permission.scope) == grant.scope)
}

/// Each needed verb that no grant covers, described for a failure message.
pub fn missing(needed: &[Permission], grants: &[Grant]) -> Vec<String> {
    let mut missing = BTreeSet::new();
    for permission in needed {
        for verb in permission.verbs {
            if !grants.iter().any(|g| covers(g, permission, verb)) {
                let group = if permission.api_group.is_empty() {
                    "core"
                } else {
                    permission.api_group
                };
                missing.insert(format!(
                    "{:?}: {verb} {group}/{}",
                    permission.scope, permission.resource
                ));
            }
        }
    }
    missing.into_iter().collect()
}

/// Each grant that no needed permission calls for, described for a failure message.
pub fn excess(grants: &[Grant], needed: &[Permission]) -> Vec<String> {
    let exact = |grant: &Grant, permission: &Permission| {
        grant.api_group == permission.api_group
            && grant.resource == permission.resource
            && permission.verbs.contains(&grant.verb.as_str())
            && grant.scope == ScopeKey::from(permission.scope)
    };
    let excess: BTreeSet<String> = grants
        .iter()
        .filter(|g| !needed.iter().any(|p| exact(g, p)))
        .map(Grant::describe)
        .collect();
    excess.into_iter().collect()
}

/// The container's argument `--flag=value` (or `--flag` `value`), if present.
pub fn flag_value<'a>(container: &'a Value, flag: &str) -> Option<&'a str> {
    let args: Vec<&str> = container["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let prefix = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, arg)| {
        if let Some(value) = arg.strip_prefix(&prefix) {
            Some(value)
        } else if *arg == flag {
            args.get(i + 1)
                .copied()
                .filter(|next| !next.starts_with("--"))
        } else {
            None
        }
    })
}

pub fn has_flag(container: &Value, flag: &str) -> bool {
    let prefix = format!("{flag}=");
    container["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .any(|arg| arg == flag || arg.starts_with(&prefix))
}

pub fn container<'a>(pod_spec: &'a Value, name: &str) -> Result<&'a Value> {
    pod_spec["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == name)
        .with_context(|| format!("no container {name}"))
}

pub fn volume<'a>(pod_spec: &'a Value, name: &str) -> Result<&'a Value> {
    pod_spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == name)
        .with_context(|| format!("no volume {name}"))
}

/// The container's mount of `volume`, if any.
pub fn mount_of<'a>(container: &'a Value, volume: &str) -> Option<&'a Value> {
    container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == volume)
}

/// The value an environment variable takes from the downward API (`fieldRef.fieldPath`).
pub fn env_field_path<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == name)
        .and_then(|e| e["valueFrom"]["fieldRef"]["fieldPath"].as_str())
}
