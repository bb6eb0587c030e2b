//! The Node service: attaching volumes as loop devices, formatting and mounting them, and publishing
//! them to pods. Every RPC reads the kernel's state (sysfs, mountinfo) instead of remembering its
//! own, so a restarted driver picks up exactly where the last one stopped.

pub mod advertised;
mod disk_image;
mod expand;
mod stats;

use super::request::{self, AccessType, Capability};
use super::{Driver, backend_status, blocking, parse_volume_id};
use crate::backend::{AttachedDevice, VolumeLayout};
use crate::filesystem::{self, Content};
use crate::mount_options::MountOptions;
use crate::mounter::{self, MountError};
use crate::mountinfo::{self, MountEntry};
use crate::proto::node_server::Node;
use crate::proto::node_service_capability::{self, rpc};
use crate::proto::*;
use expand::expand;
use nix::mount::MsFlags;
use stats::volume_stats;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use tonic::{Request, Response, Status};

/// Stacked mounts on one target are unusual; this bounds the unmount loop if something keeps mounting.
const MAX_STACKED_MOUNTS: usize = 16;

#[derive(Debug, Clone)]
pub struct NodeService {
    driver: Driver,
}

impl NodeService {
    pub fn new(driver: Driver) -> Self {
        Self { driver }
    }
}

pub(super) fn mount_table() -> Result<Vec<MountEntry>, Status> {
    mountinfo::read().map_err(|e| Status::internal(e.to_string()))
}

fn mount_status(error: MountError) -> Status {
    match error {
        MountError::Busy { .. } => {
            Status::unavailable(format!("{error}; retry once it is released"))
        }
        other => Status::internal(other.to_string()),
    }
}

pub(super) fn io_status(context: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Status {
    let message = format!("{context} {}", path.display());
    move |e| Status::internal(format!("{message}: {e}"))
}

pub(super) fn is_device_mount(entry: &MountEntry, rdev: u64) -> bool {
    (u64::from(entry.major), u64::from(entry.minor))
        == (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev))
}

fn is_device_node(path: &Path, rdev: u64) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device() && m.rdev() == rdev)
}

fn with_read_only(options: &MountOptions, read_only: bool) -> MountOptions {
    let mut options = options.clone();
    if read_only {
        options.flags |= MsFlags::MS_RDONLY;
    }
    options
}

/// Makes sure the device holds the requested filesystem, creating it only on an empty device.
fn ensure_filesystem(device: &AttachedDevice, fs: filesystem::FsType) -> Result<(), Status> {
    let device_path = &device.path;
    match filesystem::probe(device_path).map_err(|e| Status::internal(e.to_string()))? {
        Content::Empty if device.read_only => Err(Status::failed_precondition(
            "the volume has no filesystem yet and is staged read-only, so none can be created; stage it once for writing first",
        )),
        Content::Empty => {
            let device = device_path;
            filesystem::make(device, fs).map_err(|e| Status::internal(e.to_string()))?;
            tracing::info!(device = %device.display(), fs = fs.as_str(), "created filesystem");
            Ok(())
        }
        Content::Filesystem(found) if found == fs.as_str() => Ok(()),
        Content::Filesystem(found) => Err(Status::failed_precondition(format!(
            "the volume holds a {found} filesystem but {} was requested; it is left untouched",
            fs.as_str()
        ))),
        Content::Other(found) => Err(Status::failed_precondition(format!(
            "the volume holds {found}, not a filesystem; refusing to format it"
        ))),
    }
}

fn stage_mount(
    device: &AttachedDevice,
    staging: &Path,
    fs: filesystem::FsType,
    options: &MountOptions,
) -> Result<(), Status> {
    std::fs::create_dir_all(staging).map_err(io_status("creating", staging))?;
    let table = mount_table()?;
    if let Some(entry) = mountinfo::mounted_at(&table, staging) {
        if is_device_mount(entry, device.rdev) && entry.fs_type == fs.as_str() {
            return Ok(());
        }
        return Err(Status::already_exists(format!(
            "{} already has {} from {} mounted; it was staged with another capability",
            staging.display(),
            entry.fs_type,
            entry.source
        )));
    }
    ensure_filesystem(device, fs)?;
    mounter::mount_device(&device.path, staging, fs.as_str(), options).map_err(mount_status)
}

