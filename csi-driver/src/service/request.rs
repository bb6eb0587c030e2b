//! Validation of the request fields the services share: capabilities, paths and parameters.

use crate::filesystem::FsType;
use crate::mount_options::MountOptions;
use crate::proto::VolumeCapability;
use crate::proto::volume_capability::AccessType as ProtoAccessType;
use crate::proto::volume_capability::access_mode::Mode as AccessMode;
use std::path::{Component, Path, PathBuf};
use tonic::Status;

/// How a volume is consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessType {
    Block,
    Mount { fs: FsType, options: MountOptions },
}

/// A validated volume capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    pub access: AccessType,
    /// The access mode only allows reading.
    pub reader_only: bool,
    /// SINGLE_NODE_SINGLE_WRITER (Kubernetes' ReadWriteOncePod): one published target at a time.
    pub single_writer: bool,
}

/// Parses a capability, refusing what this node-local driver cannot honour.
pub fn capability(cap: Option<&VolumeCapability>) -> Result<Capability, Status> {
    let cap = cap.ok_or_else(|| Status::invalid_argument("volume_capability is required"))?;
    let mode = cap
        .access_mode
        .as_ref()
        .ok_or_else(|| Status::invalid_argument("access_mode is required"))?;
    let reader_only = match AccessMode::try_from(mode.mode) {
        Ok(
            AccessMode::SingleNodeWriter
            | AccessMode::SingleNodeSingleWriter
            | AccessMode::SingleNodeMultiWriter,
        ) => false,
        // Kubernetes' ReadOnlyMany arrives as MULTI_NODE_READER_ONLY; the volume's topology keeps
        // every reader on the one node that holds it, so it is served like the single-node mode.
        Ok(AccessMode::SingleNodeReaderOnly | AccessMode::MultiNodeReaderOnly) => true,
        Ok(multi @ (AccessMode::MultiNodeSingleWriter | AccessMode::MultiNodeMultiWriter)) => {
            return Err(Status::invalid_argument(format!(
                "access mode {} is not supported: fastvirt file volumes are node-local, use ReadWriteOnce, ReadWriteOncePod or ReadOnlyMany",
                multi.as_str_name()
            )));
        }
        Ok(AccessMode::Unknown) | Err(_) => {
            return Err(Status::invalid_argument(format!(
                "access mode {} is not a known mode",
                mode.mode
            )));
        }
    };
    let single_writer = mode.mode == AccessMode::SingleNodeSingleWriter as i32;
    let access = match &cap.access_type {
        Some(ProtoAccessType::Block(_)) => AccessType::Block,
        Some(ProtoAccessType::Mount(mount)) => AccessType::Mount {
            fs: FsType::parse(&mount.fs_type)
                .map_err(|e| Status::invalid_argument(e.to_string()))?,
            options: MountOptions::parse(&mount.mount_flags)
                .map_err(|e| Status::invalid_argument(e.to_string()))?,
        },
        None => {
            return Err(Status::invalid_argument(
                "access_type (block or mount) is required",
            ));
        }
    };
    Ok(Capability {
        access,
        reader_only,
        single_writer,
    })
}

/// Gives a mount capability that names no filesystem the volume's default (its `fsType`
/// parameter, carried to the node in the volume context).
pub fn default_fs_type(cap: &mut VolumeCapability, default: Option<FsType>) {
    if let (Some(ProtoAccessType::Mount(mount)), Some(fs)) = (&mut cap.access_type, default)
        && mount.fs_type.is_empty()
    {
        mount.fs_type = fs.as_str().to_owned();
    }
}

/// The default filesystem a volume context names, if any.
pub fn context_fs_type(
    context: &std::collections::HashMap<String, String>,
) -> Result<Option<FsType>, Status> {
    context
        .get(super::parameters::PARAM_FS_TYPE)
        .map(|value| FsType::parse(value).map_err(|e| Status::invalid_argument(e.to_string())))
        .transpose()
}

/// Parses every capability of a request; at least one is required.
pub fn capabilities(caps: &[VolumeCapability]) -> Result<Vec<Capability>, Status> {
    if caps.is_empty() {
        return Err(Status::invalid_argument(
            "volume_capabilities must not be empty",
        ));
    }
    caps.iter().map(|c| capability(Some(c))).collect()
}

