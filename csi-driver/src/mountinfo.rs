//! Reading `/proc/self/mountinfo`: the kernel's own answer to "what is mounted where", which survives
//! a restart of the driver.

use std::path::{Path, PathBuf};

/// One line of mountinfo (see proc_pid_mountinfo(5)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub major: u32,
    pub minor: u32,
    /// The path inside the source filesystem that is mounted (for a bind mount of a device node,
    /// the node's path inside devtmpfs, such as `/loop3`).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub mount_options: Vec<String>,
    pub fs_type: String,
    pub source: String,
}

impl MountEntry {
    pub fn read_only(&self) -> bool {
        self.mount_options.iter().any(|o| o == "ro")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MountInfoError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("malformed mountinfo line {0:?}")]
    Malformed(String),
}

/// The mount table of this process's mount namespace.
pub fn read() -> Result<Vec<MountEntry>, MountInfoError> {
    read_from(Path::new("/proc/self/mountinfo"))
}

pub fn read_from(path: &Path) -> Result<Vec<MountEntry>, MountInfoError> {
    let text = std::fs::read_to_string(path).map_err(|source| MountInfoError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text)
}

pub fn parse(text: &str) -> Result<Vec<MountEntry>, MountInfoError> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_line)
        .collect()
}

/// The last mount whose mount point is `path`: the one a path lookup sees.
pub fn mounted_at<'a>(table: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    table.iter().rev().find(|entry| entry.mount_point == path)
}

fn parse_line(line: &str) -> Result<MountEntry, MountInfoError> {
    let malformed = || MountInfoError::Malformed(line.to_owned());
    let (before, after) = line.split_once(" - ").ok_or_else(malformed)?;
    let fields: Vec<&str> = before.split(' ').collect();
    let tail: Vec<&str> = after.split(' ').collect();
    if fields.len() < 6 || tail.len() < 2 {
        return Err(malformed());
    }
    let (major, minor) = fields[2].split_once(':').ok_or_else(malformed)?;
    Ok(MountEntry {
        major: major.parse().map_err(|_| malformed())?,
        minor: minor.parse().map_err(|_| malformed())?,
        root: PathBuf::from(unescape(fields[3])),
        mount_point: PathBuf::from(unescape(fields[4])),
        mount_options: fields[5].split(',').map(str::to_owned).collect(),
        fs_type: tail[0].to_owned(),
        source: unescape(tail[1]),
    })
}

/// Undoes the kernel's octal escaping of space, tab, newline and backslash. Only `\000` to `\377`
/// name a byte; anything else after a backslash is kept as it is.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).filter(|d| {
            bytes[i] == b'\\'
                && (b'0'..=b'3').contains(&d[0])
                && d[1..].iter().all(|c| (b'0'..=b'7').contains(c))
        });
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A directory as its bind mounts show: mounts whose root has the directory's name, and whose
/// mount point is the directory itself (same device and inode). A pool's volume directories have
/// unique names, so the cheap name check leaves only their own mounts to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirSource {
    dev: u64,
    ino: u64,
    name: std::ffi::OsString,
}

impl DirSource {
    /// `None` when `dir` cannot be looked at (it is gone).
    pub fn of(dir: &Path) -> Option<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(dir).ok()?;
        Some(Self {
            dev: meta.dev(),
            ino: meta.ino(),
            name: dir.file_name()?.to_owned(),
        })
    }

    /// Whether `entry` is a mount of this directory.
    pub fn shows(&self, entry: &MountEntry) -> bool {
        use std::os::unix::fs::MetadataExt;
        entry.root.file_name() == Some(self.name.as_os_str())
            && std::fs::metadata(&entry.mount_point)
                .is_ok_and(|m| (m.dev(), m.ino()) == (self.dev, self.ino))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
35 22 7:3 / /var/lib/kubelet/staging/pv\\0401 rw,noatime shared:20 - xfs /dev/loop3 rw,attr2
36 22 0:5 /loop3 /var/lib/kubelet/publish/pod1 ro,nosuid master:2 - devtmpfs udev rw,size=100k
37 22 7:3 / /var/lib/kubelet/staging/pv\\0401 rw shared:21 - xfs /dev/loop3 rw
";

    #[test]
    fn parses_fields_and_escapes() {
        let table = parse(SAMPLE).unwrap();
        assert_eq!(table.len(), 4);
        let staged = &table[1];
        assert_eq!((staged.major, staged.minor), (7, 3));
        assert_eq!(
            staged.mount_point,
            Path::new("/var/lib/kubelet/staging/pv 1")
        );
        assert_eq!(staged.fs_type, "xfs");
        assert_eq!(staged.source, "/dev/loop3");
        assert!(!staged.read_only());
        let bound = &table[2];
        assert_eq!(bound.root, Path::new("/loop3"));
        assert_eq!(bound.fs_type, "devtmpfs");
        assert!(bound.read_only());
    }

    #[test]
    fn the_topmost_mount_wins() {
        let table = parse(SAMPLE).unwrap();
        let top = mounted_at(&table, Path::new("/var/lib/kubelet/staging/pv 1")).unwrap();
        assert_eq!(top.mount_options, vec!["rw".to_owned()]);
        assert!(mounted_at(&table, Path::new("/nope")).is_none());
    }

    #[test]
    fn optional_fields_may_be_absent_or_many() {
        let line = "40 22 0:50 / /mnt rw - tmpfs tmpfs rw\n41 22 0:51 / /m2 rw shared:3 master:4 propagate_from:5 - tmpfs none rw";
        let table = parse(line).unwrap();
        assert_eq!(table[0].mount_point, Path::new("/mnt"));
        assert_eq!(table[1].source, "none");
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert!(parse("garbage").is_err());
        assert!(parse("1 2 x / / rw - ext4 /dev/x rw").is_err());
        assert!(parse("1 2 3:4 / / - ext4").is_err());
    }

    #[test]
    fn escapes_beyond_a_byte_stay_as_they_are() {
        // Found by the `mountinfo` fuzz target: `\\611` overflowed the byte it was decoded into.
        let line = "41 22 0:51 / /m2\\611tab\\13;slash rw - tmpfs none rw";
        let table = parse(line).unwrap();
        assert_eq!(table[0].mount_point, Path::new("/m2\\611tab\\13;slash"));
        let table = parse("1 1 0:1 / /a\\777\\377\\400 rw - tmpfs s\\134 rw").unwrap();
        assert_eq!(
            table[0].mount_point.as_os_str().as_encoded_bytes(),
            "/a\\777\u{FFFD}\\400".as_bytes()
        );
        assert_eq!(table[0].source, "s\\");
    }

    #[test]
    fn reads_the_live_table() {
        let table = read().unwrap();
        assert!(mounted_at(&table, Path::new("/")).is_some());
    }
}