fn stage(driver: &Driver, req: NodeStageVolumeRequest) -> Result<NodeStageVolumeResponse, Status> {
    request::required("volume_id", &req.volume_id)?;
    let staging = request::absolute_path("staging_target_path", &req.staging_target_path)?;
    let mut volume_capability = req.volume_capability.clone();
    if let Some(cap) = &mut volume_capability {
        request::default_fs_type(cap, request::context_fs_type(&req.volume_context)?);
    }
    let Capability {
        access,
        reader_only,
        ..
    } = request::capability(volume_capability.as_ref())?;
    let (_guard, id, backend, record) = driver.lock_volume(&req.volume_id)?;
    if record.layout == VolumeLayout::DiskImage {
        return disk_image::stage(backend.as_ref(), &record, &staging, &access, reader_only);
    }
    let was_attached = backend.attached(&id).map_err(backend_status)?.is_some();
    let device = backend
        .attach(&record, reader_only)
        .map_err(backend_status)?;
    let result = match &access {
        AccessType::Block => Ok(()),
        AccessType::Mount { fs, options } => stage_mount(
            &device,
            &staging,
            *fs,
            &with_read_only(options, reader_only),
        ),
    };
    if result.is_err() && !was_attached {
        // A final error means kubelet never calls NodeUnstageVolume: give the device back now.
        if let Err(error) =
            mount_table().and_then(|table| backend.detach(&id, &table).map_err(backend_status))
        {
            tracing::warn!(volume = %id, %error, "could not detach after a failed stage");
        }
    }
    result.map(|()| NodeStageVolumeResponse {})
}

fn unstage(
    driver: &Driver,
    req: NodeUnstageVolumeRequest,
) -> Result<NodeUnstageVolumeResponse, Status> {
    request::required("volume_id", &req.volume_id)?;
    let staging = request::absolute_path("staging_target_path", &req.staging_target_path)?;
    let (_guard, id, backend, record) = driver.lock_volume(&req.volume_id)?;
    if record.layout == VolumeLayout::DiskImage {
        return disk_image::unstage(backend.as_ref(), &record, &staging);
    }
    if let Some(device) = backend.attached(&id).map_err(backend_status)? {
        let table = mount_table()?;
        let elsewhere: Vec<String> = table
            .iter()
            .filter(|e| is_device_mount(e, device.rdev) && e.mount_point != staging)
            .map(|e| e.mount_point.display().to_string())
            .collect();
        if !elsewhere.is_empty() {
            return Err(Status::unavailable(format!(
                "volume {id} is still published at {}; unpublish it first, then retry",
                elsewhere.join(", ")
            )));
        }
        unmount_all(&staging, |entry| is_device_mount(entry, device.rdev))?;
        backend
            .detach(&id, &mount_table()?)
            .map_err(backend_status)?;
    }
    Ok(NodeUnstageVolumeResponse {})
}

/// Unmounts every mount stacked on `path` that `ours` accepts.
fn unmount_all(path: &Path, ours: impl Fn(&MountEntry) -> bool) -> Result<(), Status> {
    for _ in 0..MAX_STACKED_MOUNTS {
        let table = mount_table()?;
        match mountinfo::mounted_at(&table, path) {
            Some(entry) if ours(entry) => {
                mounter::unmount(path).map_err(mount_status)?;
            }
            _ => return Ok(()),
        }
    }
    Err(Status::internal(format!(
        "{} still has mounts after {MAX_STACKED_MOUNTS} unmounts",
        path.display()
    )))
}

