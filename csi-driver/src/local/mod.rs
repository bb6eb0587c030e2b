//! Running and talking to a `fastvirt-csi` process on this machine, the way kubelet and the CSI
//! sidecars do: over its unix socket. Used by the conformance suite, the demo and the benchmark.

pub mod pod_cgroups;

use crate::proto::ProbeRequest;
use crate::proto::controller_client::ControllerClient;
use crate::proto::identity_client::IdentityClient;
use crate::proto::node_client::NodeClient;
use hyper_util::rt::TokioIo;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint, Uri};

/// Connects to a CSI socket.
pub async fn connect(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let socket = socket.to_owned();
    // The URI is required by the API but unused: the connector below always dials the socket.
    Endpoint::from_static("http://[::1]:50051")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
}

/// Clients for the three services on one connection.
#[derive(Debug, Clone)]
pub struct Clients {
    pub identity: IdentityClient<Channel>,
    pub controller: ControllerClient<Channel>,
    pub node: NodeClient<Channel>,
}

impl Clients {
    pub fn new(channel: Channel) -> Self {
        Self {
            identity: IdentityClient::new(channel.clone()),
            controller: ControllerClient::new(channel.clone()),
            node: NodeClient::new(channel),
        }
    }
}

/// Flags for a pool on the disk that runs the tests or a benchmark: no capacity reserve, so that a
/// build directory filling that disk to within 5 % of full does not fail runs about other things.
/// The reserve itself is tested on a pool of its own
/// (`out_of_space_is_resource_exhausted_and_capacity_tracks_the_pool`).
pub const ON_THE_HOST_DISK: &[&str] = &["--capacity-reserve-percent", "0"];

/// [`ON_THE_HOST_DISK`] as [`DriverArgs::extra_args`].
pub fn on_the_host_disk() -> Vec<String> {
    ON_THE_HOST_DISK
        .iter()
        .map(|flag| flag.to_string())
        .collect()
}

/// How to start a driver process.
#[derive(Debug, Clone)]
pub struct DriverArgs {
    pub binary: PathBuf,
    pub socket: PathBuf,
    pub node_id: String,
    pub mode: &'static str,
    /// `(name, directory)` pairs.
    pub pools: Vec<(String, PathBuf)>,
    pub state_dir: PathBuf,
    /// Where the driver's log goes; `None` inherits stderr.
    pub log_file: Option<PathBuf>,
    /// Further flags, e.g. `--capacity-reserve-percent`.
    pub extra_args: Vec<String>,
}

impl DriverArgs {
    fn command(&self) -> std::io::Result<Command> {
        let mut command = Command::new(&self.binary);
        command
            .arg("--endpoint")
            .arg(format!("unix://{}", self.socket.display()))
            .args(["--node-id", &self.node_id, "--mode", self.mode])
            .arg("--state-dir")
            .arg(&self.state_dir)
            .stdin(Stdio::null());
        for (name, dir) in &self.pools {
            command
                .arg("--pool")
                .arg(format!("{name}={}", dir.display()));
        }
        command.args(&self.extra_args);
        // Only what is set here counts: a stray variable in the caller's environment must not leak in.
        for var in [
            "CSI_ENDPOINT",
            "FASTVIRT_NODE_ID",
            "FASTVIRT_MODE",
            "FASTVIRT_POOLS",
            "FASTVIRT_STATE_DIR",
            "FASTVIRT_CONFIG",
            "FASTVIRT_POOL_CONFIG",
            "FASTVIRT_CAPACITY_RESERVE_PERCENT",
            "FASTVIRT_OVERCOMMIT_PERCENT",
            "FASTVIRT_MAX_VOLUMES_PER_NODE",
        ] {
            command.env_remove(var);
        }
        if let Some(log) = &self.log_file {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)?;
            command.stderr(file);
        }
        Ok(command)
    }
}

/// A running driver; killed when dropped.
#[derive(Debug)]
pub struct DriverProcess {
    args: DriverArgs,
    child: Child,
}

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("starting {binary}: {source}")]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("the driver exited with {0} before serving")]
    Exited(ExitStatus),
    #[error("the driver did not answer Probe within {0:?}")]
    Timeout(Duration),
}

impl DriverProcess {
    pub fn spawn(args: DriverArgs) -> Result<Self, LocalError> {
        let spawn_error = |source| LocalError::Spawn {
            binary: args.binary.clone(),
            source,
        };
        let child = args
            .command()
            .and_then(|mut c| c.spawn())
            .map_err(spawn_error)?;
        Ok(Self { args, child })
    }

