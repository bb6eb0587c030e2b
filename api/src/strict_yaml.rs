//! Strict parsing of the files the binaries read (a profile given to `fastvirt-agent plan/apply`,
//! `fastvirt-csi --config`, the operator's pool file): a field the type does not know is an error
//! that names its path and the closest known field, never a setting silently dropped.
//!
//! Only files go through here. Objects read from the API server stay lenient: a newer CRD version
//! may add fields that an older binary must tolerate.
//!
//! Types with `#[serde(deny_unknown_fields)]` fail inside serde; their error is turned into the same
//! message as a field `serde_ignored` saw skipped, so every unknown field reads alike:
//!
//! ```text
//! unknown field `spec.transparentHugepage`; did you mean `transparentHugepages`?
//! ```

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt;

/// One step of a path into a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A mapping key (a struct field or a map entry).
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// Where a value sits in a document: `spec.hugepages[0].size`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(pub Vec<Segment>);

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str(".");
        }
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Key(key) if i == 0 => f.write_str(key)?,
                Segment::Key(key) => write!(f, ".{key}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// A field of the document that the type has no place for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownField {
    /// The field's full path; its last segment is the unknown name.
    pub path: FieldPath,
    /// The known field at the same level whose name is closest, if one is close.
    pub suggestion: Option<String>,
    /// Every field known at that level (from the type's JSON schema).
    pub known: Vec<String>,
    /// Line and column (1-based), when the parser reported them.
    pub location: Option<(usize, usize)>,
}

impl UnknownField {
    /// The unknown name itself (the path's last segment).
    pub fn name(&self) -> &str {
        match self.path.0.last() {
            Some(Segment::Key(key)) => key,
            _ => "",
        }
    }
}

impl fmt::Display for UnknownField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown field `{}`", self.path)?;
        if let Some((line, column)) = self.location {
            write!(f, " at line {line} column {column}")?;
        }
        if let Some(suggestion) = &self.suggestion {
            write!(f, "; did you mean `{suggestion}`?")
        } else if !self.known.is_empty() {
            let known: Vec<String> = self.known.iter().map(|k| format!("`{k}`")).collect();
            write!(f, "; known fields: {}", known.join(", "))
        } else {
            Ok(())
        }
    }
}

