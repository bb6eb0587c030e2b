//! One object the types cannot read stops no controller, in a real cluster. An upgrade can leave
//! such an object behind: a hugepage `count: 5000000000` (a u32) was accepted while the CRD had
//! no maxima (the API server ignores the format `uint32`; it does enforce `int32`), and the API
//! server does not revalidate stored objects when the CRD gains them. kube-rs decodes a
//! list as a whole, so before the lenient reads the restarted operator never filled its caches
//! (no BlockPool was reconciled either) and every agent's re-check failed.
//!
//! The test makes that state for real (the CRD without its maxima, the object, the CRD back),
//! restarts the operator and the agent as an upgrade does, and checks that a new BlockPool gets
//! Ready, a valid NodeTuningProfile is reconciled and reaches the agent, and the bad object is
//! reported. Needs root and the reference components (`FASTVIRT_KUBE_BIN`); skips otherwise.

mod common;

use fastvirt_e2e::cluster::kubectl::Kubectl;
use fastvirt_e2e::cluster::{self, State};
use serde_json::Value;
use std::path::Path;
use std::time::Instant;

const CRD: &str = "nodetuningprofiles.fastvirt.io";
const BAD: &str = "typo";

use common::{Down, cluster_binary, cluster_skip_reason as skip_reason, wait};

fn run(kubectl: &Kubectl, args: &[&str]) -> String {
    kubectl
        .run(args)
        .unwrap_or_else(|e| panic!("kubectl {}: {e:#}", args.join(" ")))
}

fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn without_maxima(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            map.remove("maximum");
            map.values_mut().for_each(without_maxima);
        }
        Value::Array(items) => items.iter_mut().for_each(without_maxima),
        _ => {}
    }
}

/// The CRD as stored with `spec` in place of its own (`kubectl replace` keeps its
/// resourceVersion, so the update is conditional).
fn replace_crd_spec(kubectl: &Kubectl, spec: &Value) {
    let mut crd = kubectl.get_json(&["crd", CRD]).unwrap();
    crd["spec"] = spec.clone();
    kubectl
        .run_with_input(&["replace", "-f", "-"], &crd.to_string())
        .unwrap_or_else(|e| panic!("replacing {CRD}: {e:#}"));
}

fn profile(name: &str, pages: u64, selector: &str, paused: bool) -> String {
    format!(
        "apiVersion: fastvirt.io/v1alpha1\nkind: NodeTuningProfile\nmetadata:\n  name: {name}\nspec:\n  nodeSelector: {{{selector}}}\n  priority: 1\n  paused: {paused}\n  hugepages: [{{size: 2Mi, count: {pages}}}]\n"
    )
}

