//! A pool's free capacity, summed over the CSIStorageCapacity objects the external-provisioner
//! publishes for its StorageClass (one per node in distributed provisioning).

use k8s_openapi::api::storage::v1::CSIStorageCapacity;
use std::borrow::Borrow;

/// Free bytes of `class` summed over `capacities`; `None` while no node has reported (which is
/// not the same as a full pool). Unparseable quantities are skipped: one bad report must not hide
/// the rest.
pub fn sum_for_class(capacities: &[impl Borrow<CSIStorageCapacity>], class: &str) -> Option<i64> {
    let mut reported = false;
    let mut total: i64 = 0;
    for capacity in capacities
        .iter()
        .map(Borrow::borrow)
        .filter(|c| c.storage_class_name == class)
    {
        let Some(quantity) = &capacity.capacity else {
            continue;
        };
        if let Ok(bytes) = fastvirt_api::quantity::bytes(&quantity.0) {
            reported = true;
            total = total.saturating_add(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
    }
    reported.then_some(total)
}

/// The nodes whose pool for `class` has less than `threshold` bytes left, with what they have,
/// by node name. A report that names no node or cannot be parsed is left out.
pub fn nodes_below(
    capacities: &[impl Borrow<CSIStorageCapacity>],
    class: &str,
    threshold: u64,
) -> Vec<(String, u64)> {
    let mut low: Vec<(String, u64)> = capacities
        .iter()
        .map(Borrow::borrow)
        .filter(|c| c.storage_class_name == class)
        .filter_map(|c| {
            let node = c
                .node_topology
                .as_ref()?
                .match_labels
                .as_ref()?
                .get(TOPOLOGY_NODE_KEY)?
                .clone();
            let left = fastvirt_api::quantity::bytes(&c.capacity.as_ref()?.0).ok()?;
            (left < threshold).then_some((node, left))
        })
        .collect();
    low.sort();
    low
}

/// The topology key every fastvirt volume and capacity report carries.
pub const TOPOLOGY_NODE_KEY: &str = "topology.block.fastvirt.io/node";

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn capacity(class: &str, quantity: Option<&str>) -> CSIStorageCapacity {
        CSIStorageCapacity {
            storage_class_name: class.into(),
            capacity: quantity.map(|q| Quantity(q.into())),
            ..CSIStorageCapacity::default()
        }
    }

    #[test]
    fn sums_only_the_class_and_tells_unknown_from_empty() {
        let capacities = [
            capacity("fast", Some("10Gi")),
            capacity("fast", Some("1Gi")),
            capacity("slow", Some("100Gi")),
            capacity("fast", Some("garbage")),
            capacity("empty", Some("0")),
        ];
        assert_eq!(sum_for_class(&capacities, "fast"), Some(11 << 30));
        assert_eq!(sum_for_class(&capacities, "empty"), Some(0));
        assert_eq!(sum_for_class(&capacities, "none"), None);
    }

    fn on_node(class: &str, node: &str, quantity: &str) -> CSIStorageCapacity {
        let mut c = capacity(class, Some(quantity));
        c.node_topology = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector {
                match_labels: Some([(TOPOLOGY_NODE_KEY.to_owned(), node.to_owned())].into()),
                ..Default::default()
            },
        );
        c
    }

    #[test]
    fn nodes_below_the_threshold_by_name() {
        let capacities = [
            on_node("fast", "b", "500Mi"),
            on_node("fast", "a", "100Mi"),
            on_node("fast", "c", "2Gi"),
            on_node("slow", "d", "1Mi"),
            capacity("fast", Some("1Mi")),
        ];
        assert_eq!(
            nodes_below(&capacities, "fast", 1 << 30),
            [("a".to_owned(), 100 << 20), ("b".to_owned(), 500 << 20)]
        );
        assert!(nodes_below(&capacities, "fast", 1 << 20).is_empty());
    }
}
