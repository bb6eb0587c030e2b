//! Reading API objects one at a time. kube-rs decodes a list as a whole, so one stored object that
//! the types cannot hold (say a hugepage `count: 5000000000`, stored before the CRDs had maxima:
//! an API server ignores the format `uint32`, and does not revalidate stored objects when a CRD
//! changes) fails every list and every watcher of its kind, and with them every controller and
//! agent that waits for those.
//!
//! `Api<Lenient<K>>` lists and watches like `Api<K>`; each object arrives decoded, or as an
//! [`Unreadable`] with its metadata and what could not be read. The operator and the agent skip
//! and report the unreadable ones and go on with the rest.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::core::{ObjectMeta, Resource};
use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, de};
use serde_json::Value;
use std::borrow::Cow;

/// An object of kind `K` as the API server stores it: read, or why it cannot be.
#[derive(Debug, Clone, PartialEq)]
pub enum Lenient<K> {
    Read(K),
    Unreadable(Box<Unreadable>),
}

/// A stored object the types cannot hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Unreadable {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    /// The field and the reason, e.g. ``spec.hugepages[0].count: invalid value: integer
    /// `5000000000`, expected u32``.
    pub error: String,
    /// The object as stored.
    pub object: Value,
}

/// Event notes longer than 1024 bytes are refused by the API server.
const NOTE_BYTES: usize = 1000;

impl Unreadable {
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }

    /// The object, for an Event about it.
    pub fn object_ref(&self) -> ObjectReference {
        ObjectReference {
            api_version: Some(self.api_version.clone()),
            kind: Some(self.kind.clone()),
            name: self.metadata.name.clone(),
            namespace: self.metadata.namespace.clone(),
            uid: self.metadata.uid.clone(),
            resource_version: self.metadata.resource_version.clone(),
            ..ObjectReference::default()
        }
    }

    /// Which version of which object this is: report each once, not on every re-list.
    pub fn version_key(&self) -> (String, String, String) {
        (
            self.kind.clone(),
            self.name().to_owned(),
            self.metadata.resource_version.clone().unwrap_or_default(),
        )
    }

    /// What to tell the user, short enough for an Event note.
    pub fn note(&self) -> String {
        let mut note = format!(
            "{} {} cannot be read and is ignored until it is fixed: {}",
            self.kind,
            self.name(),
            self.error
        );
        if note.len() > NOTE_BYTES {
            let mut end = NOTE_BYTES;
            while !note.is_char_boundary(end) {
                end -= 1;
            }
            note.truncate(end);
        }
        note
    }
}

impl<K> Lenient<K>
where
    K: Resource + DeserializeOwned,
    K::DynamicType: Default,
{
    /// Decodes `value` as `K`; fails only when not even its metadata can be read.
    pub fn from_value(value: Value) -> Result<Self, serde_json::Error> {
        let error = match serde_path_to_error::deserialize::<_, K>(&value) {
            Ok(object) => return Ok(Lenient::Read(object)),
            Err(error) => error,
        };
        let path = error.path().to_string();
        let error = match path.as_str() {
            "." => error.into_inner().to_string(),
            _ => format!("{path}: {}", error.into_inner()),
        };
        let metadata = ObjectMeta::deserialize(value.get("metadata").unwrap_or(&Value::Null))?;
        let dt = K::DynamicType::default();
        let text = |key: &str| value.get(key).and_then(Value::as_str).map(str::to_owned);
        Ok(Lenient::Unreadable(Box::new(Unreadable {
            api_version: text("apiVersion").unwrap_or_else(|| K::api_version(&dt).into_owned()),
            kind: text("kind").unwrap_or_else(|| K::kind(&dt).into_owned()),
            metadata,
            error,
            object: value,
        })))
    }
}

impl<K> Lenient<K> {
    pub fn into_result(self) -> Result<K, Box<Unreadable>> {
        match self {
            Lenient::Read(object) => Ok(object),
            Lenient::Unreadable(unreadable) => Err(unreadable),
        }
    }
}

/// The objects that could be read, and those that could not.
pub fn split<K>(items: impl IntoIterator<Item = Lenient<K>>) -> (Vec<K>, Vec<Unreadable>) {
    let mut read = Vec::new();
    let mut unreadable = Vec::new();
    for item in items {
        match item.into_result() {
            Ok(object) => read.push(object),
            Err(object) => unreadable.push(*object),
        }
    }
    (read, unreadable)
}

impl<'de, K> Deserialize<'de> for Lenient<K>
where
    K: Resource + DeserializeOwned,
    K::DynamicType: Default,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Self::from_value(Value::deserialize(deserializer)?).map_err(de::Error::custom)
    }
}

