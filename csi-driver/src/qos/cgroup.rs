//! A volume's limits in a cgroup's throttle files: cgroup v1 blkio (`blkio.throttle.*_device`,
//! one file per limit, `MAJ:MIN VALUE`, 0 removes) and cgroup v2 io (`io.max`, one line per device,
//! `max` removes). Rendering and parsing are pure; [`ensure`] reads first and writes only what
//! differs, so a pass over unchanged volumes writes nothing.

use super::limits::{LimitKind, QosLimits};
use std::io;
use std::path::Path;

/// Which cgroup interface a directory belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CgroupVersion {
    /// blkio throttling: limits apply to the cgroup's own tasks only (the v1 hierarchy is flat for
    /// blk-throttle), so every cgroup of a pod gets them.
    V1,
    /// io.max: limits apply to the whole subtree, so the pod's cgroup gets them once.
    V2,
}

/// A block device's number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceNumber {
    pub major: u64,
    pub minor: u64,
}

impl DeviceNumber {
    pub fn from_rdev(rdev: u64) -> Self {
        Self {
            major: nix::sys::stat::major(rdev),
            minor: nix::sys::stat::minor(rdev),
        }
    }
}

impl std::fmt::Display for DeviceNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// The v1 file of a limit.
pub fn v1_file(kind: LimitKind) -> &'static str {
    match kind {
        LimitKind::ReadIops => "blkio.throttle.read_iops_device",
        LimitKind::WriteIops => "blkio.throttle.write_iops_device",
        LimitKind::ReadBps => "blkio.throttle.read_bps_device",
        LimitKind::WriteBps => "blkio.throttle.write_bps_device",
    }
}

/// The v2 file.
pub const V2_FILE: &str = "io.max";

fn v2_key(kind: LimitKind) -> &'static str {
    match kind {
        LimitKind::ReadIops => "riops",
        LimitKind::WriteIops => "wiops",
        LimitKind::ReadBps => "rbps",
        LimitKind::WriteBps => "wbps",
    }
}

/// What to write to a v1 file: the limit, or 0 to remove it.
pub fn v1_line(device: DeviceNumber, value: Option<u64>) -> String {
    format!("{device} {}", value.unwrap_or(0))
}

/// What to write to `io.max`: every key, `max` where there is no limit.
pub fn v2_line(device: DeviceNumber, limits: &QosLimits) -> String {
    let mut line = device.to_string();
    for kind in [
        LimitKind::ReadBps,
        LimitKind::WriteBps,
        LimitKind::ReadIops,
        LimitKind::WriteIops,
    ] {
        let value = limits
            .get(kind)
            .map_or_else(|| "max".to_owned(), |v| v.to_string());
        line.push_str(&format!(" {}={value}", v2_key(kind)));
    }
    line
}

/// The device's limit in a v1 file's content (`MAJ:MIN VALUE` lines; no line is no limit).
pub fn parse_v1(text: &str, device: DeviceNumber) -> Option<u64> {
    let wanted = device.to_string();
    text.lines().find_map(|line| {
        let (dev, value) = line.trim().split_once(' ')?;
        (dev == wanted)
            .then(|| value.trim().parse().ok())
            .flatten()
            .filter(|v| *v > 0)
    })
}

/// The device's limits in `io.max` content (`MAJ:MIN key=value...` lines, keys the kernel does
/// not print are unlimited).
pub fn parse_v2(text: &str, device: DeviceNumber) -> QosLimits {
    let wanted = device.to_string();
    let mut limits = QosLimits::default();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        if fields.next() != Some(wanted.as_str()) {
            continue;
        }
        for field in fields {
            let Some((key, value)) = field.split_once('=') else {
                continue;
            };
            if let Some(kind) = LimitKind::ALL.into_iter().find(|k| v2_key(*k) == key) {
                limits.set(kind, value.parse().ok());
            }
        }
    }
    limits
}

/// The device's limits in force in the cgroup `dir`.
pub fn read(dir: &Path, version: CgroupVersion, device: DeviceNumber) -> io::Result<QosLimits> {
    match version {
        CgroupVersion::V1 => {
            let mut limits = QosLimits::default();
            for kind in LimitKind::ALL {
                let text = std::fs::read_to_string(dir.join(v1_file(kind)))?;
                limits.set(kind, parse_v1(&text, device));
            }
            Ok(limits)
        }
        CgroupVersion::V2 => Ok(parse_v2(
            &std::fs::read_to_string(dir.join(V2_FILE))?,
            device,
        )),
    }
}

