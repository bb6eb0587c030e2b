//! Volume and snapshot IDs, pool names and volume names (`ids.rs`): whatever parses prints back to
//! the same text, an ID derived from a name parses back to itself, and the two kinds never mix.
#![no_main]

use fastvirt_csi::ids::{self, PoolName, SnapshotId, VolumeId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let volume = VolumeId::parse(text);
    let snapshot = SnapshotId::parse(text);
    assert!(
        volume.is_err() || snapshot.is_err(),
        "{text:?} is both kinds"
    );
    if let Ok(id) = &volume {
        assert_eq!(id.to_string(), text);
        assert!(ids::is_volume_key(id.key()));
    }
    if let Ok(id) = &snapshot {
        assert_eq!(id.to_string(), text);
    }
    if let Ok(pool) = PoolName::new(text) {
        assert_eq!(pool.as_str(), text);
        assert!(!text.is_empty() && text.len() <= 63);
        assert!(!text.contains(['/', '.', '\0']));
    }
    let shown = ids::truncate_for_message(text);
    assert!(shown.len() <= 80 + '…'.len_utf8());
    assert!(text.starts_with(shown.trim_end_matches('…')));
    // The first line as a pool, the rest as a name.
    let (pool, name) = text.split_once('\n').unwrap_or(("default", text));
    let Ok(pool) = PoolName::new(pool) else {
        return;
    };
    match VolumeId::for_name(&pool, name) {
        Ok(id) => {
            assert!(ids::validate_volume_name(name).is_ok());
            assert_eq!(VolumeId::parse(&id.to_string()), Ok(id.clone()));
            assert_eq!(id.pool(), &pool);
            let snapshot = SnapshotId::for_name(&pool, name).unwrap();
            assert_eq!(snapshot.key(), id.key());
            assert!(VolumeId::parse(&snapshot.to_string()).is_err());
        }
        Err(_) => assert!(ids::validate_volume_name(name).is_err()),
    }
});
