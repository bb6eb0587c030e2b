//! How much a pool may promise. Thin volumes, reflinked clones and snapshots take space only as
//! data is written, so a pool can promise more than it holds; when the promises come due, the
//! filesystem fills and every VM with a disk in the pool stops at its next write. The pool's
//! overcommit percentage caps the sum of what it has promised (volume capacities and snapshot
//! sizes) against its usable size: 100, the default, never promises more than it can ever write.

/// The default: promise no more than the pool can hold.
pub const DEFAULT_PERCENT: u32 = 100;

/// The most a pool may promise: `usable` bytes times `percent` / 100.
pub fn limit(usable: u64, percent: u32) -> u64 {
    let limit = u128::from(usable) * u128::from(percent) / 100;
    u64::try_from(limit).unwrap_or(u64::MAX)
}

/// What is left to promise.
pub fn headroom(usable: u64, percent: u32, promised: u64) -> u64 {
    limit(usable, percent).saturating_sub(promised)
}

/// Why `needed` more bytes cannot be promised, in words a user acts on; `None` if they can.
pub fn refusal(usable: u64, percent: u32, promised: u64, needed: u64) -> Option<String> {
    let limit = limit(usable, percent);
    if u128::from(promised) + u128::from(needed) <= u128::from(limit) {
        return None;
    }
    let full = if limit == 0 {
        100
    } else {
        u128::from(promised) * 100 / u128::from(limit)
    };
    Some(format!(
        "has promised {promised} of the {limit} bytes it may promise ({full}% of {percent}% of its {usable} usable bytes); {needed} more would overcommit it. Delete volumes or snapshots, or raise the BlockPool's overcommitPercent"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_never_promises_more_than_the_pool_holds() {
        assert_eq!(refusal(100, DEFAULT_PERCENT, 60, 40), None);
        let message = refusal(100, DEFAULT_PERCENT, 60, 41).unwrap();
        assert!(
            message.contains("promised 60 of the 100 bytes"),
            "{message}"
        );
        assert!(message.contains("60% of 100%"), "{message}");
        assert_eq!(headroom(100, DEFAULT_PERCENT, 60), 40);
        assert_eq!(headroom(100, DEFAULT_PERCENT, 160), 0);
    }

    #[test]
    fn a_higher_percentage_allows_more_and_big_numbers_do_not_overflow() {
        assert_eq!(refusal(100, 300, 250, 50), None);
        assert!(refusal(100, 300, 250, 51).is_some());
        assert_eq!(limit(u64::MAX, 10_000), u64::MAX);
        assert!(refusal(u64::MAX, 100, u64::MAX, 1).is_some());
        assert!(refusal(0, 100, 0, 1).unwrap().contains("(100% of"));
    }
}