/// Makes `limits` the device's limits in `dir`; `Ok(true)` when something had to be written.
pub fn ensure(
    dir: &Path,
    version: CgroupVersion,
    device: DeviceNumber,
    limits: &QosLimits,
) -> io::Result<bool> {
    let current = read(dir, version, device)?;
    if current == *limits {
        return Ok(false);
    }
    match version {
        CgroupVersion::V1 => {
            for kind in LimitKind::ALL {
                if current.get(kind) != limits.get(kind) {
                    std::fs::write(dir.join(v1_file(kind)), v1_line(device, limits.get(kind)))?;
                }
            }
        }
        CgroupVersion::V2 => std::fs::write(dir.join(V2_FILE), v2_line(device, limits))?,
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOP3: DeviceNumber = DeviceNumber { major: 7, minor: 3 };

    fn limits() -> QosLimits {
        QosLimits {
            read_iops: Some(500),
            write_bps: Some(1 << 20),
            ..QosLimits::default()
        }
    }

    #[test]
    fn v1_lines_set_and_remove() {
        assert_eq!(v1_line(LOOP3, Some(500)), "7:3 500");
        assert_eq!(v1_line(LOOP3, None), "7:3 0");
        assert_eq!(parse_v1("7:1 10\n7:3 500\n", LOOP3), Some(500));
        assert_eq!(parse_v1("7:1 10\n", LOOP3), None);
        assert_eq!(parse_v1("7:30 10\n", LOOP3), None);
        assert_eq!(parse_v1("", LOOP3), None);
    }

    #[test]
    fn v2_line_names_every_key_and_parses_back() {
        let line = v2_line(LOOP3, &limits());
        assert_eq!(line, "7:3 rbps=max wbps=1048576 riops=500 wiops=max");
        assert_eq!(parse_v2(&line, LOOP3), limits());
        // What the kernel prints: only the keys that have a limit, one line per device.
        assert_eq!(
            parse_v2(
                "8:0 rbps=1 wbps=max riops=max wiops=max\n7:3 riops=500 wbps=1048576\n",
                LOOP3
            ),
            limits()
        );
        assert_eq!(parse_v2("8:0 riops=5\n", LOOP3), QosLimits::default());
        assert_eq!(
            v2_line(LOOP3, &QosLimits::default()),
            "7:3 rbps=max wbps=max riops=max wiops=max"
        );
    }

    /// A directory that behaves like a v1 blkio cgroup for files written whole (the kernel
    /// merges one device's line into the file; a test double replaces the content instead, which
    /// holds one device, the same).
    fn fake_v1() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for kind in LimitKind::ALL {
            std::fs::write(dir.path().join(v1_file(kind)), "").unwrap();
        }
        dir
    }

    #[test]
    fn ensure_writes_only_what_differs() {
        let dir = fake_v1();
        assert!(ensure(dir.path(), CgroupVersion::V1, LOOP3, &limits()).unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("blkio.throttle.read_iops_device")).unwrap(),
            "7:3 500"
        );
        assert_eq!(
            read(dir.path(), CgroupVersion::V1, LOOP3).unwrap(),
            limits()
        );
        assert!(!ensure(dir.path(), CgroupVersion::V1, LOOP3, &limits()).unwrap());
        assert!(ensure(dir.path(), CgroupVersion::V1, LOOP3, &QosLimits::default()).unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("blkio.throttle.write_bps_device")).unwrap(),
            "7:3 0"
        );

        let v2 = tempfile::tempdir().unwrap();
        std::fs::write(v2.path().join(V2_FILE), "").unwrap();
        assert!(ensure(v2.path(), CgroupVersion::V2, LOOP3, &limits()).unwrap());
        assert!(!ensure(v2.path(), CgroupVersion::V2, LOOP3, &limits()).unwrap());
        assert!(ensure(v2.path(), CgroupVersion::V2, LOOP3, &QosLimits::default()).unwrap());
        assert_eq!(
            std::fs::read_to_string(v2.path().join(V2_FILE)).unwrap(),
            "7:3 rbps=max wbps=max riops=max wiops=max"
        );
    }
}