#[test]
fn an_unreadable_object_stops_no_controller() {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIP an_unreadable_object_stops_no_controller: {reason}");
        return;
    }
    let started = Instant::now();
    let workdir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("unreadable-cluster");
    let workdir_arg = workdir.to_string_lossy().into_owned();
    let _ = cluster_binary(&["down", "--workdir", &workdir_arg]);
    let binaries =
        cluster::build_fastvirt_binaries(&cluster::default_repo(), false).expect("binaries build");
    let _down = Down(workdir.clone());
    let out = cluster_binary(&[
        "up",
        "--workdir",
        &workdir_arg,
        "--binaries",
        &binaries.to_string_lossy(),
    ]);
    assert!(
        out.status.success(),
        "fastvirt-cluster up failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("cluster up after {:?}", started.elapsed());
    let state = State::load(&workdir.canonicalize().unwrap())
        .unwrap()
        .expect("state file");
    let kubectl = state.kubectl();
    let ns = cluster::NAMESPACE;

    // The object an upgrade leaves behind: stored under a CRD without maxima, kept when they come.
    let original = kubectl.get_json(&["crd", CRD]).unwrap()["spec"].clone();
    let mut loose = original.clone();
    without_maxima(&mut loose);
    assert_ne!(loose, original, "the CRD has maxima to take away");
    replace_crd_spec(&kubectl, &loose);
    let bad = profile(BAD, 5_000_000_000, "fastvirt.io/never: \"true\"", false);
    wait(
        &kubectl,
        "the loose CRD accepting the bad profile",
        30,
        || {
            kubectl
                .run_with_input(&["create", "-f", "-"], &bad)
                .map(|_| Some(()))
        },
    );
    replace_crd_spec(&kubectl, &original);
    wait(
        &kubectl,
        "the bounds refusing a new bad profile",
        30,
        || {
            let refused = kubectl.run_with_input(
                &["create", "--dry-run=server", "-f", "-"],
                &profile("typo-2", 5_000_000_000, "", false),
            );
            Ok(refused
                .err()
                .filter(|e| format!("{e:#}").contains("spec.hugepages[0].count"))
                .map(|_| ()))
        },
    );
    let stored = kubectl.get_json(&["nodetuningprofile", BAD]).unwrap();
    assert_eq!(
        stored["spec"]["hugepages"][0]["count"].as_u64(),
        Some(5_000_000_000),
        "kept as stored"
    );

    // An upgrade restarts both: each lists the profiles anew.
    for workload in ["deployment/fastvirt-operator", "daemonset/fastvirt-agent"] {
        run(&kubectl, &["rollout", "restart", workload, "-n", ns]);
        run(
            &kubectl,
            &["rollout", "status", workload, "-n", ns, "--timeout=180s"],
        );
    }
    let restarted = Instant::now();

    // A new BlockPool gets Ready.
    let pool_dir = state.layout().pool_host_dir().join("after-upgrade");
    kubectl
        .apply(&format!(
            "apiVersion: fastvirt.io/v1alpha1\nkind: BlockPool\nmetadata:\n  name: after-upgrade\nspec:\n  backend:\n    file:\n      path: {}\n",
            pool_dir.display()
        ))
        .unwrap();
    wait(&kubectl, "the new BlockPool Ready", 180, || {
        let pool = kubectl.get_json(&["blockpool", "after-upgrade"])?;
        Ok(condition(&pool, "Ready")
            .is_some_and(|c| c["status"] == "True")
            .then_some(()))
    });

    // A valid profile (paused: the host stays as it is) is reconciled, and the agent takes it.
    let selector = format!("kubernetes.io/hostname: {}", state.hostname_label);
    kubectl
        .apply(&profile("paused-host", 8, &selector, true))
        .unwrap();
    wait(&kubectl, "the valid profile's status", 120, || {
        let profile = kubectl.get_json(&["nodetuningprofile", "paused-host"])?;
        let status = &profile["status"];
        Ok((status["matchedNodes"] == 1
            && status["observedGeneration"] == profile["metadata"]["generation"])
            .then_some(()))
    });
    let tuned = wait(
        &kubectl,
        "the agent reporting the valid profile",
        120,
        || {
            let tuned = kubectl.get_json(&["tunednode", &state.node_name])?;
            let paused = condition(&tuned, "Applied").is_some_and(|c| c["reason"] == "Paused");
            Ok((tuned["status"]["profile"] == "paused-host" && paused).then_some(tuned))
        },
    );
    eprintln!(
        "reconciled {:?} after the restart: {}",
        restarted.elapsed(),
        tuned["status"]["conditions"]
    );

    // The bad object is reported: an Event on it from the operator, a warning in the agent's log.
    let event = wait(&kubectl, "the Unreadable event", 60, || {
        let events = kubectl.get_json(&["events.v1.events.k8s.io", "-n", "default"])?;
        Ok(events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["reason"] == "Unreadable" && e["regarding"]["name"] == BAD)
            .cloned())
    });
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["regarding"]["kind"], "NodeTuningProfile");
    assert_eq!(event["reportingController"], "fastvirt-operator");
    let note = event["note"].as_str().unwrap_or_default();
    assert!(
        note.contains("spec.hugepages[0].count: invalid value: integer `5000000000`, expected u32"),
        "{note}"
    );
    let agent_log = run(
        &kubectl,
        &["logs", "-n", ns, "daemonset/fastvirt-agent", "--tail=-1"],
    );
    assert!(
        agent_log.contains("skipping a NodeTuningProfile that cannot be read")
            && agent_log.contains(BAD),
        "{agent_log}"
    );
    assert!(!agent_log.contains("re-check failed"), "{agent_log}");

    // Neither restarted on its own.
    let pods = kubectl
        .get_json(&[
            "pods",
            "-n",
            ns,
            "-l",
            "app.kubernetes.io/component in (operator,agent)",
        ])
        .unwrap();
    let running: Vec<&Value> = pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|pod| pod["metadata"]["deletionTimestamp"].is_null())
        .collect();
    assert_eq!(running.len(), 2, "{pods}");
    for pod in running {
        for container in pod["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert_eq!(
                container["restartCount"], 0,
                "{} {}",
                pod["metadata"]["name"], container["name"]
            );
        }
    }
    eprintln!("done after {:?}", started.elapsed());
}
