//! The four I/O limits a fastvirt volume can have (`readIOPS`, `writeIOPS`, `readBPS`,
//! `writeBPS`), as StorageClass, VolumeAttributesClass and ControllerModifyVolume parameters name
//! them, and their validation: shared by the driver, which enforces them, and the operator, which
//! accepts them in a BlockPool's StorageClass parameters.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// One kind of limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LimitKind {
    ReadIops,
    WriteIops,
    ReadBps,
    WriteBps,
}

impl LimitKind {
    pub const ALL: [LimitKind; 4] = [
        LimitKind::ReadIops,
        LimitKind::WriteIops,
        LimitKind::ReadBps,
        LimitKind::WriteBps,
    ];

    /// The parameter key that sets it.
    pub fn parameter(self) -> &'static str {
        match self {
            Self::ReadIops => "readIOPS",
            Self::WriteIops => "writeIOPS",
            Self::ReadBps => "readBPS",
            Self::WriteBps => "writeBPS",
        }
    }

    /// The limit a parameter key sets, if it is one of the four.
    pub fn from_parameter(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.parameter() == key)
    }

    /// The `limit` label of the metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::ReadIops => "read_iops",
            Self::WriteIops => "write_iops",
            Self::ReadBps => "read_bps",
            Self::WriteBps => "write_bps",
        }
    }

    fn is_iops(self) -> bool {
        matches!(self, Self::ReadIops | Self::WriteIops)
    }

    /// The smallest value that lets a volume work at all: one I/O, or one 4 KiB block, a second.
    fn minimum(self) -> u64 {
        if self.is_iops() { 1 } else { 4096 }
    }

    /// The kernel keeps IOPS limits in 32 bits (blk-throttle), bandwidth in 64.
    fn maximum(self) -> u64 {
        if self.is_iops() {
            u64::from(u32::MAX)
        } else {
            u64::MAX
        }
    }
}

/// The value that removes a limit (absence leaves a limit as it is: see [`QosChange`]).
pub const UNLIMITED: &str = "unlimited";

/// A volume's I/O limits; `None` is unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QosLimits {
    /// Read operations per second.
    #[serde(rename = "readIOPS", default, skip_serializing_if = "Option::is_none")]
    pub read_iops: Option<u64>,
    /// Write operations per second.
    #[serde(rename = "writeIOPS", default, skip_serializing_if = "Option::is_none")]
    pub write_iops: Option<u64>,
    /// Bytes read per second.
    #[serde(rename = "readBPS", default, skip_serializing_if = "Option::is_none")]
    pub read_bps: Option<u64>,
    /// Bytes written per second.
    #[serde(rename = "writeBPS", default, skip_serializing_if = "Option::is_none")]
    pub write_bps: Option<u64>,
}

impl QosLimits {
    /// Each limit the lower of the two (an absent one is no limit): what one throttle line must
    /// say to keep both.
    pub fn tighter(self, other: Self) -> Self {
        let min = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Self {
            read_iops: min(self.read_iops, other.read_iops),
            write_iops: min(self.write_iops, other.write_iops),
            read_bps: min(self.read_bps, other.read_bps),
            write_bps: min(self.write_bps, other.write_bps),
        }
    }

    pub fn get(&self, kind: LimitKind) -> Option<u64> {
        match kind {
            LimitKind::ReadIops => self.read_iops,
            LimitKind::WriteIops => self.write_iops,
            LimitKind::ReadBps => self.read_bps,
            LimitKind::WriteBps => self.write_bps,
        }
    }

    pub fn set(&mut self, kind: LimitKind, value: Option<u64>) {
        let slot = match kind {
            LimitKind::ReadIops => &mut self.read_iops,
            LimitKind::WriteIops => &mut self.write_iops,
            LimitKind::ReadBps => &mut self.read_bps,
            LimitKind::WriteBps => &mut self.write_bps,
        };
        *slot = value;
    }

    pub fn is_unlimited(&self) -> bool {
        LimitKind::ALL.iter().all(|kind| self.get(*kind).is_none())
    }

    /// The limits that are set, in [`LimitKind::ALL`] order.
    pub fn set_limits(&self) -> impl Iterator<Item = (LimitKind, u64)> + '_ {
        LimitKind::ALL
            .into_iter()
            .filter_map(|kind| self.get(kind).map(|value| (kind, value)))
    }
}

impl std::fmt::Display for QosLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_unlimited() {
            return f.write_str(UNLIMITED);
        }
        let parts: Vec<String> = self
            .set_limits()
            .map(|(kind, value)| format!("{}={value}", kind.parameter()))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// What a request says about each limit. Keys it does not name stay as they are (the CSI spec:
/// a plugin must not change a volume because a key is absent); `unlimited` removes a limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QosChange {
    changes: [Option<Option<u64>>; 4],
}

impl QosChange {
    pub fn is_empty(&self) -> bool {
        self.changes.iter().all(Option::is_none)
    }

    /// `limits` with this change made.
    pub fn applied_to(&self, mut limits: QosLimits) -> QosLimits {
        for (kind, change) in LimitKind::ALL.into_iter().zip(self.changes) {
            if let Some(value) = change {
                limits.set(kind, value);
            }
        }
        limits
    }

    /// Adds `key: value` if `key` is one of the limits: `Ok(false)` when it is not.
    pub fn take(&mut self, key: &str, value: &str) -> Result<bool, String> {
        let Some(kind) = LimitKind::from_parameter(key) else {
            return Ok(false);
        };
        let index = LimitKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.changes[index] = Some(parse_value(kind, value)?);
        Ok(true)
    }

