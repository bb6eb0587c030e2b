//! A pool's free capacity, summed over the CSIStorageCapacity objects the external-provisioner
//! publishes for its StorageClass (one per node in distributed provisioning).

use k8s_openapi::api::storage::v1::CSIStorageCapacity;
use std::borrow::Borrow;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuantityError {
    #[error("quantity {0:?} is not a number with an optional binary or decimal suffix")]
    Syntax(String),
    #[error("quantity {0:?} does not fit in 64 bits")]
    Overflow(String),
}

/// Bytes in a Kubernetes quantity such as `10Gi`, `500M`, `1.5Ti` or `1073741824`; fractions of a
/// byte round down.
pub fn parse_quantity(text: &str) -> Result<i64, QuantityError> {
    let syntax = || QuantityError::Syntax(text.to_owned());
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let multiplier: u128 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        _ => return Err(syntax()),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.len() > 9 {
        return Err(syntax());
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| syntax())?
    };
    let fraction_value: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().map_err(|_| syntax())?
    };
    let scale = 10u128.pow(fraction.len() as u32);
    let bytes = whole
        .checked_mul(multiplier)
        .and_then(|w| w.checked_add(fraction_value * multiplier / scale))
        .ok_or_else(|| QuantityError::Overflow(text.to_owned()))?;
    i64::try_from(bytes).map_err(|_| QuantityError::Overflow(text.to_owned()))
}

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
        if let Ok(bytes) = parse_quantity(&quantity.0) {
            reported = true;
            total = total.saturating_add(bytes);
        }
    }
    reported.then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("1073741824"), Ok(1 << 30));
        assert_eq!(parse_quantity("10Gi"), Ok(10 << 30));
        assert_eq!(parse_quantity("1.5Ki"), Ok(1536));
        assert_eq!(parse_quantity("500M"), Ok(500_000_000));
        assert_eq!(parse_quantity("0"), Ok(0));
        assert_eq!(parse_quantity(".5k"), Ok(500));
        for bad in ["", "Gi", "1GB", "-1", "1..2", "1e3", "1.0000000001"] {
            assert_eq!(
                parse_quantity(bad),
                Err(QuantityError::Syntax(bad.into())),
                "{bad}"
            );
        }
        assert_eq!(
            parse_quantity("9Ei"),
            Err(QuantityError::Overflow("9Ei".into()))
        );
    }

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
