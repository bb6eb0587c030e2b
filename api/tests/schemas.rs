//! Every example manifest passes the generated CRDs' structural schemas and CEL rules, and each
//! rule refuses what it is there to refuse, with its message.

use fastvirt_api::validation::{CrdValidator, ValidationError};
use serde_json::{Value, json};
use std::path::Path;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn problems(validator: &CrdValidator, document: &Value) -> Vec<String> {
    match validator.validate(document) {
        Ok(()) => Vec::new(),
        Err(ValidationError::Invalid { problems, .. }) => problems,
        Err(other) => panic!("{other}"),
    }
}

fn pool() -> Value {
    json!({
        "apiVersion": "fastvirt.io/v1alpha1",
        "kind": "BlockPool",
        "metadata": {"name": "fast"},
        "spec": {"backend": {"file": {"path": "/var/lib/fastvirt/pools/fast"}}}
    })
}

fn profile() -> Value {
    json!({
        "apiVersion": "fastvirt.io/v1alpha1",
        "kind": "NodeTuningProfile",
        "metadata": {"name": "vm-hosts"},
        "spec": {"cpu": {"reserved": "0-1", "isolated": "2-7"}}
    })
}

#[test]
fn every_example_is_accepted() {
    let validator = CrdValidator::fastvirt();
    let mut checked = 0;
    for entry in std::fs::read_dir(repo().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let document: Value = serde::Deserialize::deserialize(document).unwrap();
            if document.get("apiVersion").and_then(Value::as_str) != Some("fastvirt.io/v1alpha1") {
                continue;
            }
            assert_eq!(validator.validate(&document), Ok(()), "{}", path.display());
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "only {checked} fastvirt resources in examples/"
    );
}

#[test]
fn minimal_resources_are_accepted() {
    let validator = CrdValidator::fastvirt();
    assert_eq!(validator.validate(&pool()), Ok(()));
    assert_eq!(validator.validate(&profile()), Ok(()));
}

#[test]
fn unknown_fields_and_wrong_types_are_refused() {
    let validator = CrdValidator::fastvirt();
    let mut typo = pool();
    typo["spec"]["storageClass"] = json!({"defaultClas": true});
    let found = problems(&validator, &typo);
    assert!(found.iter().any(|p| p.contains("defaultClas")), "{found:?}");

    let mut wrong_type = pool();
    wrong_type["spec"]["backend"]["file"]["preallocate"] = json!("yes");
    let found = problems(&validator, &wrong_type);
    assert!(
        found
            .iter()
            .any(|p| p.contains("/spec/backend/file/preallocate")),
        "{found:?}"
    );

    let mut bad_enum = pool();
    bad_enum["spec"]["storageClass"] = json!({"fsType": "btrfs"});
    assert!(!problems(&validator, &bad_enum).is_empty());

    let mut missing = pool();
    missing["spec"] = json!({});
    let found = problems(&validator, &missing);
    assert!(found.iter().any(|p| p.contains("backend")), "{found:?}");
}

#[test]
fn cel_rules_refuse_with_their_messages() {
    let validator = CrdValidator::fastvirt();
    let cases = [
        (
            {
                let mut p = pool();
                p["spec"]["backend"]["file"]["path"] = json!("pools/fast");
                p
            },
            "path must be absolute and must not contain '..'",
        ),
        (
            {
                let mut p = pool();
                p["spec"]["backend"]["file"]["path"] = json!("/var/lib/../etc");
                p
            },
            "path must be absolute and must not contain '..'",
        ),
        (
            {
                let mut p = pool();
                p["spec"]["storageClass"] = json!({"blockOnly": true, "fsType": "xfs"});
                p
            },
            "blockOnly and fsType exclude each other",
        ),
        (
            {
                let mut p = pool();
                p["spec"]["storageClass"] = json!({"layout": "disk-image", "blockOnly": true});
                p
            },
            "the disk-image layout makes Filesystem volumes only",
        ),
        (
            {
                let mut p = pool();
                p["spec"]["storageClass"] = json!({"layout": "disk-image", "fsType": "ext4"});
                p
            },
            "a disk-image volume has no filesystem of its own",
        ),
        (
            {
                let mut p = pool();
                p["metadata"]["name"] = json!("p".repeat(64));
                p
            },
            "a pool name is a DNS label",
        ),
        (
            {
                let mut p = pool();
                p["metadata"]["name"] = json!("fast.nvme");
                p
            },
            "a pool name is a DNS label",
        ),
        (
            {
                let mut p = profile();
                p["spec"]["cpu"] = json!({"isolated": "2-7"});
                p
            },
            "cpu.reserved must name at least one CPU when cpu.isolated is set",
        ),
        (
            {
                let mut p = profile();
                p["spec"]["cpu"] = json!({});
                p["spec"]["kubelet"] = json!({"manageDropIn": true});
                p
            },
            "kubelet.manageDropIn needs cpu.reserved",
        ),
    ];
    for (document, message) in cases {
        let found = problems(&validator, &document);
        assert!(
            found.iter().any(|p| p.contains(message)),
            "expected {message:?} for {document}, got {found:?}"
        );
    }
    let mut block_only = pool();
    block_only["spec"]["storageClass"] = json!({"blockOnly": true});
    assert_eq!(validator.validate(&block_only), Ok(()));
}