/// Everything but decoding is `K`'s: the same URLs, kind and owner references.
impl<K: Resource> Resource for Lenient<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }

    fn api_version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::api_version(dt)
    }

    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn url_path(dt: &Self::DynamicType, namespace: Option<&str>) -> String {
        K::url_path(dt, namespace)
    }

    fn meta(&self) -> &ObjectMeta {
        match self {
            Lenient::Read(object) => object.meta(),
            Lenient::Unreadable(unreadable) => &unreadable.metadata,
        }
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Lenient::Read(object) => object.meta_mut(),
            Lenient::Unreadable(unreadable) => &mut unreadable.metadata,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BlockPool, NodeTuningProfile};
    use kube::core::ObjectList;
    use serde_json::json;

    fn profile(name: &str, priority: Value) -> Value {
        json!({
            "apiVersion": "fastvirt.io/v1alpha1",
            "kind": "NodeTuningProfile",
            "metadata": {"name": name, "uid": format!("uid-{name}"), "resourceVersion": "7"},
            "spec": {"priority": priority, "hugepages": [{"size": "2Mi", "count": 8}]}
        })
    }

    #[test]
    fn one_bad_item_does_not_fail_the_list() {
        let list = json!({
            "apiVersion": "fastvirt.io/v1alpha1",
            "kind": "NodeTuningProfileList",
            "metadata": {"resourceVersion": "9"},
            "items": [profile("good", json!(10)), profile("bad", json!(3_000_000_000_u64))]
        });
        assert!(
            serde_json::from_value::<ObjectList<NodeTuningProfile>>(list.clone()).is_err(),
            "kube-rs reads a list as a whole"
        );
        let list: ObjectList<Lenient<NodeTuningProfile>> = serde_json::from_value(list).unwrap();
        let (read, unreadable) = split(list.items);
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].spec.priority, 10);
        assert_eq!(unreadable.len(), 1);
        let bad = &unreadable[0];
        assert_eq!(bad.name(), "bad");
        assert_eq!(
            bad.error,
            "spec.priority: invalid value: integer `3000000000`, expected i32"
        );
        assert_eq!(bad.object["spec"]["hugepages"][0]["count"], 8);
        let reference = bad.object_ref();
        assert_eq!(reference.kind.as_deref(), Some("NodeTuningProfile"));
        assert_eq!(
            reference.api_version.as_deref(),
            Some("fastvirt.io/v1alpha1")
        );
        assert_eq!(reference.uid.as_deref(), Some("uid-bad"));
        assert_eq!(
            bad.version_key(),
            ("NodeTuningProfile".into(), "bad".into(), "7".into())
        );
        assert!(
            bad.note().starts_with(
                "NodeTuningProfile bad cannot be read and is ignored until it is fixed: spec.priority:"
            ),
            "{}",
            bad.note()
        );
    }

    #[test]
    fn watch_events_are_read_one_by_one() {
        use kube::core::WatchEvent;
        let mut bad = profile("bad", json!(1));
        bad["spec"]["hugepages"][0]["count"] = json!(5_000_000_000_u64);
        let event: WatchEvent<Lenient<NodeTuningProfile>> =
            serde_json::from_value(json!({"type": "ADDED", "object": bad})).unwrap();
        let WatchEvent::Added(Lenient::Unreadable(unreadable)) = event else {
            panic!("{event:?}");
        };
        assert_eq!(
            unreadable.error,
            "spec.hugepages[0].count: invalid value: integer `5000000000`, expected u32"
        );
        let event: WatchEvent<Lenient<NodeTuningProfile>> = serde_json::from_value(
            json!({"type": "MODIFIED", "object": profile("good", json!(1))}),
        )
        .unwrap();
        assert!(matches!(event, WatchEvent::Modified(Lenient::Read(_))));
    }

    #[test]
    fn the_kind_and_urls_are_the_wrapped_types() {
        type Pools = Lenient<BlockPool>;
        assert_eq!(Pools::kind(&()), "BlockPool");
        assert_eq!(Pools::api_version(&()), "fastvirt.io/v1alpha1");
        assert_eq!(
            Pools::url_path(&(), None),
            BlockPool::url_path(&(), None),
            "lists and watches go where Api<BlockPool>'s do"
        );
        // Without apiVersion and kind in the body (a list's items may omit them), the type's.
        let unreadable = Lenient::<BlockPool>::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"backend": {"file": {"path": 7}}}
        }))
        .unwrap()
        .into_result()
        .unwrap_err();
        assert_eq!(unreadable.kind, "BlockPool");
        assert_eq!(unreadable.api_version, "fastvirt.io/v1alpha1");
        assert!(
            unreadable
                .error
                .starts_with("spec.backend.file.path: invalid type"),
            "{}",
            unreadable.error
        );
    }

    #[test]
    fn an_object_without_metadata_is_an_error() {
        assert!(Lenient::<BlockPool>::from_value(json!({"spec": {}})).is_err());
    }

    #[test]
    fn long_notes_are_cut_at_a_character() {
        let unreadable = Unreadable {
            api_version: "fastvirt.io/v1alpha1".into(),
            kind: "NodeTuningProfile".into(),
            metadata: ObjectMeta {
                name: Some("p".into()),
                ..ObjectMeta::default()
            },
            error: "é".repeat(2000),
            object: Value::Null,
        };
        let note = unreadable.note();
        assert!(
            note.len() <= NOTE_BYTES && note.len() > NOTE_BYTES - 4,
            "{}",
            note.len()
        );
    }
}
