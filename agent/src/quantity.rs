//! Kubernetes resource quantities as the kubelet reports hugepage capacity (`2Gi`, `1024Mi`, `0`).

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuantityError {
    #[error("{0:?} is not a byte quantity")]
    Syntax(String),
}

/// Bytes of a quantity with a binary or decimal suffix, or none.
pub fn bytes(quantity: &str) -> Result<u64, QuantityError> {
    let quantity = quantity.trim();
    let split = quantity
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(quantity.len());
    let (number, suffix) = quantity.split_at(split);
    let multiplier: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => return Err(QuantityError::Syntax(quantity.to_owned())),
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| QuantityError::Syntax(quantity.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_decimal_suffixes() {
        assert_eq!(bytes("2Gi"), Ok(2 << 30));
        assert_eq!(bytes("1024Mi"), Ok(1 << 30));
        assert_eq!(bytes("0"), Ok(0));
        assert_eq!(bytes("3k"), Ok(3000));
        assert!(bytes("1.5Gi").is_err());
        assert!(bytes("Gi").is_err());
    }
}
