//! Harness for tests that drive the real `fastvirt-csi` binary over its socket, on real loop devices.
#![allow(dead_code)]

pub mod scrape;
pub mod standard_clients;

use fastvirt_csi::local::{Clients, DriverArgs, DriverProcess};
use fastvirt_csi::loopdev;
use fastvirt_csi::mountinfo;
use fastvirt_csi::proto::volume_capability::access_mode::Mode;
use fastvirt_csi::proto::volume_capability::{AccessMode, AccessType, BlockVolume, MountVolume};
use fastvirt_csi::proto::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub const NODE: &str = "node-a";
pub const MIB: i64 = 1 << 20;

/// Why this machine cannot run host tests, if it cannot.
pub fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("needs root for loop devices and mounts".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no /dev/loop-control: this kernel or container has no loop devices".into());
    }
    for tool in ["blkid", "mkfs.ext4", "mkfs.xfs"] {
        let found = std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).exists()));
        if !found {
            return Some(format!(
                "{tool} is not installed (run scripts/install-deps.sh)"
            ));
        }
    }
    None
}

/// Returns from the test with a SKIP line when the host lacks what it needs.
#[macro_export]
macro_rules! require_host {
    () => {
        if let Some(reason) = common::skip_reason() {
            eprintln!("SKIP {}: {reason}", module_path!());
            return;
        }
    };
}

/// A driver with its own pool, socket and state under `target/tmp`, torn down completely on drop:
/// every mount below its root is unmounted and every loop device on its files detached.
pub struct TestEnv {
    pub root: PathBuf,
    pub pool_dir: PathBuf,
    pub driver: DriverProcess,
    pub clients: Clients,
}

pub fn test_root(name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("conformance")
        .join(name);
    cleanup_under(&root);
    std::fs::create_dir_all(&root).unwrap();
    root
}

pub use fastvirt_csi::local::ON_THE_HOST_DISK;

impl TestEnv {
    pub async fn start(name: &str) -> Self {
        let root = test_root(name);
        let pool_dir = root.join("pool");
        Self::start_with_flags(root, pool_dir, ON_THE_HOST_DISK).await
    }

    pub async fn start_with_pool(root: PathBuf, pool_dir: PathBuf) -> Self {
        Self::start_with_flags(root, pool_dir, &[]).await
    }

    /// A driver on one pool with further command-line flags.
    pub async fn start_with_flags(root: PathBuf, pool_dir: PathBuf, flags: &[&str]) -> Self {
        let mut args = driver_args(&root, vec![("default".into(), pool_dir.clone())]);
        args.extra_args = flags.iter().map(|f| f.to_string()).collect();
        let (driver, clients) = DriverProcess::start(args).await.expect("driver starts");
        Self {
            root,
            pool_dir,
            driver,
            clients,
        }
    }

