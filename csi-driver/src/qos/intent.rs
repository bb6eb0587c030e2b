//! Limits asked for through Kubernetes, for a volume on another node: the cluster's one
//! external-resizer calls ControllerModifyVolume on a controller that has no pools, which records
//! the change on the PersistentVolume (an annotation, and a label naming the volume's node); the
//! node plugin that has the volume watches the PersistentVolumes labelled with its node and
//! applies the change to the volume's record. All of it is pure here: what the annotation and
//! label say, and where a PersistentVolume's volume lives.

use super::limits::QosChange;
use k8s_openapi::api::core::v1::PersistentVolume;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};

/// The annotation holding every limit ControllerModifyVolume has been asked for (JSON object of
/// parameter to value, `unlimited` included). Later requests override earlier ones key by key,
/// so applying it to the volume's record again changes nothing.
pub const INTENT_ANNOTATION: &str = "block.fastvirt.io/qos";
/// The label that lets the volume's node plugin watch only its own PersistentVolumes.
pub const NODE_LABEL: &str = "block.fastvirt.io/qos-node";

/// The value of [`NODE_LABEL`] for a node: its name where that is a valid label value, else a
/// hash of it (node names may be 253 characters, label values 63).
pub fn node_label_value(node: &str) -> String {
    let valid = (1..=63).contains(&node.len())
        && node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && node.as_bytes()[0].is_ascii_alphanumeric()
        && node.as_bytes()[node.len() - 1].is_ascii_alphanumeric();
    if valid {
        return node.to_owned();
    }
    let digest = Sha256::digest(node.as_bytes());
    let hex: String = digest[..20].iter().map(|b| format!("{b:02x}")).collect();
    format!("h-{hex}")
}

/// The annotation after a request: the earlier one with the request's limit keys over it.
/// `requested` has been validated ([`QosChange::parse`]); its other keys are ignored.
pub fn merged_intent(existing: Option<&str>, requested: &HashMap<String, String>) -> String {
    let mut intent: BTreeMap<String, String> = existing
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default();
    for (key, value) in requested {
        if super::limits::LimitKind::from_parameter(key).is_some() {
            intent.insert(key.clone(), value.clone());
        }
    }
    serde_json::to_string(&intent).unwrap_or_default()
}

/// The change an annotation asks for.
pub fn intent_change(annotation: &str) -> Result<QosChange, String> {
    let intent: HashMap<String, String> = serde_json::from_str(annotation).map_err(|e| {
        format!("annotation {INTENT_ANNOTATION} is not a JSON object of strings: {e}")
    })?;
    QosChange::parse(&intent, |_| false)
}

/// The fastvirt volume ID of a PersistentVolume, if fastvirt provisioned it.
pub fn volume_handle(pv: &PersistentVolume) -> Option<&str> {
    let csi = pv.spec.as_ref()?.csi.as_ref()?;
    (csi.driver == crate::DRIVER_NAME).then_some(csi.volume_handle.as_str())
}

/// The node a PersistentVolume's volume lives on, from the topology its node affinity requires.
pub fn volume_node(pv: &PersistentVolume) -> Option<&str> {
    let terms = &pv
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms;
    terms.iter().find_map(|term| {
        term.match_expressions.iter().flatten().find_map(|expr| {
            (expr.key == crate::TOPOLOGY_NODE_KEY && expr.operator == "In")
                .then(|| expr.values.as_ref()?.first().map(String::as_str))
                .flatten()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qos::QosLimits;

    fn pv(driver: &str, node: &str) -> PersistentVolume {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pvc-1"},
            "spec": {
                "csi": {"driver": driver, "volumeHandle": "fv.default.0123"},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": ["other"]},
                    {"key": crate::TOPOLOGY_NODE_KEY, "operator": "In", "values": [node]}
                ]}]}}
            }
        }))
        .unwrap()
    }

    #[test]
    fn a_persistent_volume_names_its_volume_and_node() {
        let ours = pv(crate::DRIVER_NAME, "node-a");
        assert_eq!(volume_handle(&ours), Some("fv.default.0123"));
        assert_eq!(volume_node(&ours), Some("node-a"));
        assert_eq!(volume_handle(&pv("other.csi.example.com", "node-a")), None);
        assert_eq!(volume_node(&PersistentVolume::default()), None);
    }

    #[test]
    fn requests_merge_key_by_key_and_apply_idempotently() {
        let first = merged_intent(
            None,
            &HashMap::from([
                ("readIOPS".to_owned(), "200".to_owned()),
                ("csi.storage.k8s.io/pv/name".to_owned(), "pvc-1".to_owned()),
            ]),
        );
        assert_eq!(first, r#"{"readIOPS":"200"}"#);
        let second = merged_intent(
            Some(&first),
            &HashMap::from([
                ("readIOPS".to_owned(), "unlimited".to_owned()),
                ("writeBPS".to_owned(), "1048576".to_owned()),
            ]),
        );
        assert_eq!(second, r#"{"readIOPS":"unlimited","writeBPS":"1048576"}"#);
        let record = QosLimits {
            read_iops: Some(200),
            write_iops: Some(50),
            ..QosLimits::default()
        };
        let change = intent_change(&second).unwrap();
        let once = change.applied_to(record);
        assert_eq!(change.applied_to(once), once);
        assert_eq!(
            once,
            QosLimits {
                write_iops: Some(50),
                write_bps: Some(1 << 20),
                ..QosLimits::default()
            }
        );
        assert!(intent_change("not json").is_err());
        assert!(intent_change(r#"{"readIOPS":"0"}"#).is_err());
        // A hand-edited annotation that is not JSON starts over instead of failing every request.
        assert_eq!(
            merged_intent(
                Some("garbage"),
                &HashMap::from([("readIOPS".to_owned(), "5".to_owned())])
            ),
            r#"{"readIOPS":"5"}"#
        );
    }

    #[test]
    fn node_label_values_are_valid_for_any_node_name() {
        assert_eq!(node_label_value("node-a"), "node-a");
        let long = format!("{}.example.com", "n".repeat(80));
        let value = node_label_value(&long);
        assert!(value.len() <= 63 && value.starts_with("h-"), "{value}");
        assert_eq!(value, node_label_value(&long));
        assert_ne!(value, node_label_value(&format!("{long}x")));
        assert!(node_label_value("-x").starts_with("h-"));
    }
}
