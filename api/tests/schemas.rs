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