fn publish(
    driver: &Driver,
    req: NodePublishVolumeRequest,
) -> Result<NodePublishVolumeResponse, Status> {
    request::required("volume_id", &req.volume_id)?;
    let target = request::absolute_path("target_path", &req.target_path)?;
    // Required: this driver offers STAGE_UNSTAGE_VOLUME, so publishing always follows a stage.
    let staging = request::absolute_path("staging_target_path", &req.staging_target_path)?;
    let Capability {
        access,
        reader_only,
        single_writer,
    } = request::capability(req.volume_capability.as_ref())?;
    let (_guard, id, backend, record) = driver.lock_volume(&req.volume_id)?;
    if record.layout == VolumeLayout::DiskImage {
        let mount_flags_read_only =
            matches!(&access, AccessType::Mount { options, .. } if options.read_only());
        let published = disk_image::publish(
            backend.as_ref(),
            &record,
            disk_image::Publish {
                staging: &staging,
                target: &target,
                access: &access,
                read_only: req.readonly || reader_only || mount_flags_read_only,
                single_writer,
            },
        )?;
        driver.qos.wake();
        return Ok(published);
    }
    let device = backend
        .attached(&id)
        .map_err(backend_status)?
        .ok_or_else(|| {
            Status::failed_precondition(format!(
                "volume {id} is not staged on this node; call NodeStageVolume first"
            ))
        })?;
    let mount_flags_read_only =
        matches!(&access, AccessType::Mount { options, .. } if options.read_only());
    let read_only = req.readonly || reader_only || mount_flags_read_only;
    let table = mount_table()?;
    let (source, options) = match &access {
        AccessType::Block => (device.path.clone(), MountOptions::default()),
        AccessType::Mount { options, .. } => {
            let staged = mountinfo::mounted_at(&table, &staging)
                .is_some_and(|e| is_device_mount(e, device.rdev));
            if !staged {
                return Err(Status::failed_precondition(format!(
                    "volume {id} is not mounted at staging path {}; call NodeStageVolume first",
                    staging.display()
                )));
            }
            (staging.clone(), options.clone())
        }
    };
    if single_writer {
        let elsewhere = table.iter().find(|e| {
            e.mount_point != target
                && e.mount_point != staging
                && (is_device_node(&e.mount_point, device.rdev)
                    || (is_device_mount(e, device.rdev) && !matches!(access, AccessType::Block)))
        });
        if let Some(entry) = elsewhere {
            return Err(Status::failed_precondition(format!(
                "volume {id} is single-writer (ReadWriteOncePod) and already published at {}",
                entry.mount_point.display()
            )));
        }
    }
    if let Some(entry) = mountinfo::mounted_at(&table, &target) {
        let same_volume = match access {
            AccessType::Block => is_device_node(&target, device.rdev),
            AccessType::Mount { .. } => is_device_mount(entry, device.rdev),
        };
        if same_volume && entry.read_only() == read_only {
            return Ok(NodePublishVolumeResponse {});
        }
        return Err(Status::already_exists(format!(
            "{} is already published with another volume or read-only setting",
            target.display()
        )));
    }
    match access {
        AccessType::Block => prepare_device_target(&target)?,
        AccessType::Mount { .. } => {
            std::fs::create_dir_all(&target).map_err(io_status("creating", &target))?
        }
    }
    mounter::bind(&source, &target, &with_read_only(&options, read_only)).map_err(mount_status)?;
    // The pod that gets the volume gets its I/O limits too, before its containers start.
    driver.qos.wake();
    Ok(NodePublishVolumeResponse {})
}