/// A required field: empty is INVALID_ARGUMENT.
///
/// Every RPC checks all of its fields' presence and shape first and only then looks anything up,
/// so a request that lacks a field is INVALID_ARGUMENT whether or not its volume exists (CSI spec,
/// "Error Scheme": argument errors come before NOT_FOUND).
pub fn required(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    Ok(())
}

/// A path field that must be absolute and free of `..`, NUL and absurd lengths.
pub fn absolute_path(field: &str, value: &str) -> Result<PathBuf, Status> {
    required(field, value)?;
    let path = Path::new(value);
    let shown = crate::ids::truncate_for_message(value);
    if value.len() > 4096 || value.contains('\0') {
        return Err(Status::invalid_argument(format!(
            "{field} {shown:?} is not a usable path"
        )));
    }
    if !path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(Status::invalid_argument(format!(
            "{field} {shown:?} must be an absolute path without '..'"
        )));
    }
    Ok(path.to_owned())
}

/// The `volume_path` of NodeGetVolumeStats and NodeExpandVolume, checked once the volume is
/// known to exist: a path that cannot hold it (relative, unusable) is where the volume is not,
/// so NOT_FOUND, as for a missing path. Presence is checked first, with the other fields.
pub fn path_of_volume(value: &str) -> Result<PathBuf, Status> {
    absolute_path("volume_path", value).map_err(|status| Status::not_found(status.message()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::volume_capability::{AccessMode as ProtoMode, BlockVolume, MountVolume};

    fn cap(mode: AccessMode, access: Option<ProtoAccessType>) -> VolumeCapability {
        VolumeCapability {
            access_type: access,
            access_mode: Some(ProtoMode { mode: mode as i32 }),
        }
    }

    #[test]
    fn single_node_modes_are_accepted() {
        let block = Some(ProtoAccessType::Block(BlockVolume {}));
        assert_eq!(
            capability(Some(&cap(AccessMode::SingleNodeWriter, block.clone())))
                .unwrap()
                .access,
            AccessType::Block
        );
        assert!(
            capability(Some(&cap(AccessMode::SingleNodeReaderOnly, block.clone())))
                .unwrap()
                .reader_only
        );
        let mount = Some(ProtoAccessType::Mount(MountVolume {
            fs_type: "xfs".into(),
            mount_flags: vec!["noatime".into()],
            volume_mount_group: String::new(),
        }));
        let parsed = capability(Some(&cap(AccessMode::SingleNodeMultiWriter, mount))).unwrap();
        assert!(matches!(
            parsed.access,
            AccessType::Mount {
                fs: FsType::Xfs,
                ..
            }
        ));
    }

    #[test]
    fn refusals_name_the_reason() {
        let block = Some(ProtoAccessType::Block(BlockVolume {}));
        let err =
            capability(Some(&cap(AccessMode::MultiNodeMultiWriter, block.clone()))).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("node-local"), "{}", err.message());
        assert_eq!(
            capability(None).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            capability(Some(&cap(AccessMode::SingleNodeWriter, None)))
                .unwrap_err()
                .code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            capability(Some(&cap(AccessMode::Unknown, block.clone())))
                .unwrap_err()
                .code(),
            tonic::Code::InvalidArgument
        );
        let bad_mode = VolumeCapability {
            access_type: block,
            access_mode: Some(ProtoMode { mode: 99 }),
        };
        assert_eq!(
            capability(Some(&bad_mode)).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
        let ntfs = Some(ProtoAccessType::Mount(MountVolume {
            fs_type: "ntfs".into(),
            ..Default::default()
        }));
        assert!(
            capability(Some(&cap(AccessMode::SingleNodeWriter, ntfs)))
                .unwrap_err()
                .message()
                .contains("ntfs")
        );
        assert!(capabilities(&[]).is_err());
    }

    #[test]
    fn paths() {
        assert_eq!(absolute_path("p", "/a/b").unwrap(), Path::new("/a/b"));
        for bad in ["", "a/b", "/a/../b", "/a\0b"] {
            assert_eq!(
                absolute_path("p", bad).unwrap_err().code(),
                tonic::Code::InvalidArgument,
                "{bad:?}"
            );
        }
        assert!(absolute_path("p", &format!("/{}", "x".repeat(10_000))).is_err());
    }
}
