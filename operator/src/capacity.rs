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
}