    /// The limits among `parameters`; any other key is an error unless `ignore` accepts it.
    pub fn parse(
        parameters: &HashMap<String, String>,
        ignore: impl Fn(&str) -> bool,
    ) -> Result<Self, String> {
        let mut change = Self::default();
        for (key, value) in parameters {
            if !change.take(key, value)? && !ignore(key) {
                return Err(format!(
                    "unknown parameter {:?}; the mutable parameters are {}",
                    crate::text::truncate_for_message(key),
                    parameter_list()
                ));
            }
        }
        Ok(change)
    }
}

/// The four parameter keys, for messages.
pub fn parameter_list() -> String {
    LimitKind::ALL.map(LimitKind::parameter).join(", ")
}

/// A decimal integer within the kind's range, or `unlimited`.
fn parse_value(kind: LimitKind, value: &str) -> Result<Option<u64>, String> {
    let name = kind.parameter();
    if value == UNLIMITED {
        return Ok(None);
    }
    let shown = crate::text::truncate_for_message(value);
    // Digits only: u64's parser would take a leading `+`.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "parameter {name} must be a whole number or {UNLIMITED:?}, got {shown:?}"
        ));
    }
    let number: u64 = value
        .parse()
        .map_err(|_| format!("parameter {name} is too large: {shown}"))?;
    if number < kind.minimum() {
        return Err(format!(
            "parameter {name} must be at least {} (use {UNLIMITED:?} for no limit), got {number}",
            kind.minimum()
        ));
    }
    if number > kind.maximum() {
        return Err(format!(
            "parameter {name} must be at most {}, got {number}",
            kind.maximum()
        ));
    }
    Ok(Some(number))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tighter_of_two_keeps_both() {
        let a = QosLimits {
            read_iops: Some(100),
            write_bps: Some(1 << 20),
            ..QosLimits::default()
        };
        let b = QosLimits {
            read_iops: Some(50),
            write_iops: Some(10),
            ..QosLimits::default()
        };
        assert_eq!(
            a.tighter(b),
            QosLimits {
                read_iops: Some(50),
                write_iops: Some(10),
                read_bps: None,
                write_bps: Some(1 << 20),
            }
        );
        assert_eq!(a.tighter(QosLimits::default()), a, "unlimited adds nothing");
    }

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn parse(pairs: &[(&str, &str)]) -> Result<QosChange, String> {
        QosChange::parse(&params(pairs), |_| false)
    }

    #[test]
    fn each_key_sets_its_limit_and_absent_keys_change_nothing() {
        let before = QosLimits {
            read_iops: Some(100),
            write_bps: Some(1 << 20),
            ..QosLimits::default()
        };
        let change = parse(&[("writeIOPS", "250"), ("readBPS", "8192")]).unwrap();
        let after = change.applied_to(before);
        assert_eq!(
            after,
            QosLimits {
                read_iops: Some(100),
                write_iops: Some(250),
                read_bps: Some(8192),
                write_bps: Some(1 << 20),
            }
        );
        assert_eq!(
            after.to_string(),
            "readIOPS=100,writeIOPS=250,readBPS=8192,writeBPS=1048576"
        );
    }

    #[test]
    fn unlimited_removes_a_limit() {
        let before = QosLimits {
            read_iops: Some(100),
            ..QosLimits::default()
        };
        let after = parse(&[("readIOPS", "unlimited")])
            .unwrap()
            .applied_to(before);
        assert!(after.is_unlimited());
        assert_eq!(after.to_string(), "unlimited");
    }

    #[test]
    fn bad_values_are_refused_with_the_key_named() {
        for (key, value, expected) in [
            ("readIOPS", "0", "at least 1"),
            ("readIOPS", "-5", "whole number"),
            ("readIOPS", "+5", "whole number"),
            ("readIOPS", "1.5", "whole number"),
            ("readIOPS", "", "whole number"),
            ("readIOPS", "1k", "whole number"),
            ("writeIOPS", "4294967296", "at most 4294967295"),
            ("readBPS", "4095", "at least 4096"),
            ("writeBPS", "99999999999999999999999", "too large"),
            ("writeBPS", "Unlimited", "whole number"),
        ] {
            let error = parse(&[(key, value)]).unwrap_err();
            assert!(
                error.contains(key) && error.contains(expected),
                "{key}={value}: {error}"
            );
        }
        assert_eq!(
            parse(&[("writeIOPS", "4294967295")])
                .unwrap()
                .applied_to(QosLimits::default())
                .write_iops,
            Some(u64::from(u32::MAX))
        );
    }

    #[test]
    fn unknown_keys_are_refused_unless_ignored() {
        let error = parse(&[("XXX_FakeKey", "XXX_FakeValue")]).unwrap_err();
        assert!(
            error.contains("XXX_FakeKey") && error.contains("readIOPS"),
            "{error}"
        );
        let change = QosChange::parse(
            &params(&[("csi.storage.k8s.io/pv/name", "pv-1"), ("readIOPS", "10")]),
            |key| key.starts_with("csi.storage.k8s.io/"),
        )
        .unwrap();
        assert!(!change.is_empty());
        assert!(parse(&[]).unwrap().is_empty());
    }

    #[test]
    fn limits_round_trip_through_the_record_format() {
        let limits = QosLimits {
            read_iops: Some(500),
            write_bps: Some(10 << 20),
            ..QosLimits::default()
        };
        let json = serde_json::to_string(&limits).unwrap();
        assert_eq!(json, r#"{"readIOPS":500,"writeBPS":10485760}"#);
        assert_eq!(serde_json::from_str::<QosLimits>(&json).unwrap(), limits);
        assert!(serde_json::from_str::<QosLimits>(r#"{"readIops":1}"#).is_err());
    }
}
