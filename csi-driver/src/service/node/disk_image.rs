//! The Node service for `disk-image` volumes: their directory is bind-mounted at the staging path,
//! and the staging path at each target, read-only where asked. Nothing is attached and nothing is
//! formatted; kubelet gives the directory the pod's fsGroup (the CSIDriver's `fsGroupPolicy:
//! File`), so KubeVirt's unprivileged QEMU opens `disk.img` in it.

use super::{io_status, mount_status, mount_table, unmount_all};
use crate::backend::{Backend, VolumeRecord};
use crate::mount_options::MountOptions;
use crate::mounter;
use crate::mountinfo::{self, DirSource};
use crate::proto::*;
use crate::service::backend_status;
use crate::service::request::AccessType;
use nix::mount::MsFlags;
use std::path::{Path, PathBuf};
use tonic::Status;

/// The volume's directory and how its mounts are recognised.
pub(super) fn source(
    backend: &dyn Backend,
    record: &VolumeRecord,
) -> Result<(PathBuf, DirSource), Status> {
    let dir = backend.disk_image_dir(record).map_err(backend_status)?;
    let source = DirSource::of(&dir).ok_or_else(|| {
        Status::internal(format!(
            "the directory {} of volume {} cannot be looked at",
            dir.display(),
            record.id
        ))
    })?;
    Ok((dir, source))
}

fn refuse_block(access: &AccessType, record: &VolumeRecord) -> Result<(), Status> {
    if matches!(access, AccessType::Block) {
        return Err(Status::invalid_argument(format!(
            "volume {} is a disk-image volume (a directory holding disk.img); it has no Block access",
            record.id
        )));
    }
    Ok(())
}

fn read_only_options(read_only: bool) -> MountOptions {
    let mut options = MountOptions::default();
    if read_only {
        options.flags |= MsFlags::MS_RDONLY;
    }
    options
}

pub(super) fn stage(
    backend: &dyn Backend,
    record: &VolumeRecord,
    staging: &Path,
    access: &AccessType,
    read_only: bool,
) -> Result<NodeStageVolumeResponse, Status> {
    refuse_block(access, record)?;
    let (dir, source) = self::source(backend, record)?;
    std::fs::create_dir_all(staging).map_err(io_status("creating", staging))?;
    let table = mount_table()?;
    if let Some(entry) = mountinfo::mounted_at(&table, staging) {
        if source.shows(entry) && entry.read_only() == read_only {
            return Ok(NodeStageVolumeResponse {});
        }
        return Err(Status::already_exists(format!(
            "{} already has {} mounted; it was staged with another volume or read-only setting",
            staging.display(),
            entry.source
        )));
    }
    mounter::bind(&dir, staging, &read_only_options(read_only)).map_err(mount_status)?;
    tracing::info!(volume = %record.id, dir = %dir.display(), staging = %staging.display(), read_only, "staged disk-image directory");
    Ok(NodeStageVolumeResponse {})
}

pub(super) fn unstage(
    backend: &dyn Backend,
    record: &VolumeRecord,
    staging: &Path,
) -> Result<NodeUnstageVolumeResponse, Status> {
    let Ok((_, source)) = self::source(backend, record) else {
        return Ok(NodeUnstageVolumeResponse {});
    };
    let table = mount_table()?;
    let elsewhere: Vec<String> = table
        .iter()
        .filter(|e| source.shows(e) && e.mount_point != staging)
        .map(|e| e.mount_point.display().to_string())
        .collect();
    if !elsewhere.is_empty() {
        return Err(Status::unavailable(format!(
            "volume {} is still published at {}; unpublish it first, then retry",
            record.id,
            elsewhere.join(", ")
        )));
    }
    unmount_all(staging, |entry| source.shows(entry))?;
    Ok(NodeUnstageVolumeResponse {})
}

/// What NodePublishVolume asks for, once its arguments are checked.
pub(super) struct Publish<'a> {
    pub staging: &'a Path,
    pub target: &'a Path,
    pub access: &'a AccessType,
    pub read_only: bool,
    pub single_writer: bool,
}

pub(super) fn publish(
    backend: &dyn Backend,
    record: &VolumeRecord,
    request: Publish<'_>,
) -> Result<NodePublishVolumeResponse, Status> {
    let Publish {
        staging,
        target,
        access,
        read_only,
        single_writer,
    } = request;
    refuse_block(access, record)?;
    let (_, source) = self::source(backend, record)?;
    let table = mount_table()?;
    let staged = mountinfo::mounted_at(&table, staging).is_some_and(|e| source.shows(e));
    if !staged {
        return Err(Status::failed_precondition(format!(
            "volume {} is not mounted at staging path {}; call NodeStageVolume first",
            record.id,
            staging.display()
        )));
    }
    if single_writer
        && let Some(entry) = table
            .iter()
            .find(|e| source.shows(e) && e.mount_point != staging && e.mount_point != target)
    {
        return Err(Status::failed_precondition(format!(
            "volume {} is single-writer (ReadWriteOncePod) and already published at {}",
            record.id,
            entry.mount_point.display()
        )));
    }
    if let Some(entry) = mountinfo::mounted_at(&table, target) {
        if source.shows(entry) && entry.read_only() == read_only {
            return Ok(NodePublishVolumeResponse {});
        }
        return Err(Status::already_exists(format!(
            "{} is already published with another volume or read-only setting",
            target.display()
        )));
    }
    std::fs::create_dir_all(target).map_err(io_status("creating", target))?;
    mounter::bind(staging, target, &read_only_options(read_only)).map_err(mount_status)?;
    Ok(NodePublishVolumeResponse {})
}

/// Usage of the directory against its limit, and whether `path` shows it.
pub(super) fn stats(
    backend: &dyn Backend,
    record: &VolumeRecord,
    path: &Path,
) -> Result<NodeGetVolumeStatsResponse, Status> {
    let (_, source) = self::source(backend, record)?;
    let table = mount_table()?;
    let mut problem = backend.abnormal(record);
    if problem.is_none()
        && !table
            .iter()
            .any(|e| e.mount_point == path && source.shows(e))
    {
        problem = Some(format!(
            "volume {} is not mounted at {}",
            record.id,
            path.display()
        ));
    }
    let usage = backend.disk_image_usage(record).map_err(backend_status)?;
    let total = usage.limit_bytes.max(record.capacity_bytes);
    Ok(NodeGetVolumeStatsResponse {
        usage: vec![VolumeUsage {
            available: total.saturating_sub(usage.used_bytes) as i64,
            total: total as i64,
            used: usage.used_bytes as i64,
            unit: volume_usage::Unit::Bytes as i32,
        }],
        volume_condition: Some(VolumeCondition {
            abnormal: problem.is_some(),
            message: problem.unwrap_or_else(|| "healthy".into()),
        }),
    })
}