/// A block volume is published by bind-mounting the device node onto a regular file.
fn prepare_device_target(target: &Path) -> Result<(), Status> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(io_status("creating", parent))?;
    }
    match std::fs::symlink_metadata(target) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(Status::failed_precondition(format!(
            "{} exists and is not a regular file; a block volume needs a file to bind the device onto",
            target.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(target)
            .map(drop)
            .map_err(io_status("creating", target)),
        Err(e) => Err(io_status("inspecting", target)(e)),
    }
}

fn unpublish(
    driver: &Driver,
    req: NodeUnpublishVolumeRequest,
) -> Result<NodeUnpublishVolumeResponse, Status> {
    request::required("volume_id", &req.volume_id)?;
    let target = request::absolute_path("target_path", &req.target_path)?;
    let id = parse_volume_id(&req.volume_id)?;
    let _guard = driver.lock(&id.to_string())?;
    let backend = driver.backend(id.pool());
    let device = match &backend {
        Some(backend) => backend.attached(&id).map_err(backend_status)?,
        None => None,
    };
    let directory = backend.as_ref().and_then(|backend| {
        let record = backend.lookup(&id).ok()??;
        (record.layout == VolumeLayout::DiskImage)
            .then(|| disk_image::source(backend.as_ref(), &record).ok())
            .flatten()
            .map(|(_, source)| source)
    });
    // Only this volume's mounts are undone: its filesystem, its device node or its directory,
    // never whatever else happens to be mounted at the path.
    let ours = |entry: &MountEntry| {
        device.as_ref().is_some_and(|d| {
            is_device_mount(entry, d.rdev) || is_device_node(&entry.mount_point, d.rdev)
        }) || directory.as_ref().is_some_and(|dir| dir.shows(entry))
    };
    let table = mount_table()?;
    match mountinfo::mounted_at(&table, &target) {
        Some(entry) if !ours(entry) => {
            driver.volume(&req.volume_id)?;
            return Err(Status::failed_precondition(format!(
                "{} has a mount of {} that does not belong to volume {id}; it is left alone",
                target.display(),
                entry.source
            )));
        }
        Some(_) => unmount_all(&target, ours)?,
        None if std::fs::symlink_metadata(&target).is_err() => {
            // Nothing to undo; still NOT_FOUND for a volume that does not exist, as the spec asks.
            driver.volume(&req.volume_id)?;
            return Ok(NodeUnpublishVolumeResponse {});
        }
        None => {}
    }
    // The target is removed only when it is what publishing created: an empty directory or an
    // empty file that a device node was bound onto.
    match std::fs::symlink_metadata(&target) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir(&target).map_err(|e| {
            Status::failed_precondition(format!(
                "{} is not empty after unmounting ({e}); left in place",
                target.display()
            ))
        })?,
        Ok(meta) if meta.is_file() && meta.len() == 0 => {
            std::fs::remove_file(&target).map_err(io_status("removing", &target))?
        }
        Ok(_) => {
            return Err(Status::failed_precondition(format!(
                "{} is not an empty file or directory; left in place",
                target.display()
            )));
        }
        Err(_) => {}
    }
    Ok(NodeUnpublishVolumeResponse {})
}

/// Whether this process may use reserved filesystem resources; the kernel requires it for online
/// ext4 resizing (EXT4_IOC_RESIZE_FS answers EPERM otherwise).
pub fn has_sys_resource_capability() -> bool {
    const CAP_SYS_RESOURCE: u32 = 24;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps >> CAP_SYS_RESOURCE & 1 == 1)
}

/// What the Node service offers.
pub(super) fn capabilities() -> NodeGetCapabilitiesResponse {
    NodeGetCapabilitiesResponse {
        capabilities: [
            rpc::Type::StageUnstageVolume,
            rpc::Type::GetVolumeStats,
            rpc::Type::VolumeCondition,
            rpc::Type::SingleNodeMultiWriter,
            rpc::Type::ExpandVolume,
        ]
        .into_iter()
        .map(rpc_capability)
        .collect(),
    }
}

fn rpc_capability(kind: rpc::Type) -> NodeServiceCapability {
    NodeServiceCapability {
        r#type: Some(node_service_capability::Type::Rpc(
            node_service_capability::Rpc {
                r#type: kind as i32,
            },
        )),
    }
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        req: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        let driver = self.driver.clone();
        blocking("NodeStageVolume", move || stage(&driver, req.into_inner())).await
    }

    async fn node_unstage_volume(
        &self,
        req: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        let driver = self.driver.clone();
        blocking("NodeUnstageVolume", move || {
            unstage(&driver, req.into_inner())
        })
        .await
    }

    async fn node_publish_volume(
        &self,
        req: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let driver = self.driver.clone();
        blocking("NodePublishVolume", move || {
            publish(&driver, req.into_inner())
        })
        .await
    }

    async fn node_unpublish_volume(
        &self,
        req: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let driver = self.driver.clone();
        blocking("NodeUnpublishVolume", move || {
            unpublish(&driver, req.into_inner())
        })
        .await
    }

    async fn node_get_volume_stats(
        &self,
        req: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        let driver = self.driver.clone();
        blocking("NodeGetVolumeStats", move || {
            volume_stats(&driver, req.into_inner())
        })
        .await
    }

    async fn node_expand_volume(
        &self,
        req: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        let driver = self.driver.clone();
        blocking("NodeExpandVolume", move || {
            expand(&driver, req.into_inner())
        })
        .await
    }

    async fn node_get_capabilities(
        &self,
        _: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        Ok(Response::new(capabilities()))
    }

    async fn node_get_info(
        &self,
        _: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.driver.node_id.clone(),
            max_volumes_per_node: self.driver.max_volumes_per_node,
            accessible_topology: Some(self.driver.topology()),
        }))
    }
}