#[test]
fn documents_of_other_kinds_are_named() {
    let validator = CrdValidator::fastvirt();
    assert_eq!(
        validator.validate(&json!({"apiVersion": "v1", "kind": "ConfigMap"})),
        Err(ValidationError::UnknownKind("v1 ConfigMap".into()))
    );
    assert_eq!(
        validator.validate(&json!({"kind": "BlockPool"})),
        Err(ValidationError::Untyped)
    );
}

/// What the API server stores must be what the types can read: an integer the server accepts but
/// the type cannot hold would make the object unreadable by the operator and the agents.
#[test]
fn integers_outside_the_types_are_refused() {
    let validator = CrdValidator::fastvirt();
    let cases = [
        ("/spec/priority", json!(3_000_000_000_u64)),
        ("/spec/priority", json!(-3_000_000_000_i64)),
        ("/spec/hugepages/0/count", json!(5_000_000_000_u64)),
        ("/spec/hugepages/0/count", json!(-1)),
        ("/spec/hugepages/0/numaNode", json!(1024)),
        ("/spec/ksm/pagesToScan", json!(4_294_967_296_u64)),
        ("/spec/power/maxCstateLatencyUs", json!(4_294_967_296_u64)),
        ("/status/matchedNodes", json!(4_294_967_296_u64)),
    ];
    for (pointer, value) in cases {
        let mut document = profile();
        document["spec"]["priority"] = json!(10);
        document["spec"]["hugepages"] = json!([{"size": "2Mi", "count": 8, "numaNode": 0}]);
        document["spec"]["ksm"] = json!({"enabled": false, "pagesToScan": 100});
        document["spec"]["power"] = json!({"maxCstateLatencyUs": 10});
        document["status"] = json!({"matchedNodes": 1});
        assert_eq!(validator.validate(&document), Ok(()), "{pointer}: the base");
        *document.pointer_mut(pointer).unwrap() = value.clone();
        let found = problems(&validator, &document);
        assert!(
            found.iter().any(|p| p.starts_with(pointer)),
            "{pointer} = {value} must be refused, got {found:?}"
        );
    }
    let mut edge = profile();
    edge["spec"]["priority"] = json!(i32::MAX);
    edge["spec"]["hugepages"] = json!([{"size": "2Mi", "count": u32::MAX, "numaNode": 1023}]);
    assert_eq!(validator.validate(&edge), Ok(()), "the types' own limits");
}

/// Every integer of every CRD has the bounds of its type (an int64 needs none: the API server's
/// integers are int64; a uint64 needs its minimum), every number a minimum, and every list and
/// map a size limit (a CEL rule over an unbounded list would exceed the cost budget). An integer's
/// bounds must be integers the API server takes: it refuses a CRD with a bound beyond 2^53
/// ("Maximum boundary value must be of type integer").
#[test]
fn every_number_list_and_map_is_bounded() {
    fn walk(schema: &Value, path: &str, unbounded: &mut Vec<String>) {
        let has = |key: &str| schema.get(key).is_some();
        let format = schema.get("format").and_then(Value::as_str);
        if schema.get("type").and_then(Value::as_str) == Some("integer") {
            for key in ["minimum", "maximum"] {
                if let Some(bound) = schema.get(key).and_then(Value::as_f64)
                    && (bound.fract() != 0.0 || bound.abs() > 2f64.powi(53))
                {
                    unbounded.push(format!("{path}: {key} {bound} is no JSON integer"));
                }
            }
        }
        match schema.get("type").and_then(Value::as_str) {
            Some("integer") if format == Some("int64") => {}
            Some("integer") if format == Some("uint64") && !has("minimum") => {
                unbounded.push(format!("{path}: uint64 without minimum"))
            }
            Some("integer") if format != Some("uint64") && !(has("minimum") && has("maximum")) => {
                unbounded.push(format!("{path}: integer without minimum and maximum"))
            }
            Some("number") if !has("minimum") => {
                unbounded.push(format!("{path}: number without minimum"))
            }
            Some("array") if !has("maxItems") => unbounded.push(format!("{path}: no maxItems")),
            Some("object") if has("additionalProperties") && !has("maxProperties") => {
                unbounded.push(format!("{path}: map without maxProperties"))
            }
            _ => {}
        }
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            for (name, property) in properties {
                walk(property, &format!("{path}.{name}"), unbounded);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(items, &format!("{path}[]"), unbounded);
        }
        if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
            walk(values, &format!("{path}{{}}"), unbounded);
        }
    }
    for (file, crd) in fastvirt_api::crds() {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        let mut unbounded = Vec::new();
        walk(&schema["openAPIV3Schema"], "", &mut unbounded);
        assert!(unbounded.is_empty(), "{file}: {unbounded:#?}");
    }
}
