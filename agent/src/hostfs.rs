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
        // No create: the file must be the kernel's. Truncate, as `echo value > file` does: sysfs
        // and procfs ignore it, and a plain file (a host tree copy) then holds just the value.
        let mut file = fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(self.full_path(path))
            .map_err(write_error)?;
        file.write_all(format!("{value}\n").as_bytes())
            .map_err(write_error)
    }

    fn replace_file(&self, path: &str, content: &str) -> Result<(), HostFsError> {
        write_allowlist::check(path)?;
        let target = self.full_path(path);
        let write_error = |source| HostFsError::Write {
            path: path.to_owned(),
            value: format!("({} bytes)", content.len()),
            source,
        };
        let dir = target
            .parent()
            .ok_or_else(|| write_error(io::Error::other("no parent directory")))?;
        fs::create_dir_all(dir).map_err(write_error)?;
        let mut temporary = tempfile::NamedTempFile::new_in(dir).map_err(write_error)?;
        temporary
            .write_all(content.as_bytes())
            .map_err(write_error)?;
        temporary.as_file().sync_all().map_err(write_error)?;
        temporary
            .persist(&target)
            .map_err(|e| write_error(e.error))?;
        // The rename is durable only once the directory entry is.
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(write_error)
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

    fn exists(&self, path: &str) -> bool {
        self.full_path(path).exists()
    }
}