    /// Kills the driver with SIGKILL and starts a new one with the same configuration.
    pub async fn crash_and_restart(&mut self) {
        self.driver.kill9().unwrap();
        let args = self.driver.args().clone();
        let (driver, clients) = DriverProcess::start(args).await.expect("driver restarts");
        self.driver = driver;
        self.clients = clients;
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// CreateVolume that must succeed.
    pub async fn create(&mut self, req: CreateVolumeRequest) -> Volume {
        self.clients
            .controller
            .create_volume(req)
            .await
            .expect("CreateVolume")
            .into_inner()
            .volume
            .expect("a volume")
    }

    /// NodeStageVolume that must succeed.
    pub async fn stage(&mut self, req: NodeStageVolumeRequest) {
        self.clients
            .node
            .node_stage_volume(req)
            .await
            .expect("NodeStageVolume");
    }

    /// NodePublishVolume that must succeed.
    pub async fn publish(&mut self, req: NodePublishVolumeRequest) {
        self.clients
            .node
            .node_publish_volume(req)
            .await
            .expect("NodePublishVolume");
    }

    /// Stages `volume_id` at `<root>/staging` and publishes it at `<root>/target` with `cap`, as
    /// kubelet does; returns both paths.
    pub async fn stage_and_publish(
        &mut self,
        volume_id: &str,
        cap: VolumeCapability,
    ) -> (PathBuf, PathBuf) {
        let (staging, target) = (self.path("staging"), self.path("target"));
        self.stage(stage_req(volume_id, &staging, cap.clone()))
            .await;
        self.publish(publish_req(volume_id, &staging, &target, cap, false))
            .await;
        (staging, target)
    }

    /// The RPC capabilities the controller service offers.
    pub async fn controller_capabilities(&mut self) -> Vec<i32> {
        self.clients
            .controller
            .controller_get_capabilities(ControllerGetCapabilitiesRequest {})
            .await
            .expect("ControllerGetCapabilities")
            .into_inner()
            .capabilities
            .iter()
            .filter_map(|c| {
                c.r#type
                    .as_ref()
                    .map(|controller_service_capability::Type::Rpc(r)| r.r#type)
            })
            .collect()
    }

    /// The RPC capabilities the node service offers.
    pub async fn node_capabilities(&mut self) -> Vec<i32> {
        self.clients
            .node
            .node_get_capabilities(NodeGetCapabilitiesRequest {})
            .await
            .expect("NodeGetCapabilities")
            .into_inner()
            .capabilities
            .iter()
            .filter_map(|c| {
                c.r#type
                    .as_ref()
                    .map(|node_service_capability::Type::Rpc(r)| r.r#type)
            })
            .collect()
    }

    /// NodeUnpublishVolume that must succeed.
    pub async fn unpublish(&mut self, req: NodeUnpublishVolumeRequest) {
        self.clients
            .node
            .node_unpublish_volume(req)
            .await
            .expect("NodeUnpublishVolume");
    }

    /// NodeUnstageVolume that must succeed.
    pub async fn unstage(&mut self, req: NodeUnstageVolumeRequest) {
        self.clients
            .node
            .node_unstage_volume(req)
            .await
            .expect("NodeUnstageVolume");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("driver.log")).unwrap_or_default()
    }
}

pub fn driver_args(root: &Path, pools: Vec<(String, PathBuf)>) -> DriverArgs {
    DriverArgs {
        binary: PathBuf::from(env!("CARGO_BIN_EXE_fastvirt-csi")),
        socket: root.join("csi.sock"),
        node_id: NODE.into(),
        mode: "all",
        pools,
        state_dir: root.join("state"),
        log_file: Some(root.join("driver.log")),
        extra_args: Vec::new(),
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let _ = self.driver.kill9();
        cleanup_under(&self.root);
    }
}

/// Unmounts everything below `root`, detaches loop devices on files below it, removes it.
pub fn cleanup_under(root: &Path) {
    fastvirt_csi::local::release_all_under(root);
    let _ = std::fs::remove_dir_all(root);
}

#[allow(unused_imports)] // Not every test file that includes this module uses it.
pub use fastvirt_csi::local::ScratchFs;

pub fn capability(mode: Mode, access: AccessType) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(access),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

pub fn block_cap() -> VolumeCapability {
    capability(Mode::SingleNodeWriter, AccessType::Block(BlockVolume {}))
}

pub fn mount_cap(fs: &str, flags: &[&str]) -> VolumeCapability {
    capability(
        Mode::SingleNodeWriter,
        AccessType::Mount(MountVolume {
            fs_type: fs.into(),
            mount_flags: flags.iter().map(|f| f.to_string()).collect(),
            volume_mount_group: String::new(),
        }),
    )
}

pub fn create_req(name: &str, bytes: i64, cap: VolumeCapability) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![cap],
        ..Default::default()
    }
}

pub fn with_params(mut req: CreateVolumeRequest, params: &[(&str, &str)]) -> CreateVolumeRequest {
    req.parameters = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<HashMap<_, _>>();
    req
}

