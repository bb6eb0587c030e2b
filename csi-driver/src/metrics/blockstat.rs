//! A block device's I/O counters from `/sys/block/<name>/stat` (Documentation/block/stat.rst):
//! completed reads and writes, sectors of 512 bytes whatever the device's block size, and the
//! milliseconds spent on them.

use std::path::Path;

/// The counters the metrics export.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockStat {
    pub read_ios: u64,
    pub read_bytes: u64,
    pub read_ms: u64,
    pub write_ios: u64,
    pub write_bytes: u64,
    pub write_ms: u64,
}

/// Parses the `stat` file's text; `None` when it has fewer than the eight classic fields.
pub fn parse(text: &str) -> Option<BlockStat> {
    let fields: Vec<u64> = text
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    if fields.len() < 8 {
        return None;
    }
    Some(BlockStat {
        read_ios: fields[0],
        read_bytes: fields[2].saturating_mul(512),
        read_ms: fields[3],
        write_ios: fields[4],
        write_bytes: fields[6].saturating_mul(512),
        write_ms: fields[7],
    })
}

/// The counters of the device node at `device` (e.g. `/dev/loop3`), from `sys_block` (normally
/// `/sys/block`).
pub fn read(sys_block: &Path, device: &Path) -> Option<BlockStat> {
    let name = device.file_name()?;
    parse(&std::fs::read_to_string(sys_block.join(name).join("stat")).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_from_the_kernels_stat_line() {
        // Seventeen fields as kernel 6.x writes them.
        let line = "    1520        0    96264      403     2048        3   262144     1210        0     1700     1613        0        0        0        0       12        4\n";
        assert_eq!(
            parse(line),
            Some(BlockStat {
                read_ios: 1520,
                read_bytes: 96264 * 512,
                read_ms: 403,
                write_ios: 2048,
                write_bytes: 262144 * 512,
                write_ms: 1210,
            })
        );
        assert_eq!(parse("1 2 3"), None);
        assert_eq!(parse("1 2 3 4 5 6 7 x"), None);
    }

    #[test]
    fn a_device_without_stat_has_no_counters() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("loop9")).unwrap();
        std::fs::write(dir.path().join("loop9/stat"), "1 0 8 1 2 0 16 3\n").unwrap();
        assert_eq!(
            read(dir.path(), Path::new("/dev/loop9")).map(|s| s.write_bytes),
            Some(16 * 512)
        );
        assert_eq!(read(dir.path(), Path::new("/dev/loop8")), None);
    }
}