    /// Starts the driver and waits until it answers Probe.
    pub async fn start(args: DriverArgs) -> Result<(Self, Clients), LocalError> {
        let mut process = Self::spawn(args)?;
        let clients = process.wait_ready(Duration::from_secs(30)).await?;
        Ok((process, clients))
    }

    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<Clients, LocalError> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(LocalError::Exited(status));
            }
            if let Ok(channel) = connect(&self.args.socket).await {
                let mut clients = Clients::new(channel);
                if clients.identity.probe(ProbeRequest {}).await.is_ok() {
                    return Ok(clients);
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(LocalError::Timeout(timeout))
    }

    pub fn args(&self) -> &DriverArgs {
        &self.args
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the driver without giving it a chance to clean up, like a node crash would.
    pub fn kill9(&mut self) -> std::io::Result<ExitStatus> {
        self.child.kill()?;
        self.child.wait()
    }

    /// The exit status if the driver has exited, without waiting.
    pub fn try_exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the driver to exit on its own.
    pub fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait()
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> std::io::Result<ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
            .map_err(std::io::Error::from)?;
        self.child.wait()
    }
}

impl Drop for DriverProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Unmounts every mount below `root` and detaches every loop device whose file lies below it: the
/// state a killed run may leave behind.
pub fn release_all_under(root: &Path) {
    // Found first: once a filesystem below `root` is unmounted, sysfs names the files of its loop
    // devices relative to that filesystem, no longer below `root`.
    let devices: Vec<_> = crate::loopdev::all_bound()
        .into_iter()
        .filter(|(_, backing)| backing.path.starts_with(root))
        .map(|(device, _)| device)
        .collect();
    for _ in 0..4 {
        let Ok(table) = crate::mountinfo::read() else {
            break;
        };
        let below: Vec<_> = table
            .iter()
            .rev()
            .filter(|e| e.mount_point.starts_with(root))
            .collect();
        if below.is_empty() {
            break;
        }
        for entry in below {
            let _ = nix::mount::umount2(&entry.mount_point, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    // Innermost first: a loop device on a file of a filesystem that is itself on a loop device.
    for device in devices.iter().rev() {
        let _ = device.detach(&crate::mountinfo::read().unwrap_or_default());
    }
}

/// A real filesystem in an image file, attached to a loop device and mounted: a pool that can run
/// out of space, or one with a filesystem the host disk does not have (XFS with reflink). Unmounted
/// and detached when dropped.
#[derive(Debug)]
pub struct ScratchFs {
    pub mount_point: PathBuf,
    device: crate::loopdev::LoopDevice,
    image: PathBuf,
}

impl ScratchFs {
    /// Creates a sparse `size`-byte image next to `root`'s other files, makes `fs` (`ext4`,
    /// `xfs` with reflink, or `btrfs`) on it and mounts it. Panics on failure: it is test and
    /// benchmark scaffolding, not driver code.
    pub fn new(root: &Path, size: u64, fs: &str) -> Self {
        Self::make(root, size, fs, false)
    }

    /// [`ScratchFs::new`] on a preallocated image attached with direct I/O: for measurements,
    /// where the image's own allocation and a second page cache would blur what is measured.
    pub fn on_disk(root: &Path, size: u64, fs: &str) -> Self {
        Self::make(root, size, fs, true)
    }

    fn make(root: &Path, size: u64, fs: &str, on_disk: bool) -> Self {
        let image = root.join(format!("scratch-{fs}.img"));
        let file = std::fs::File::create(&image).expect("scratch image");
        if on_disk {
            nix::fcntl::fallocate(&file, nix::fcntl::FallocateFlags::empty(), 0, size as i64)
                .expect("preallocating the scratch image");
        } else {
            file.set_len(size).expect("sizing the scratch image");
        }
        drop(file);
        let options = crate::loopdev::AttachOptions {
            block_size: if on_disk { 4096 } else { 512 },
            direct_io: on_disk,
            read_only: false,
        };
        let device = crate::loopdev::attach(&image, options).expect("scratch loop device");
        let extra: &[&str] = if fs == "xfs" {
            &["-m", "reflink=1"]
        } else {
            &[]
        };
        let mkfs = format!("mkfs.{fs}");
        let made = Command::new(&mkfs)
            .arg("-q")
            .args(extra)
            .arg(device.path())
            .stdout(std::process::Stdio::null())
            .status();
        assert!(made.is_ok_and(|s| s.success()), "{mkfs} failed");
        let mount_point = root.join(format!("scratch-{fs}"));
        std::fs::create_dir_all(&mount_point).expect("scratch mount point");
        // Online discard punches the holes of deleted files into the image, so it stays small.
        nix::mount::mount(
            Some(&device.path()),
            &mount_point,
            Some(fs),
            nix::mount::MsFlags::empty(),
            Some("discard"),
        )
        .expect("mounting the scratch filesystem");
        Self {
            mount_point,
            device,
            image,
        }
    }
}

impl ScratchFs {
    /// Switches btrfs quotas on, as an administrator does once for a pool of disk-image volumes.
    pub fn enable_btrfs_quotas(&self) {
        let enabled = Command::new("btrfs")
            .args(["quota", "enable"])
            .arg(&self.mount_point)
            .status();
        assert!(
            enabled.is_ok_and(|s| s.success()),
            "btrfs quota enable {} failed",
            self.mount_point.display()
        );
    }
}

impl Drop for ScratchFs {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.mount_point, nix::mount::MntFlags::MNT_DETACH);
        let _ = self.device.detach(&[]);
        let _ = std::fs::remove_file(&self.image);
    }
}