pub fn stage_req(volume_id: &str, staging: &Path, cap: VolumeCapability) -> NodeStageVolumeRequest {
    NodeStageVolumeRequest {
        volume_id: volume_id.into(),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(cap),
        ..Default::default()
    }
}

pub fn unstage_req(volume_id: &str, staging: &Path) -> NodeUnstageVolumeRequest {
    NodeUnstageVolumeRequest {
        volume_id: volume_id.into(),
        staging_target_path: staging.display().to_string(),
    }
}

pub fn publish_req(
    volume_id: &str,
    staging: &Path,
    target: &Path,
    cap: VolumeCapability,
    readonly: bool,
) -> NodePublishVolumeRequest {
    NodePublishVolumeRequest {
        volume_id: volume_id.into(),
        staging_target_path: staging.display().to_string(),
        target_path: target.display().to_string(),
        volume_capability: Some(cap),
        readonly,
        ..Default::default()
    }
}

pub fn unpublish_req(volume_id: &str, target: &Path) -> NodeUnpublishVolumeRequest {
    NodeUnpublishVolumeRequest {
        volume_id: volume_id.into(),
        target_path: target.display().to_string(),
    }
}

pub fn stats_req(volume_id: &str, path: &Path) -> NodeGetVolumeStatsRequest {
    NodeGetVolumeStatsRequest {
        volume_id: volume_id.into(),
        volume_path: path.display().to_string(),
        staging_target_path: String::new(),
    }
}

/// Asserts a gRPC error code, showing the message on failure.
#[track_caller]
pub fn assert_code<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: tonic::Code,
) -> tonic::Status {
    match result {
        Ok(value) => panic!("expected {code:?}, got success: {value:?}"),
        Err(status) => {
            assert_eq!(status.code(), code, "message: {}", status.message());
            status
        }
    }
}

/// The loop devices attached to files below `dir`.
pub fn loops_under(dir: &Path) -> Vec<loopdev::LoopDevice> {
    loopdev::bound_under(dir)
}

pub fn is_mounted(path: &Path) -> bool {
    mountinfo::mounted_at(&mountinfo::read().unwrap(), path).is_some()
}

/// A deterministic 1 MiB pattern tagged with `seed`.
pub fn pattern(seed: u8) -> Vec<u8> {
    (0..(1usize << 20))
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// The regular files in a pool directory, recursively, relative to it.
pub fn pool_files(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            files.extend(
                pool_files(&entry.path())
                    .into_iter()
                    .map(|f| format!("{name}/{f}")),
            );
        } else {
            files.push(name);
        }
    }
    files
}

/// CreateVolume of a block volume restored from a snapshot.
pub fn from_snapshot(name: &str, bytes: i64, snapshot_id: &str) -> CreateVolumeRequest {
    let mut req = create_req(name, bytes, block_cap());
    req.volume_content_source = Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Snapshot(
            volume_content_source::SnapshotSource {
                snapshot_id: snapshot_id.into(),
            },
        )),
    });
    req
}

/// CreateVolume of a block volume cloned from another volume.
pub fn from_volume(name: &str, bytes: i64, volume_id: &str) -> CreateVolumeRequest {
    let mut req = create_req(name, bytes, block_cap());
    req.volume_content_source = Some(VolumeContentSource {
        r#type: Some(volume_content_source::Type::Volume(
            volume_content_source::VolumeSource {
                volume_id: volume_id.into(),
            },
        )),
    });
    req
}

pub fn snapshot_req(name: &str, source: &str) -> CreateSnapshotRequest {
    CreateSnapshotRequest {
        name: name.into(),
        source_volume_id: source.into(),
        ..Default::default()
    }
}

/// The VolumeCondition NodeGetVolumeStats reports for a volume published at `target`.
pub async fn volume_condition(
    clients: &mut Clients,
    volume_id: &str,
    target: &Path,
) -> VolumeCondition {
    clients
        .node
        .node_get_volume_stats(stats_req(volume_id, target))
        .await
        .unwrap()
        .into_inner()
        .volume_condition
        .expect("a volume condition")
}
