//! Volume and pool identifiers.
//!
//! A volume ID is `fv.<pool>.<key>`, where `key` is 32 lowercase hex digits derived from the CSI volume
//! name. Deriving the key from the name makes CreateVolume idempotent without an index, and only the
//! validated key ever becomes a path component, never a name chosen by a client.

use sha2::{Digest, Sha256};
use std::fmt;

const KEY_LEN: usize = 32;
/// Longest CSI volume name accepted; the spec asks plugins to support 128 bytes.
pub const MAX_NAME_BYTES: usize = 128;

/// Why an identifier was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error(
        "pool name must be 1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit, got {0:?}"
    )]
    BadPoolName(String),
    #[error("volume name must not be empty")]
    EmptyName,
    #[error("volume name is {0} bytes long, the limit is {MAX_NAME_BYTES}")]
    NameTooLong(usize),
    #[error("volume name must not contain control characters")]
    NameControlCharacter,
    #[error("malformed ID {0:?}")]
    BadVolumeId(String),
}

/// A validated pool name: a DNS label, so it is safe in paths, IDs and Kubernetes object names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolName(String);

impl PoolName {
    pub fn new(name: &str) -> Result<Self, IdError> {
        let valid_chars = name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let valid_edges = name
            .bytes()
            .next()
            .zip(name.bytes().last())
            .is_some_and(|(first, last)| first != b'-' && last != b'-');
        if name.is_empty() || name.len() > 63 || !valid_chars || !valid_edges {
            return Err(IdError::BadPoolName(truncate_for_message(name)));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PoolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What an ID names; each kind has its own prefix, so a volume ID is never taken for a snapshot's.
pub trait IdKind: Clone + PartialEq + Eq + std::hash::Hash + PartialOrd + Ord + fmt::Debug {
    const PREFIX: &'static str;
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VolumeKind;

impl IdKind for VolumeKind {
    const PREFIX: &'static str = "fv";
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SnapshotKind;

impl IdKind for SnapshotKind {
    const PREFIX: &'static str = "fs";
}

/// A parsed ID: `<prefix>.<pool>.<key>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id<K: IdKind> {
    pool: PoolName,
    key: String,
    kind: K,
}

/// A volume ID, `fv.<pool>.<key>`.
pub type VolumeId = Id<VolumeKind>;
/// A snapshot ID, `fs.<pool>.<key>`.
pub type SnapshotId = Id<SnapshotKind>;

impl<K: IdKind + Default> Id<K> {
    /// The ID an object with this CSI name gets in `pool`.
    pub fn for_name(pool: &PoolName, name: &str) -> Result<Self, IdError> {
        validate_volume_name(name)?;
        let digest = Sha256::digest(name.as_bytes());
        let key = digest[..KEY_LEN / 2]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Self {
            pool: pool.clone(),
            key,
            kind: K::default(),
        })
    }

    pub fn parse(id: &str) -> Result<Self, IdError> {
        let bad = || IdError::BadVolumeId(truncate_for_message(id));
        let mut parts = id.split('.');
        let (Some(prefix), Some(pool), Some(key), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(bad());
        };
        if prefix != K::PREFIX || !is_volume_key(key) {
            return Err(bad());
        }
        let pool = PoolName::new(pool).map_err(|_| bad())?;
        Ok(Self {
            pool,
            key: key.to_owned(),
            kind: K::default(),
        })
    }
}

impl<K: IdKind> Id<K> {
    pub fn pool(&self) -> &PoolName {
        &self.pool
    }

    /// The file-name-safe part of the ID: 32 lowercase hex digits.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl<K: IdKind> fmt::Display for Id<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", K::PREFIX, self.pool, self.key)
    }
}

/// True for exactly 32 lowercase hex digits.
pub fn is_volume_key(key: &str) -> bool {
    key.len() == KEY_LEN
        && key
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub fn validate_volume_name(name: &str) -> Result<(), IdError> {
    if name.is_empty() {
        return Err(IdError::EmptyName);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(IdError::NameTooLong(name.len()));
    }
    if name.chars().any(char::is_control) {
        return Err(IdError::NameControlCharacter);
    }
    Ok(())
}

pub use fastvirt_api::text::truncate_for_message;

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> PoolName {
        PoolName::new("fast-nvme0").unwrap()
    }

    #[test]
    fn same_name_gives_same_id_and_round_trips() {
        let a = VolumeId::for_name(&pool(), "pvc-1234").unwrap();
        let b = VolumeId::for_name(&pool(), "pvc-1234").unwrap();
        assert_eq!(a, b);
        assert_eq!(VolumeId::parse(&a.to_string()).unwrap(), a);
        assert!(a.to_string().starts_with("fv.fast-nvme0."));
        assert_ne!(a, VolumeId::for_name(&pool(), "pvc-1235").unwrap());
    }

    #[test]
    fn names_with_path_characters_never_reach_the_key() {
        for name in ["../../etc/passwd", "a/b", "..", "."] {
            let id = VolumeId::for_name(&pool(), name).unwrap();
            assert!(is_volume_key(id.key()), "{name}");
        }
    }

    #[test]
    fn bad_names_are_refused() {
        assert_eq!(VolumeId::for_name(&pool(), ""), Err(IdError::EmptyName));
        assert_eq!(
            VolumeId::for_name(&pool(), &"x".repeat(10_000)),
            Err(IdError::NameTooLong(10_000))
        );
        assert_eq!(
            VolumeId::for_name(&pool(), "a\0b"),
            Err(IdError::NameControlCharacter)
        );
        assert!(VolumeId::for_name(&pool(), &"x".repeat(MAX_NAME_BYTES)).is_ok());
    }

    #[test]
    fn malformed_ids_are_refused() {
        let key = "0123456789abcdef0123456789abcdef";
        assert!(VolumeId::parse(&format!("fv.p.{key}")).is_ok());
        for id in [
            String::new(),
            "fv".into(),
            format!("fv.p.{key}.x"),
            format!("xx.p.{key}"),
            format!("fv.P.{key}"),
            format!("fv.../{key}"),
            format!("fv.p.{}", &key[1..]),
            format!("fv.p.{}", key.to_uppercase()),
            format!("fv.p.{}/", &key[1..]),
            format!("fv.p.{}\0", &key[1..]),
            "fv.p.".to_owned() + &"a".repeat(10_000),
        ] {
            assert!(VolumeId::parse(&id).is_err(), "{id:?}");
        }
    }

    #[test]
    fn snapshot_and_volume_ids_never_mix() {
        let volume = VolumeId::for_name(&pool(), "same-name").unwrap();
        let snapshot = SnapshotId::for_name(&pool(), "same-name").unwrap();
        assert!(snapshot.to_string().starts_with("fs.fast-nvme0."));
        assert!(SnapshotId::parse(&volume.to_string()).is_err());
        assert!(VolumeId::parse(&snapshot.to_string()).is_err());
        assert_eq!(SnapshotId::parse(&snapshot.to_string()).unwrap(), snapshot);
    }

    #[test]
    fn pool_names_are_dns_labels() {
        for good in ["default", "a", "nvme-0", &"a".repeat(63)] {
            assert!(PoolName::new(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "A", "a.b", "a/b", "..", &"a".repeat(64)] {
            assert!(PoolName::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        let s = "é".repeat(100);
        let t = truncate_for_message(&s);
        assert!(t.len() < s.len());
        assert!(t.ends_with('…'));
    }
}
