//! The chart's VM placement ValidatingAdmissionPolicy, evaluated offline: the policy is rendered
//! by helm, and its variables and validations are evaluated in order with Kubernetes' CEL
//! functions (kube-cel) against VirtualMachines and TuningSummaries, as the API server binds them
//! (`object`, `params`, `variables`). The cluster test proves the same policy through the real
//! API server; this one covers the cases a cluster cannot host (nodes with many CPUs, 1 GiB pages,
//! NUMA passthrough) in milliseconds.

use fastvirt_e2e::chart::Helm;
use kube_cel::KubeCelExt;
use kube_cel::cel::{Context, Program, Value as Cel};
use serde_json::{Value, json};
use std::collections::HashMap;

fn policy() -> Value {
    let manifest = Helm::find()
        .expect("helm")
        .render(&[], &[])
        .expect("render");
    manifest
        .of_kind("ValidatingAdmissionPolicy")
        .find(|p| {
            p["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("-vm-placement"))
        })
        .expect("the VM placement policy")
        .clone()
}

/// JSON as CEL sees a Kubernetes object: integers are `int`.
fn cel(value: &Value) -> Cel {
    match value {
        Value::Null => Cel::Null,
        Value::Bool(b) => Cel::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Cel::Int(i),
            None => Cel::Float(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => Cel::String(s.clone().into()),
        Value::Array(items) => items.iter().map(cel).collect::<Vec<_>>().into(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), cel(v)))
            .collect::<HashMap<String, Cel>>()
            .into(),
    }
}

fn evaluate(context: &Context, expression: &str) -> Cel {
    Program::compile(expression)
        .unwrap_or_else(|e| panic!("{expression}: {e:?}"))
        .execute(context)
        .unwrap_or_else(|e| panic!("{expression}: {e:?}"))
}

