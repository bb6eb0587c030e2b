//! Filesystems on volumes: probing what a device holds and creating ext4 or xfs on an empty one.

use crate::tools::{self, ToolError};
use std::path::Path;

/// Filesystems the driver creates and mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    Ext4,
    Xfs,
}

impl FsType {
    /// Parses a CSI `fs_type`; empty means the default, ext4.
    pub fn parse(name: &str) -> Result<Self, FsError> {
        match name {
            "" | "ext4" => Ok(Self::Ext4),
            "xfs" => Ok(Self::Xfs),
            other => Err(FsError::Unsupported(crate::ids::truncate_for_message(
                other,
            ))),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Ext4 => "ext4",
            Self::Xfs => "xfs",
        }
    }
}

/// What a device holds, according to blkid's low-level probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    Empty,
    Filesystem(String),
    /// A partition table, LVM member, RAID member or anything else that is not ours to format.
    Other(String),
}

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("filesystem type {0:?} is not supported; use ext4 or xfs")]
    Unsupported(String),
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("cannot read {device}: {source}")]
    Unreadable {
        device: std::path::PathBuf,
        source: std::io::Error,
    },
}

/// Probes `device` with `blkid -p`, which reads the device itself rather than a cache. blkid also
/// exits with 2 when it cannot read the device, so the device is read first and any complaint on
/// stderr counts as an error: "empty" must never be a guess, since it leads to mkfs.
pub fn probe(device: &Path) -> Result<Content, FsError> {
    let mut head = [0u8; 4096];
    std::fs::File::open(device)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
        .map_err(|source| FsError::Unreadable {
            device: device.to_owned(),
            source,
        })?;
    let output = tools::run_raw(
        "blkid",
        [
            Path::new("-p"),
            Path::new("-o"),
            Path::new("export"),
            device,
        ],
    )?;
    match output.status.code() {
        Some(0) => Ok(parse_blkid_export(&String::from_utf8_lossy(&output.stdout))),
        // blkid exits with 2 when it finds no signature at all (and silently so).
        Some(2) if output.stderr.is_empty() => Ok(Content::Empty),
        _ => Err(tools::failure("blkid", &output).into()),
    }
}

fn parse_blkid_export(text: &str) -> Content {
    let value = |key: &str| {
        text.lines()
            .find_map(|line| {
                line.strip_prefix(key)
                    .and_then(|rest| rest.strip_prefix('='))
            })
            .map(str::to_owned)
    };
    match (value("TYPE"), value("USAGE"), value("PTTYPE")) {
        (Some(fs), Some(usage), _) if usage == "filesystem" => Content::Filesystem(fs),
        (Some(other), _, _) => Content::Other(other),
        (None, _, Some(table)) => Content::Other(format!("{table} partition table")),
        (None, _, None) => Content::Empty,
    }
}

/// Creates a filesystem on an empty device. Discard is off because on a preallocated volume file a
/// discard would punch holes and silently thin-provision it.
pub fn make(device: &Path, fs: FsType) -> Result<(), FsError> {
    let device = device.as_os_str();
    match fs {
        FsType::Ext4 => tools::run(
            "mkfs.ext4",
            [
                "-q".as_ref(),
                "-E".as_ref(),
                "nodiscard,lazy_itable_init=1,lazy_journal_init=1".as_ref(),
                device,
            ],
        )?,
        // Without -f, mkfs.xfs refuses a device that holds any signature: a second guard against data loss.
        FsType::Xfs => tools::run("mkfs.xfs", ["-q".as_ref(), "-K".as_ref(), device])?,
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fs_types() {
        assert_eq!(FsType::parse("").unwrap(), FsType::Ext4);
        assert_eq!(FsType::parse("xfs").unwrap(), FsType::Xfs);
        assert!(matches!(
            FsType::parse("ntfs"),
            Err(FsError::Unsupported(_))
        ));
    }

    #[test]
    fn blkid_export_output() {
        assert_eq!(
            parse_blkid_export(
                "DEVNAME=/dev/loop0\nUUID=1\nVERSION=1.0\nTYPE=ext4\nUSAGE=filesystem\n"
            ),
            Content::Filesystem("ext4".into())
        );
        assert_eq!(
            parse_blkid_export("DEVNAME=/dev/loop0\nTYPE=LVM2_member\nUSAGE=raid\n"),
            Content::Other("LVM2_member".into())
        );
        assert_eq!(
            parse_blkid_export("DEVNAME=/dev/loop0\nPTUUID=x\nPTTYPE=gpt\n"),
            Content::Other("gpt partition table".into())
        );
        assert_eq!(parse_blkid_export("DEVNAME=/dev/loop0\n"), Content::Empty);
    }
}
