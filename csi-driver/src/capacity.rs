//! Turning a CSI `CapacityRange` into a volume size.

/// Volumes are sized in whole MiB: it keeps every loop block size and filesystem happy.
pub const ALIGNMENT: u64 = 1 << 20;
/// Size of a volume created without a capacity range.
pub const DEFAULT_SIZE: u64 = 1 << 30;
/// Smallest volume the driver creates.
pub const MIN_SIZE: u64 = ALIGNMENT;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CapacityError {
    #[error("capacity_range bytes must not be negative (required {required}, limit {limit})")]
    Negative { required: i64, limit: i64 },
    #[error("required_bytes {required} is larger than limit_bytes {limit}")]
    RequiredAboveLimit { required: i64, limit: i64 },
    #[error(
        "no size that is a multiple of 1 MiB and at least {MIN_SIZE} bytes fits between required_bytes {required} and limit_bytes {limit}"
    )]
    NoAlignedSize { required: i64, limit: i64 },
    #[error("requested {size} bytes, but this pool supports at most {max} bytes per volume")]
    TooLarge { size: u64, max: u64 },
}

/// The size to create for `required`/`limit` (CSI semantics: 0 means unset), at most `max` bytes.
pub fn resolve(required: i64, limit: i64, max: u64) -> Result<u64, CapacityError> {
    if required < 0 || limit < 0 {
        return Err(CapacityError::Negative { required, limit });
    }
    let (required_u, limit_u) = (required as u64, limit as u64);
    if limit_u > 0 && required_u > limit_u {
        return Err(CapacityError::RequiredAboveLimit { required, limit });
    }
    let wanted = match (required_u, limit_u) {
        (0, 0) => DEFAULT_SIZE,
        (0, l) => DEFAULT_SIZE.min(round_down(l)),
        (r, _) => round_up(r.max(MIN_SIZE)),
    };
    let size = if limit_u > 0 && wanted > limit_u {
        round_down(limit_u)
    } else {
        wanted
    };
    if size < MIN_SIZE || size < required_u {
        return Err(CapacityError::NoAlignedSize { required, limit });
    }
    if size > max {
        return Err(CapacityError::TooLarge { size, max });
    }
    Ok(size)
}

/// Whether an existing volume of `size` bytes answers a request for `required`/`limit`.
pub fn satisfies(size: u64, required: i64, limit: i64) -> bool {
    let above_required = required <= 0 || size >= required as u64;
    let below_limit = limit <= 0 || size <= limit as u64;
    above_required && below_limit
}

fn round_up(bytes: u64) -> u64 {
    bytes.div_ceil(ALIGNMENT).saturating_mul(ALIGNMENT)
}

fn round_down(bytes: u64) -> u64 {
    bytes / ALIGNMENT * ALIGNMENT
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: i64 = 1 << 20;
    const MAX: u64 = 1 << 40;

    #[test]
    fn defaults_and_rounding() {
        assert_eq!(resolve(0, 0, MAX), Ok(DEFAULT_SIZE));
        assert_eq!(resolve(1, 0, MAX), Ok(ALIGNMENT));
        assert_eq!(resolve(MIB + 1, 0, MAX), Ok(2 * ALIGNMENT));
        assert_eq!(resolve(0, 10 * MIB, MAX), Ok(10 * ALIGNMENT));
        assert_eq!(resolve(0, 10 * MIB + 5, MAX), Ok(10 * ALIGNMENT));
        assert_eq!(resolve(5 * MIB, 5 * MIB, MAX), Ok(5 * ALIGNMENT));
    }

    #[test]
    fn limit_caps_the_rounded_size() {
        // 1.5 MiB required with a 1.9 MiB limit: no whole MiB fits.
        assert_eq!(
            resolve(3 * MIB / 2, 19 * MIB / 10, MAX),
            Err(CapacityError::NoAlignedSize {
                required: 3 * MIB / 2,
                limit: 19 * MIB / 10
            })
        );
        assert_eq!(
            resolve(0, MIB / 2, MAX),
            Err(CapacityError::NoAlignedSize {
                required: 0,
                limit: MIB / 2
            })
        );
        assert_eq!(resolve(MIB + 1, 3 * MIB - 1, MAX), Ok(2 * ALIGNMENT));
    }

    #[test]
    fn invalid_ranges() {
        assert!(matches!(
            resolve(-1, 0, MAX),
            Err(CapacityError::Negative { .. })
        ));
        assert!(matches!(
            resolve(0, -1, MAX),
            Err(CapacityError::Negative { .. })
        ));
        assert!(matches!(
            resolve(2 * MIB, MIB, MAX),
            Err(CapacityError::RequiredAboveLimit { .. })
        ));
        assert!(matches!(
            resolve(i64::MAX, 0, MAX),
            Err(CapacityError::TooLarge { .. })
        ));
    }

    #[test]
    fn existing_sizes() {
        let size = 10 * ALIGNMENT;
        assert!(satisfies(size, 0, 0));
        assert!(satisfies(size, 10 * MIB, 10 * MIB));
        assert!(satisfies(size, MIB, 0));
        assert!(!satisfies(size, 11 * MIB, 0));
        assert!(!satisfies(size, 0, 9 * MIB));
    }
}