/// The messages of the validations that fail for `vm` given `summary` (`None`: no summary).
fn messages(policy: &Value, vm: &Value, summary: &Value) -> Vec<String> {
    let spec = &policy["spec"];
    let mut context = Context::default().with_all();
    context.add_variable_from_value("object", cel(vm));
    context.add_variable_from_value("oldObject", Cel::Null);
    context.add_variable_from_value("params", cel(summary));
    context.add_variable_from_value("request", cel(&json!({"operation": "CREATE"})));
    for condition in spec["matchConditions"].as_array().unwrap() {
        let expression = condition["expression"].as_str().unwrap();
        assert_eq!(
            evaluate(&context, expression),
            Cel::Bool(true),
            "{expression}"
        );
    }
    // Each variable sees the ones before it, as the API server evaluates them.
    let mut variables: HashMap<String, Cel> = HashMap::new();
    for variable in spec["variables"].as_array().unwrap() {
        context.add_variable_from_value("variables", variables.clone());
        let value = evaluate(&context, variable["expression"].as_str().unwrap());
        variables.insert(variable["name"].as_str().unwrap().to_owned(), value);
    }
    context.add_variable_from_value("variables", variables);
    spec["validations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| evaluate(&context, v["expression"].as_str().unwrap()) == Cel::Bool(false))
        .map(
            |v| match evaluate(&context, v["messageExpression"].as_str().unwrap()) {
                Cel::String(s) => s.to_string(),
                other => panic!("a message is a string, not {other:?}"),
            },
        )
        .collect()
}

fn vm(spec: Value) -> Value {
    json!({
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": {"name": "db", "namespace": "default"},
        "spec": spec,
    })
}

fn with_domain(domain: Value) -> Value {
    vm(json!({"template": {"spec": {"domain": domain}}}))
}

fn node(name: &str, cpus: u32, sizes: &[&str], numa: bool) -> Value {
    json!({
        "name": name, "profile": "vm", "tuned": true, "cpuManagerStatic": true,
        "dedicatedCpus": cpus, "hugepageSizes": sizes, "numaPassthrough": numa,
    })
}

fn summary(nodes: Vec<Value>, instancetypes: Vec<Value>) -> Value {
    json!({
        "apiVersion": "fastvirt.io/v1alpha1",
        "kind": "TuningSummary",
        "metadata": {"name": "cluster"},
        "status": {"nodes": nodes, "instancetypes": instancetypes},
    })
}

fn two_nodes() -> Value {
    summary(
        vec![
            node("big", 16, &["2Mi", "1Gi"], true),
            node("small", 4, &["2Mi"], false),
        ],
        vec![
            json!({"name": "fastvirt.vm.xlarge", "profile": "vm", "dedicatedCpus": 6,
                   "hugepageSize": "1Gi", "numaPassthrough": true, "nodes": ["big"]}),
            json!({"name": "fastvirt.vm.8xlarge", "profile": "vm", "dedicatedCpus": 34,
                   "hugepageSize": "1Gi", "numaPassthrough": true, "nodes": []}),
        ],
    )
}

#[test]
fn a_vm_that_fits_a_node_passes() {
    let policy = policy();
    for domain in [
        // 9 host CPUs and 1 GiB pages: only `big`.
        json!({"cpu": {"cores": 4, "threads": 2, "dedicatedCpuPlacement": true, "isolateEmulatorThread": true},
               "memory": {"hugepages": {"pageSize": "1Gi"}}}),
        json!({"cpu": {"cores": 4, "dedicatedCpuPlacement": true}, "memory": {"hugepages": {"pageSize": "2Mi"}}}),
        json!({"cpu": {"cores": 2, "numa": {"guestMappingPassthrough": {}}, "dedicatedCpuPlacement": true},
               "memory": {"hugepages": {"pageSize": "1Gi"}}}),
        json!({"cpu": {"cores": 64}}),
        json!({}),
    ] {
        let found = messages(&policy, &with_domain(domain.clone()), &two_nodes());
        assert!(found.is_empty(), "{domain}: {found:?}");
    }
    let fits = vm(
        json!({"instancetype": {"name": "fastvirt.vm.xlarge"}, "template": {"spec": {"domain": {}}}}),
    );
    assert!(messages(&policy, &fits, &two_nodes()).is_empty());
    // Another project's instancetype, or a namespaced one of the same name, is not ours to judge.
    for instancetype in [
        json!({"name": "u1.large"}),
        json!({"name": "fastvirt.vm.8xlarge", "kind": "VirtualMachineInstancetype"}),
    ] {
        let other = vm(json!({"instancetype": instancetype, "template": {"spec": {"domain": {}}}}));
        assert!(
            messages(&policy, &other, &two_nodes()).is_empty(),
            "{instancetype}"
        );
    }
}

#[test]
fn too_many_cpus_name_the_nodes_and_what_to_change() {
    let found = messages(
        &policy(),
        &with_domain(json!({"cpu": {"sockets": 2, "cores": 8, "threads": 1,
                                    "dedicatedCpuPlacement": true, "isolateEmulatorThread": true}})),
        &two_nodes(),
    );
    assert_eq!(
        found,
        [
            "VirtualMachine db asks for 17 dedicated CPUs; no tuned node offers that now. \
          Tuned nodes: big (16 dedicated CPUs, hugepages 2Mi/1Gi, NUMA passthrough), \
          small (4 dedicated CPUs, hugepages 2Mi). Ask for fewer dedicated CPUs or a hugepage \
          size these nodes have, or tune nodes for it with a NodeTuningProfile (cpu.isolated, \
          hugepages, kubelet.manageDropIn)."
        ]
    );
}

#[test]
fn each_unmet_need_is_named() {
    let policy = policy();
    let found = messages(
        &policy,
        &with_domain(
            json!({"cpu": {"cores": 2, "dedicatedCpuPlacement": true, "numa": {"guestMappingPassthrough": {}}},
                            "memory": {"hugepages": {"pageSize": "2Mi"}}}),
        ),
        &summary(vec![node("small", 4, &["2Mi"], false)], vec![]),
    );
    assert_eq!(found.len(), 1);
    assert!(
        found[0].starts_with(
            "VirtualMachine db asks for 2 dedicated CPUs, hugepages of 2Mi, NUMA passthrough; no tuned node offers that now."
        ),
        "{found:?}"
    );
    // A node that is not fully tuned, or whose CPU manager is not static, offers nothing.
    let mut untuned = node("half", 8, &["2Mi"], false);
    untuned["tuned"] = json!(false);
    let found = messages(
        &policy,
        &with_domain(json!({"cpu": {"cores": 1, "dedicatedCpuPlacement": true}})),
        &summary(vec![untuned], vec![]),
    );
    assert!(
        found[0].contains("half (8 dedicated CPUs, hugepages 2Mi, not fully tuned)"),
        "{found:?}"
    );
    // No tuned node at all.
    let found = messages(
        &policy,
        &with_domain(json!({"memory": {"hugepages": {"pageSize": "1Gi"}}})),
        &summary(vec![], vec![]),
    );
    assert!(
        found[0].contains(
            "hugepages of 1Gi; no tuned node offers that now. No node runs a NodeTuningProfile."
        ),
        "{found:?}"
    );
}

#[test]
fn an_instancetype_no_node_can_host_is_named() {
    let found = messages(
        &policy(),
        &vm(
            json!({"instancetype": {"name": "fastvirt.vm.8xlarge", "kind": "virtualmachineclusterinstancetype"},
                   "template": {"spec": {"domain": {}}}}),
        ),
        &two_nodes(),
    );
    assert_eq!(found.len(), 1);
    assert!(
        found[0].starts_with(
            "VirtualMachine db uses instancetype fastvirt.vm.8xlarge, which takes 34 dedicated host CPUs and hugepages of 1Gi on a node tuned by the NodeTuningProfile vm; no node can host it now. Tuned nodes: big"
        ) && found[0].ends_with("Pick a smaller size, or isolate more CPUs in the profile."),
        "{found:?}"
    );
}
