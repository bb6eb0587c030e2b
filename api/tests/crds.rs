//! The committed CRDs are exactly what the types generate, and the examples are valid resources.

use fastvirt_api::{BlockPool, NodeTuningProfile};
use std::path::Path;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn committed_crds_match_the_types() {
    for (file, crd) in fastvirt_api::crds() {
        let path = repo().join("crds").join(file);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == fastvirt_api::crd_yaml(&crd),
            "{} is out of date: run `cargo run -p fastvirt-api --bin crdgen` and commit crds/",
            path.display()
        );
    }
}

#[test]
fn crds_carry_printer_columns_status_and_validation_rules() {
    for (file, crd) in fastvirt_api::crds() {
        let version = &crd.spec.versions[0];
        assert_eq!(crd.spec.scope, "Cluster", "{file}");
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{file}: status subresource"
        );
        assert!(
            version
                .additional_printer_columns
                .as_ref()
                .is_some_and(|c| c.len() >= 4),
            "{file}: printer columns"
        );
    }
    let yaml = std::fs::read_to_string(repo().join("crds/blockpools.fastvirt.io.yaml")).unwrap();
    assert!(yaml.contains("self.path.startsWith('/')"));
    assert!(yaml.contains("blockOnly and fsType exclude each other"));
}

#[test]
fn every_field_has_a_description() {
    fn walk(schema: &serde_json::Value, path: &str, missing: &mut Vec<String>) {
        if let Some(properties) = schema.get("properties").and_then(|p| p.as_object()) {
            for (name, property) in properties {
                let here = format!("{path}.{name}");
                if property.get("description").is_none()
                    && !matches!(name.as_str(), "apiVersion" | "kind" | "metadata")
                {
                    missing.push(here.clone());
                }
                walk(property, &here, missing);
            }
        }
        if let Some(items) = schema.get("items") {
            walk(items, &format!("{path}[]"), missing);
        }
    }
    for (file, crd) in fastvirt_api::crds() {
        let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
        let mut missing = Vec::new();
        walk(&schema["openAPIV3Schema"], "", &mut missing);
        assert!(
            missing.is_empty(),
            "{file}: fields without a description: {missing:?}"
        );
    }
}

#[test]
fn examples_are_valid_resources() {
    let pool: BlockPool = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("examples/blockpool.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(pool.spec.backend.file.path, "/var/lib/fastvirt/pools/nvme");
    let profile: NodeTuningProfile = serde_yaml::from_str(
        &std::fs::read_to_string(repo().join("examples/nodetuningprofile.yaml")).unwrap(),
    )
    .unwrap();
    profile.spec.validate().unwrap();
}
