//! The `LowSpace` condition of a BlockPool (pure): which nodes have less left for new volumes
//! than the pool's `lowSpaceThreshold`, from the CSIStorageCapacity objects the provisioners
//! publish. The reconciler records an Event when the condition turns true.

use crate::capacity::nodes_below;
use crate::pool_objects::class_name;
use fastvirt_api::{BlockPool, Condition};
use k8s_openapi::api::storage::v1::CSIStorageCapacity;
use std::borrow::Borrow;

/// The condition's type.
pub const LOW_SPACE: &str = "LowSpace";

/// How many nodes a message names before it says how many more there are.
const NAMED: usize = 5;

fn mib(bytes: u64) -> String {
    format!("{} MiB", bytes >> 20)
}

/// The `LowSpace` condition, `None` when the pool sets no threshold.
pub fn condition(
    pool: &BlockPool,
    capacities: &[impl Borrow<CSIStorageCapacity>],
) -> Option<Condition> {
    let text = pool.spec.low_space_threshold.as_deref()?;
    let generation = pool.metadata.generation;
    let threshold = match fastvirt_api::quantity::bytes(text) {
        Ok(bytes) => bytes,
        Err(error) => {
            return Some(Condition::new(
                LOW_SPACE,
                false,
                "InvalidThreshold",
                format!("lowSpaceThreshold {text:?} is not a quantity: {error}"),
                generation,
            ));
        }
    };
    let low = nodes_below(capacities, &class_name(pool), threshold);
    if low.is_empty() {
        return Some(Condition::new(
            LOW_SPACE,
            false,
            "EnoughSpace",
            format!("every node that reports has at least {text} left for new volumes"),
            generation,
        ));
    }
    let mut named: Vec<String> = low
        .iter()
        .take(NAMED)
        .map(|(node, left)| format!("{node} ({})", mib(*left)))
        .collect();
    if low.len() > NAMED {
        named.push(format!("and {} more", low.len() - NAMED));
    }
    Some(Condition::new(
        LOW_SPACE,
        true,
        "LowSpace",
        format!(
            "{} of the pool's nodes have less than {text} left for new volumes: {}. Free space (delete volumes or snapshots), or grow the filesystem under the pool; VMs writing to a full thin pool pause",
            low.len(),
            named.join(", ")
        ),
        generation,
    ))
}

/// Whether `now` starts a low-space period that `previous` (the status's conditions) did not
/// have: the moment for an Event.
pub fn started(previous: &[Condition], now: &Condition) -> bool {
    now.type_ == LOW_SPACE
        && now.status == "True"
        && !previous
            .iter()
            .any(|c| c.type_ == LOW_SPACE && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(threshold: Option<&str>) -> BlockPool {
        let mut pool = BlockPool::new(
            "fast",
            serde_yaml::from_str("backend: {file: {path: /var/lib/fastvirt/fast}}").unwrap(),
        );
        pool.spec.low_space_threshold = threshold.map(str::to_owned);
        pool
    }

    fn report(node: &str, left: &str) -> CSIStorageCapacity {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("csisc-{node}"), "namespace": "fastvirt-system"},
            "storageClassName": "fast",
            "capacity": left,
            "nodeTopology": {"matchLabels": {"topology.block.fastvirt.io/node": node}},
        }))
        .unwrap()
    }

    #[test]
    fn names_the_nodes_below_the_threshold() {
        let reports = [report("a", "200Mi"), report("b", "50Gi")];
        let low = condition(&pool(Some("1Gi")), &reports).unwrap();
        assert_eq!(
            (low.status.as_str(), low.reason.as_str()),
            ("True", "LowSpace")
        );
        assert!(
            low.message.starts_with(
                "1 of the pool's nodes have less than 1Gi left for new volumes: a (200 MiB)."
            ),
            "{}",
            low.message
        );
        let fine = condition(&pool(Some("100Mi")), &reports).unwrap();
        assert_eq!(
            (fine.status.as_str(), fine.reason.as_str()),
            ("False", "EnoughSpace")
        );
        assert!(
            condition(&pool(None), &reports).is_none(),
            "no threshold, no condition"
        );
        let bad = condition(&pool(Some("lots")), &reports).unwrap();
        assert_eq!(bad.reason, "InvalidThreshold");
    }

    #[test]
    fn many_nodes_are_counted_not_all_named() {
        let reports: Vec<_> = (0..8).map(|i| report(&format!("n{i}"), "1Mi")).collect();
        let low = condition(&pool(Some("1Gi")), &reports).unwrap();
        assert!(
            low.message.contains("n4 (1 MiB), and 3 more"),
            "{}",
            low.message
        );
    }

    #[test]
    fn an_event_only_when_it_starts() {
        let reports = [report("a", "1Mi")];
        let low = condition(&pool(Some("1Gi")), &reports).unwrap();
        assert!(started(&[], &low));
        assert!(!started(std::slice::from_ref(&low), &low));
        let fine = condition(&pool(Some("1Ki")), &reports).unwrap();
        assert!(!started(&[], &fine));
    }
}
