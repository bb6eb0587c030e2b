//! The host's filesystem as the agent sees it: reads, writes and listings of paths relative to the
//! host root (`/` on the node, `/host` in the DaemonSet, a temporary tree in tests).

use crate::write_allowlist::{self, WriteAllowlistError};
use nix::errno::Errno;
use std::fs;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum HostFsError {
    #[error("{path}: not present on this host")]
    NotFound { path: String },
    #[error("reading {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("writing {value:?} to {path}: {source}")]
    Write {
        path: String,
        value: String,
        source: io::Error,
    },
    #[error(transparent)]
    NotAllowed(#[from] WriteAllowlistError),
}

impl HostFsError {
    /// The kernel refused the value itself (EIO or EPERM, as for managed IRQs), as opposed to the
    /// agent lacking access or the file missing.
    pub fn refused_by_kernel(&self) -> bool {
        match self {
            HostFsError::Write { source, .. } => matches!(
                source.raw_os_error().map(Errno::from_raw),
                Some(Errno::EIO | Errno::EPERM)
            ),
            _ => false,
        }
    }
}

/// Paths are relative to the host root and use `/` separators.
pub trait HostFs: Send + Sync {
    fn read(&self, path: &str) -> Result<String, HostFsError>;
    /// Writes a value into an existing kernel file (sysfs or procfs semantics: one write call).
    fn write(&self, path: &str, value: &str) -> Result<(), HostFsError>;
    /// Replaces a regular file atomically (temporary file, fsync, rename), creating its directory.
    fn replace_file(&self, path: &str, content: &str) -> Result<(), HostFsError>;
    fn remove_file(&self, path: &str) -> Result<(), HostFsError>;
    /// Entry names of a directory, sorted; empty when the directory does not exist.
    fn list(&self, dir: &str) -> Vec<String>;
    fn exists(&self, path: &str) -> bool;
    /// When the file was last written; `None` when it is absent.
    fn modified(&self, path: &str) -> Option<std::time::SystemTime>;

    /// Calls `line` for each line of a file, without holding it whole (/proc/interrupts of a large
    /// host runs to megabytes).
    fn for_each_line(&self, path: &str, line: &mut dyn FnMut(&str)) -> Result<(), HostFsError> {
        self.read(path)?.lines().for_each(line);
        Ok(())
    }

    /// The file's content without surrounding whitespace, or `None` when absent or unreadable.
    fn read_trimmed(&self, path: &str) -> Option<String> {
        self.read(path).ok().map(|s| s.trim().to_owned())
    }
}

/// Whether `path` is a kernel attribute (sysfs, procfs, cgroupfs, debugfs, securityfs) rather than
/// a file on a disk; unknown counts as the kernel's, whose files are written in place.
fn on_kernel_filesystem(path: &Path) -> bool {
    use nix::sys::statfs::{
        CGROUP_SUPER_MAGIC, CGROUP2_SUPER_MAGIC, DEBUGFS_MAGIC, PROC_SUPER_MAGIC, SECURITYFS_MAGIC,
        SYSFS_MAGIC, statfs,
    };
    statfs(path).map_or(true, |stat| {
        [
            SYSFS_MAGIC,
            PROC_SUPER_MAGIC,
            CGROUP_SUPER_MAGIC,
            CGROUP2_SUPER_MAGIC,
            DEBUGFS_MAGIC,
            SECURITYFS_MAGIC,
        ]
        .contains(&stat.filesystem_type())
    })
}

/// Replaces `target` with `content` through a sibling temporary file and a rename. The temporary
/// file's name is fixed (`.<name>.fastvirt-new`): one left by a killed agent is taken up by the
/// next write of the same file (restore and apply both rewrite every file a kill interrupted), so
/// none is left behind for good. `durable`: fsync the file and the directory entry.
fn replace_by_rename(
    target: &Path,
    content: &[u8],
    permissions: Option<fs::Permissions>,
    durable: bool,
) -> io::Result<()> {
    let dir = target
        .parent()
        .ok_or_else(|| io::Error::other("no parent directory"))?;
    let name = target
        .file_name()
        .ok_or_else(|| io::Error::other("no file name"))?;
    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(name);
    temporary_name.push(".fastvirt-new");
    let temporary = dir.join(temporary_name);
    let mut file = fs::File::create(&temporary)?;
    file.write_all(content)?;
    if let Some(permissions) = permissions {
        file.set_permissions(permissions)?;
    }
    if durable {
        file.sync_all()?;
    }
    drop(file);
    fs::rename(&temporary, target)?;
    if durable {
        // The rename is durable only once the directory entry is.
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The real filesystem below a root directory.
#[derive(Debug, Clone)]
pub struct RealHostFs {
    root: PathBuf,
}

impl RealHostFs {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn full_path(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }
}

fn read_error(path: &str, source: io::Error) -> HostFsError {
    if source.kind() == io::ErrorKind::NotFound {
        HostFsError::NotFound {
            path: path.to_owned(),
        }
    } else {
        HostFsError::Read {
            path: path.to_owned(),
            source,
        }
    }
}

impl HostFs for RealHostFs {
    fn read(&self, path: &str) -> Result<String, HostFsError> {
        // Not fs::read_to_string: its size probe costs two more syscalls per file (statx and
        // lseek), and sysfs and procfs report sizes that mean nothing anyway.
        let mut file = fs::File::open(self.full_path(path)).map_err(|e| read_error(path, e))?;
        let mut bytes = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match io::Read::read(&mut file, &mut chunk) {
                Ok(0) => break,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(read_error(path, e)),
            }
        }
        String::from_utf8(bytes)
            .map_err(|e| read_error(path, io::Error::new(io::ErrorKind::InvalidData, e)))
    }

    fn for_each_line(&self, path: &str, line: &mut dyn FnMut(&str)) -> Result<(), HostFsError> {
        let file = fs::File::open(self.full_path(path)).map_err(|e| read_error(path, e))?;
        let mut reader = io::BufReader::new(file);
        let mut buffer = String::new();
        loop {
            buffer.clear();
            match reader.read_line(&mut buffer) {
                Ok(0) => return Ok(()),
                Ok(_) => line(buffer.trim_end_matches('\n')),
                Err(e) => return Err(read_error(path, e)),
            }
        }
    }

    fn write(&self, path: &str, value: &str) -> Result<(), HostFsError> {
        write_allowlist::check(path)?;
        let write_error = |source| HostFsError::Write {
            path: path.to_owned(),
            value: value.to_owned(),
            source,
        };
        let target = self.full_path(path);
        // No create: the file must be the kernel's.
        let permissions = fs::metadata(&target).map_err(write_error)?.permissions();
        let line = format!("{value}\n");
        if on_kernel_filesystem(&target) {
            // One write(2), which sysfs and procfs take whole or refuse; they ignore the truncate.
            let mut file = fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&target)
                .map_err(write_error)?;
            return file.write_all(line.as_bytes()).map_err(write_error);
        }
        // A host tree copied onto a disk (a dry run's, a test's): replaced by a rename, so that a
        // kill mid-write leaves the old value or the new one, as the kernel's files do, never an
        // empty file. No fsync: the tree is a model of the kernel's state, not data to keep.
        replace_by_rename(&target, line.as_bytes(), Some(permissions), false).map_err(write_error)
    }

    fn replace_file(&self, path: &str, content: &str) -> Result<(), HostFsError> {
        write_allowlist::check(path)?;
        let target = self.full_path(path);
        let write_error = |source| HostFsError::Write {
            path: path.to_owned(),
            value: format!("({} bytes)", content.len()),
            source,
        };
        if let Some(dir) = target.parent() {
            fs::create_dir_all(dir).map_err(write_error)?;
        }
        replace_by_rename(&target, content.as_bytes(), None, true).map_err(write_error)
    }

    fn remove_file(&self, path: &str) -> Result<(), HostFsError> {
        write_allowlist::check(path)?;
        match fs::remove_file(self.full_path(path)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(HostFsError::Write {
                path: path.to_owned(),
                value: "(remove)".to_owned(),
                source: e,
            }),
            _ => Ok(()),
        }
    }

    fn list(&self, dir: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.full_path(dir))
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn modified(&self, path: &str) -> Option<std::time::SystemTime> {
        fs::metadata(self.full_path(path)).ok()?.modified().ok()
    }

    fn exists(&self, path: &str) -> bool {
        self.full_path(path).exists()
    }
}