/// Why a file was refused.
#[derive(Debug, thiserror::Error)]
pub enum StrictError {
    /// Fields the type does not know, in document order.
    #[error("{}", display_all(.0))]
    UnknownFields(Vec<UnknownField>),
    /// Anything else: syntax, a wrong type or value, a missing field (serde_yaml's own message).
    #[error(transparent)]
    Yaml(#[from] serde_yaml::Error),
}

fn display_all(fields: &[UnknownField]) -> String {
    let lines: Vec<String> = fields.iter().map(ToString::to_string).collect();
    lines.join("\n")
}

/// Deserializes one YAML (or JSON) document into `T`, refusing every field `T` does not know.
///
/// When unknown fields and another error occur together (a misspelt required field is also a
/// missing one), the unknown fields are reported: they are the likely cause.
pub fn from_str<T: DeserializeOwned + JsonSchema>(text: &str) -> Result<T, StrictError> {
    strict(serde_yaml::Deserializer::from_str(text))
}

/// [`from_str`] for a document already parsed, with `serde_yaml::from_value`'s rules (a plain
/// `10` is a number, not a string) and no line numbers.
pub fn from_value<T: DeserializeOwned + JsonSchema>(
    value: serde_yaml::Value,
) -> Result<T, StrictError> {
    strict(value)
}

fn strict<'de, D, T>(yaml: D) -> Result<T, StrictError>
where
    D: serde::Deserializer<'de, Error = serde_yaml::Error>,
    T: DeserializeOwned + JsonSchema,
{
    let mut ignored: Vec<FieldPath> = Vec::new();
    let result = {
        let mut record = |path: serde_ignored::Path<'_>| ignored.push(from_ignored(&path));
        serde_path_to_error::deserialize::<_, T>(serde_ignored::Deserializer::new(
            yaml,
            &mut record,
        ))
    };
    let mut unknown: Vec<(FieldPath, Option<(usize, usize)>)> =
        ignored.into_iter().map(|path| (path, None)).collect();
    let value = match result {
        Ok(value) => Some(value),
        Err(error) => {
            // `deny_unknown_fields`: serde's message names the field, the tracked path locates it.
            if error.inner().to_string().contains("unknown field `") {
                let location = error.inner().location().map(|l| (l.line(), l.column()));
                unknown.push((from_tracked(error.path()), location));
            } else if unknown.is_empty() {
                return Err(StrictError::Yaml(error.into_inner()));
            }
            None
        }
    };
    match value {
        Some(value) if unknown.is_empty() => Ok(value),
        _ => {
            let schema = schemars::SchemaGenerator::default().into_root_schema_for::<T>();
            let fields = unknown
                .into_iter()
                .map(|(path, location)| describe(schema.as_value(), path, location))
                .collect();
            Err(StrictError::UnknownFields(fields))
        }
    }
}

fn from_ignored(path: &serde_ignored::Path<'_>) -> FieldPath {
    fn walk(path: &serde_ignored::Path<'_>, out: &mut Vec<Segment>) {
        use serde_ignored::Path;
        match path {
            Path::Root => {}
            Path::Seq { parent, index } => {
                walk(parent, out);
                out.push(Segment::Index(*index));
            }
            Path::Map { parent, key } => {
                walk(parent, out);
                out.push(Segment::Key(key.clone()));
            }
            Path::Some { parent }
            | Path::NewtypeStruct { parent }
            | Path::NewtypeVariant { parent } => walk(parent, out),
        }
    }
    let mut segments = Vec::new();
    walk(path, &mut segments);
    FieldPath(segments)
}

fn from_tracked(path: &serde_path_to_error::Path) -> FieldPath {
    use serde_path_to_error::Segment as Tracked;
    FieldPath(
        path.iter()
            .map(|segment| match segment {
                Tracked::Seq { index } => Segment::Index(*index),
                Tracked::Map { key } => Segment::Key(key.clone()),
                Tracked::Enum { variant } => Segment::Key(variant.clone()),
                Tracked::Unknown => Segment::Key("?".to_owned()),
            })
            .collect(),
    )
}

fn describe(root: &Value, path: FieldPath, location: Option<(usize, usize)>) -> UnknownField {
    let parent = &path.0[..path.0.len().saturating_sub(1)];
    let known = known_fields(root, parent);
    let mut field = UnknownField {
        path,
        suggestion: None,
        known,
        location,
    };
    field.suggestion = closest(field.name(), &field.known).map(str::to_owned);
    field
}

/// The property names the schema allows at `parent` (sorted), following `$ref`s, `anyOf`/`oneOf`/
/// `allOf` branches (`Option`, flattened and tagged types), arrays' `items` and maps'
/// `additionalProperties`.
pub fn known_fields(root: &Value, parent: &[Segment]) -> Vec<String> {
    let mut level = expand(root, vec![root]);
    for segment in parent {
        let mut next = Vec::new();
        for schema in &level {
            match segment {
                Segment::Key(key) => {
                    if let Some(property) = schema.get("properties").and_then(|p| p.get(key)) {
                        next.push(property);
                    } else if let Some(values) =
                        schema.get("additionalProperties").filter(|v| v.is_object())
                    {
                        next.push(values);
                    }
                }
                Segment::Index(_) => {
                    if let Some(items) = schema.get("items").filter(|v| v.is_object()) {
                        next.push(items);
                    }
                }
            }
        }
        level = expand(root, next);
    }
    let mut names: Vec<String> = level
        .iter()
        .filter_map(|schema| schema.get("properties").and_then(Value::as_object))
        .flat_map(|properties| properties.keys().cloned())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The schemas plus everything they refer to or combine, without repeats.
fn expand<'a>(root: &'a Value, mut pending: Vec<&'a Value>) -> Vec<&'a Value> {
    let mut out: Vec<&'a Value> = Vec::new();
    while let Some(schema) = pending.pop() {
        // Bounded: a recursive type refers back to itself.
        if out.len() > 64 || out.iter().any(|seen| std::ptr::eq(*seen, schema)) {
            continue;
        }
        out.push(schema);
        if let Some(target) = schema
            .get("$ref")
            .and_then(Value::as_str)
            .and_then(|r| r.strip_prefix('#'))
            .and_then(|pointer| root.pointer(pointer))
        {
            pending.push(target);
        }
        for combinator in ["anyOf", "oneOf", "allOf"] {
            if let Some(branches) = schema.get(combinator).and_then(Value::as_array) {
                pending.extend(branches);
            }
        }
    }
    out
}

/// How alike two field names are, 0 to 1: Jaro-Winkler over the names lowercased without `_` and
/// `-`, so `state_dir`, `StateDir` and `stateDir` are the same name, and a prefix such as
/// `stateDirectory` for `stateDir` still counts as close.
fn similarity(a: &str, b: &str) -> f64 {
    fn normal(name: &str) -> String {
        name.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect()
    }
    strsim::jaro_winkler(&normal(a), &normal(b))
}

/// Below this, a known field is no suggestion (unrelated names score about 0.6 or less).
const SUGGESTION_THRESHOLD: f64 = 0.8;

/// The known name closest to `unknown`, when one is close enough.
pub fn closest<'a>(unknown: &str, known: &'a [String]) -> Option<&'a str> {
    let mut best: Option<(f64, &str)> = None;
    for name in known {
        let score = similarity(unknown, name);
        if score >= SUGGESTION_THRESHOLD && best.is_none_or(|(top, _)| score > top) {
            best = Some((score, name));
        }
    }
    best.map(|(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NodeTuningProfileSpec;
    use crate::pool_config::PoolConfigFile;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Debug, Deserialize, JsonSchema, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Outer {
        #[serde(default)]
        name: String,
        #[serde(default)]
        inner: Option<Inner>,
        #[serde(default)]
        list: Vec<Inner>,
        #[serde(default)]
        by_name: BTreeMap<String, Inner>,
        #[serde(default)]
        mode: Option<Mode>,
    }

    #[derive(Debug, Deserialize, JsonSchema, PartialEq)]
    #[serde(rename_all = "camelCase")]
    struct Inner {
        #[serde(default)]
        size_bytes: u64,
        #[serde(default)]
        read_only: bool,
    }

    #[derive(Debug, Deserialize, JsonSchema, PartialEq)]
    #[serde(rename_all = "lowercase")]
    enum Mode {
        Fast,
        Safe,
    }

    fn unknown<T: DeserializeOwned + JsonSchema + fmt::Debug>(text: &str) -> Vec<UnknownField> {
        match from_str::<T>(text) {
            Err(StrictError::UnknownFields(fields)) => fields,
            other => panic!("expected unknown fields, got {other:?}"),
        }
    }

    #[test]
    fn valid_input_parses() {
        let parsed: Outer = from_str(
            "name: a\ninner: {sizeBytes: 1}\nlist: [{readOnly: true}]\nbyName: {x: {sizeBytes: 2}}\nmode: fast\n",
        )
        .unwrap();
        assert_eq!(parsed.inner.unwrap().size_bytes, 1);
        assert!(parsed.list[0].read_only);
        assert_eq!(parsed.by_name["x"].size_bytes, 2);
        assert_eq!(parsed.mode, Some(Mode::Fast));
        let json: Outer = from_str(r#"{"name": "b", "list": []}"#).unwrap();
        assert_eq!(json.name, "b");
    }

    #[test]
    fn a_nested_field_is_named_by_its_path_with_a_suggestion() {
        let fields = unknown::<Outer>("inner: {sizeByte: 1}\n");
        assert_eq!(fields.len(), 1);
        assert_eq!(fields[0].path.to_string(), "inner.sizeByte");
        assert_eq!(fields[0].suggestion.as_deref(), Some("sizeBytes"));
        assert_eq!(
            fields[0].to_string(),
            "unknown field `inner.sizeByte`; did you mean `sizeBytes`?"
        );
    }

    #[test]
    fn array_items_and_map_values_are_followed() {
        let fields = unknown::<Outer>("list: [{}, {readonly: true}]\n");
        assert_eq!(fields[0].path.to_string(), "list[1].readonly");
        assert_eq!(fields[0].suggestion.as_deref(), Some("readOnly"));

        let fields = unknown::<Outer>("byName: {disk-a: {size_bytes: 3}}\n");
        assert_eq!(fields[0].path.to_string(), "byName.disk-a.size_bytes");
        assert_eq!(fields[0].suggestion.as_deref(), Some("sizeBytes"));
    }

    #[test]
    fn top_level_and_several_fields() {
        let fields = unknown::<Outer>("nam: a\ninner: {readOnli: true}\n");
        let text: Vec<String> = fields.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "unknown field `nam`; did you mean `name`?",
                "unknown field `inner.readOnli`; did you mean `readOnly`?"
            ]
        );
    }

    #[test]
    fn without_a_close_name_the_known_fields_are_listed() {
        let fields = unknown::<Outer>("inner: {colour: red}\n");
        assert_eq!(fields[0].suggestion, None);
        assert_eq!(
            fields[0].to_string(),
            "unknown field `inner.colour`; known fields: `readOnly`, `sizeBytes`"
        );
    }

    #[test]
    fn value_errors_are_serde_yaml_s_own() {
        let text = "mode: turbo\n";
        let strict = from_str::<Outer>(text).unwrap_err();
        let plain = serde_yaml::from_str::<Outer>(text).unwrap_err();
        assert!(matches!(strict, StrictError::Yaml(_)), "{strict:?}");
        assert_eq!(strict.to_string(), plain.to_string());
        assert!(strict.to_string().contains("unknown variant `turbo`"));

        let text = "inner: {sizeBytes: many}\n";
        let strict = from_str::<Outer>(text).unwrap_err();
        assert_eq!(
            strict.to_string(),
            serde_yaml::from_str::<Outer>(text).unwrap_err().to_string()
        );
        assert!(matches!(
            from_str::<Outer>("name: [unclosed\n"),
            Err(StrictError::Yaml(_))
        ));
    }

    #[test]
    fn deny_unknown_fields_types_read_alike() {
        let fields = unknown::<PoolConfigFile>("pools:\n- name: a\n  path: /a\n  node: [n1]\n");
        assert_eq!(fields.len(), 1);
        assert_eq!(fields[0].path.to_string(), "pools[0].node");
        assert_eq!(fields[0].location, Some((4, 3)));
        assert_eq!(
            fields[0].to_string(),
            "unknown field `pools[0].node` at line 4 column 3; did you mean `nodes`?"
        );
        let fields = unknown::<PoolConfigFile>("pool: []\n");
        assert_eq!(fields[0].path.to_string(), "pool");
        assert_eq!(fields[0].suggestion.as_deref(), Some("pools"));
    }

    #[test]
    fn the_profile_spec_suggests_transparent_hugepages() {
        let fields = unknown::<NodeTuningProfileSpec>("transparentHugepage: never\n");
        assert_eq!(
            fields[0].to_string(),
            "unknown field `transparentHugepage`; did you mean `transparentHugepages`?"
        );
        let fields =
            unknown::<NodeTuningProfileSpec>("hugepages: [{size: 2Mi, count: 1, numa: 0}]\n");
        assert_eq!(fields[0].path.to_string(), "hugepages[0].numa");
        assert_eq!(fields[0].suggestion.as_deref(), Some("numaNode"));
        let fields = unknown::<NodeTuningProfileSpec>("power: {governer: performance}\n");
        assert_eq!(fields[0].path.to_string(), "power.governer");
        assert_eq!(fields[0].suggestion.as_deref(), Some("governor"));
    }

    #[test]
    fn scalars_read_as_serde_yaml_reads_them() {
        let text = "sysctls: {vm.swappiness: 10}\nkernelArgs: [iommu=pt]\n";
        let strict: NodeTuningProfileSpec = from_str(text).unwrap();
        assert_eq!(strict, serde_yaml::from_str(text).unwrap());
        assert_eq!(strict.sysctls["vm.swappiness"], "10");
        // From a parsed value, `10` is a number, as for `serde_yaml::from_value`.
        let value: serde_yaml::Value = serde_yaml::from_str(text).unwrap();
        let strict = from_value::<NodeTuningProfileSpec>(value.clone()).unwrap_err();
        let plain = serde_yaml::from_value::<NodeTuningProfileSpec>(value).unwrap_err();
        assert_eq!(strict.to_string(), plain.to_string());

        let value: serde_yaml::Value = serde_yaml::from_str("ksm: {enable: true}\n").unwrap();
        match from_value::<NodeTuningProfileSpec>(value) {
            Err(StrictError::UnknownFields(fields)) => assert_eq!(
                fields[0].to_string(),
                "unknown field `ksm.enable`; did you mean `enabled`?"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_misspelt_required_field_is_reported_as_unknown_not_missing() {
        #[derive(Debug, Deserialize, JsonSchema)]
        #[allow(dead_code)]
        struct Needs {
            path: String,
        }
        let fields = unknown::<Needs>("paht: /x\n");
        assert_eq!(fields[0].suggestion.as_deref(), Some("path"));
    }

    #[test]
    fn suggestions_need_a_close_name() {
        let known: Vec<String> = ["stateDir", "endpoint", "nodeId", "pools", "mode"]
            .map(String::from)
            .into();
        assert_eq!(closest("stateDirectory", &known), Some("stateDir"));
        assert_eq!(closest("state_dir", &known), Some("stateDir"));
        assert_eq!(closest("NodeID", &known), Some("nodeId"));
        assert_eq!(closest("poolz", &known), Some("pools"));
        assert_eq!(closest("colour", &known), None);
        assert_eq!(closest("x", &known), None);
        assert_eq!(closest("", &known), None);
    }
}
