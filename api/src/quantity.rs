//! Kubernetes resource quantities (`10Gi`, `500M`, `1.5Ti`, `1073741824`) as bytes: what
//! CSIStorageCapacity objects and the kubelet's hugepage capacity report.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum QuantityError {
    #[error("quantity {0:?} is not a number with an optional binary or decimal suffix")]
    Syntax(String),
    #[error("quantity {0:?} does not fit in 64 bits")]
    Overflow(String),
}

/// Bytes in a Kubernetes quantity such as `10Gi`, `500M`, `1.5Ti` or `1073741824`; fractions of a
/// byte round down.
pub fn bytes(text: &str) -> Result<u64, QuantityError> {
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
    u64::try_from(bytes).map_err(|_| QuantityError::Overflow(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(bytes("1073741824"), Ok(1 << 30));
        assert_eq!(bytes("10Gi"), Ok(10 << 30));
        assert_eq!(bytes("1.5Ki"), Ok(1536));
        assert_eq!(bytes("500M"), Ok(500_000_000));
        assert_eq!(bytes("0"), Ok(0));
        assert_eq!(bytes(".5k"), Ok(500));
        for bad in ["", "Gi", "1GB", "-1", "1..2", "1e3", "1.0000000001"] {
            assert_eq!(bytes(bad), Err(QuantityError::Syntax(bad.into())), "{bad}");
        }
        assert_eq!(bytes("17Ei"), Err(QuantityError::Overflow("17Ei".into())));
    }
}
