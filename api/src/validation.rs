//! Checks manifests against the CRDs the way an API server with strict field validation would:
//! the structural schema (types, enums, required fields, and no unknown fields) and the CEL rules.
//! Tests use it on the examples and the Helm chart's resources, so a manifest the docs show is one
//! a cluster accepts.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValidationError {
    #[error("document has no apiVersion and kind")]
    Untyped,
    #[error("no CRD serves {0}")]
    UnknownKind(String),
    #[error("{kind} {name}: {problems:?}")]
    Invalid {
        kind: String,
        name: String,
        problems: Vec<String>,
    },
}

struct CompiledCrd {
    schema: Value,
    structure: jsonschema::Validator,
}

/// The served schemas of a set of CRDs, keyed by `apiVersion` and kind.
pub struct CrdValidator {
    by_type: BTreeMap<(String, String), CompiledCrd>,
}

impl CrdValidator {
    /// Validators for fastvirt's own CRDs as generated from the types.
    pub fn fastvirt() -> Self {
        Self::new(crate::crds().into_iter().map(|(_, crd)| crd))
    }

    pub fn new(crds: impl IntoIterator<Item = CustomResourceDefinition>) -> Self {
        let mut by_type = BTreeMap::new();
        for crd in crds {
            for version in crd.spec.versions.iter().filter(|v| v.served) {
                let Some(schema) = version
                    .schema
                    .as_ref()
                    .and_then(|s| s.open_api_v3_schema.as_ref())
                else {
                    continue;
                };
                let schema = serde_json::to_value(schema).expect("a schema serializes");
                let structure = jsonschema::options()
                    .should_validate_formats(false)
                    .build(&strict(schema.clone()))
                    .expect("a generated CRD schema is a valid JSON schema");
                by_type.insert(
                    (
                        format!("{}/{}", crd.spec.group, version.name),
                        crd.spec.names.kind.clone(),
                    ),
                    CompiledCrd { schema, structure },
                );
            }
        }
        CrdValidator { by_type }
    }

    /// Every problem with `document`, or `Ok` when a cluster would accept it.
    pub fn validate(&self, document: &Value) -> Result<(), ValidationError> {
        let (Some(api_version), Some(kind)) = (
            document.get("apiVersion").and_then(Value::as_str),
            document.get("kind").and_then(Value::as_str),
        ) else {
            return Err(ValidationError::Untyped);
        };
        let crd = self
            .by_type
            .get(&(api_version.to_owned(), kind.to_owned()))
            .ok_or_else(|| ValidationError::UnknownKind(format!("{api_version} {kind}")))?;
        let mut problems: Vec<String> = crd
            .structure
            .iter_errors(document)
            .map(|e| format!("{}: {e}", path_or_root(&e.instance_path().to_string())))
            .collect();
        // CEL rules assume a structurally valid object, as on a server.
        if problems.is_empty()
            && let Err(errors) =
                kube::core::cel::Validator::new().validate(&crd.schema, document, None)
        {
            problems.extend(errors.into_vec().iter().map(ToString::to_string));
        }
        if problems.is_empty() {
            return Ok(());
        }
        Err(ValidationError::Invalid {
            kind: kind.to_owned(),
            name: document
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("(unnamed)")
                .to_owned(),
            problems,
        })
    }
}

fn path_or_root(path: &str) -> &str {
    if path.is_empty() { "/" } else { path }
}

/// The schema with unknown fields refused (a server with `fieldValidation=Strict` refuses them;
/// without it it silently drops them, which is how typos go unnoticed) and `nullable` spelled the
/// JSON Schema way.
fn strict(mut schema: Value) -> Value {
    fn walk(schema: &mut Value, is_metadata: bool) {
        let Some(object) = schema.as_object_mut() else {
            return;
        };
        if object.get("nullable") == Some(&Value::Bool(true))
            && let Some(Value::String(type_)) = object.get("type").cloned()
        {
            object.insert("type".into(), serde_json::json!([type_, "null"]));
        }
        let preserves_unknown =
            object.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
        if object.contains_key("properties")
            && !object.contains_key("additionalProperties")
            && !preserves_unknown
            && !is_metadata
        {
            object.insert("additionalProperties".into(), Value::Bool(false));
        }
        if let Some(Value::Object(properties)) = object.get_mut("properties") {
            for (name, property) in properties.iter_mut() {
                walk(property, name == "metadata");
            }
        }
        for key in ["items", "additionalProperties"] {
            if let Some(child) = object.get_mut(key) {
                walk(child, false);
            }
        }
    }
    // The server adds the fields every object has; generated schemas leave them out.
    if let Some(Value::Object(properties)) = schema.get_mut("properties") {
        properties
            .entry("apiVersion")
            .or_insert(serde_json::json!({"type": "string"}));
        properties
            .entry("kind")
            .or_insert(serde_json::json!({"type": "string"}));
        properties
            .entry("metadata")
            .or_insert(serde_json::json!({"type": "object"}));
    }
    walk(&mut schema, false);
    schema
}
