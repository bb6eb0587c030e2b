//! Booting a small Linux guest under QEMU with a published volume attached exactly as KubeVirt's
//! virt-launcher attaches a block PVC (the device) or a Filesystem PVC (its `disk.img`):
//! virtio-blk, `cache=none` (O_DIRECT), `aio=native`, a dedicated iothread, several queues, and
//! (as KubeVirt's `blockSize.matchVolume` does) the volume's logical block size.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the guest's init should do with its disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestMode {
    /// Write the pattern at 1 MiB with O_DIRECT.
    Write,
    /// Print the SHA-256 of the 1 MiB at 1 MiB.
    Verify,
}

impl GuestMode {
    fn as_str(self) -> &'static str {
        match self {
            Self::Write => "write",
            Self::Verify => "verify",
        }
    }
}

/// The bytes the guest writes: "fastvirt-guest-pattern\n" repeated, 1 MiB.
pub fn guest_pattern() -> Vec<u8> {
    b"fastvirt-guest-pattern\n"
        .iter()
        .copied()
        .cycle()
        .take(1 << 20)
        .collect()
}

/// Offset of the pattern on the disk.
pub const PATTERN_OFFSET: u64 = 1 << 20;

/// Kernel and initramfs built by `e2e/vm/build-guest.sh`.
#[derive(Debug, Clone)]
pub struct GuestAssets {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("building the guest with {script}: {message}")]
    Build { script: PathBuf, message: String },
    #[error("running qemu: {0}")]
    Spawn(std::io::Error),
    #[error("the guest did not power off within {0:?}; its console said:\n{1}")]
    Timeout(Duration, String),
}

/// Builds (or finds cached) guest assets in `out`.
pub fn build_assets(script: &Path, out: &Path) -> Result<GuestAssets, VmError> {
    let output = Command::new("bash")
        .arg(script)
        .arg(out)
        .stdin(Stdio::null())
        .output();
    let failed = |message: String| VmError::Build {
        script: script.to_owned(),
        message,
    };
    let output = output.map_err(|e| failed(e.to_string()))?;
    if !output.status.success() {
        return Err(failed(
            String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        ));
    }
    Ok(GuestAssets {
        kernel: out.join("vmlinuz"),
        initrd: out.join("initrd.img"),
    })
}

/// How QEMU runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

/// The console output of a guest run.
#[derive(Debug, Clone)]
pub struct GuestRun {
    pub console: String,
    pub elapsed: Duration,
}

impl GuestRun {
    /// The value after `FASTVIRT-<key> ` on the console.
    pub fn value(&self, key: &str) -> Option<String> {
        let marker = format!("FASTVIRT-{key} ");
        self.console.lines().find_map(|l| {
            l.trim()
                .strip_prefix(&marker)
                .map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
        })
    }

    pub fn has(&self, marker: &str) -> bool {
        self.console
            .lines()
            .any(|l| l.trim() == format!("FASTVIRT-{marker}"))
    }
}

fn qemu_args(
    assets: &GuestAssets,
    device: &Path,
    mode: GuestMode,
    accel: Accel,
    block_size: u32,
) -> Vec<String> {
    let (machine, cpu) = match accel {
        Accel::Kvm => ("q35,accel=kvm", "host"),
        Accel::Tcg => ("q35,accel=tcg", "max"),
    };
    // A block PVC is a device node; a Filesystem PVC's disk.img a file, which virt-launcher
    // opens with QEMU's file driver, the same cache and aio settings.
    let is_device = std::fs::metadata(device)
        .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()));
    let blockdev = serde_json::json!({
        "driver": if is_device { "host_device" } else { "file" },
        "filename": device.display().to_string(),
        "node-name": "volume",
        "cache": { "direct": true, "no-flush": false },
        "aio": "native",
        "discard": "unmap",
    });
    vec![
        "-machine".into(),
        machine.into(),
        "-cpu".into(),
        cpu.into(),
        "-smp".into(),
        "2".into(),
        "-m".into(),
        "512".into(),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-serial".into(),
        "stdio".into(),
        "-no-reboot".into(),
        "-kernel".into(),
        assets.kernel.display().to_string(),
        "-initrd".into(),
        assets.initrd.display().to_string(),
        "-append".into(),
        format!(
            "console=ttyS0 panic=-1 quiet fastvirt.mode={}",
            mode.as_str()
        ),
        "-object".into(),
        "iothread,id=iothread0".into(),
        "-blockdev".into(),
        blockdev.to_string(),
        "-device".into(),
        format!(
            "virtio-blk-pci-non-transitional,drive=volume,iothread=iothread0,num-queues=2,logical_block_size={block_size},physical_block_size={block_size}"
        ),
    ]
}

/// Boots the guest with `device` (a block device or an image file) as its disk and waits for it
/// to power off.
pub fn boot(
    assets: &GuestAssets,
    device: &Path,
    mode: GuestMode,
    accel: Accel,
    block_size: u32,
    timeout: Duration,
) -> Result<GuestRun, VmError> {
    let started = Instant::now();
    let log = tempfile_path();
    let console = std::fs::File::create(&log).map_err(VmError::Spawn)?;
    let mut child = Command::new("qemu-system-x86_64")
        .args(qemu_args(assets, device, mode, accel, block_size))
        .stdin(Stdio::null())
        .stdout(console.try_clone().map_err(VmError::Spawn)?)
        .stderr(console)
        .spawn()
        .map_err(VmError::Spawn)?;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(VmError::Spawn)? {
            break Some(status);
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    match status {
        Some(_) => Ok(GuestRun {
            console: text,
            elapsed: started.elapsed(),
        }),
        None => Err(VmError::Timeout(timeout, text)),
    }
}

fn tempfile_path() -> PathBuf {
    let unique = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "fastvirt-guest-{}-{unique}.log",
        std::process::id()
    ))
}

/// KVM when it really runs guests here, TCG otherwise. `/dev/kvm` may exist inside a VM without
/// working nested virtualisation, so the probe boots the guest once (on a scratch disk) and the
/// answer is cached per host boot. `FASTVIRT_VM_ACCEL=kvm|tcg` overrides the probe.
pub fn choose_accel(
    assets: &GuestAssets,
    cache_dir: &Path,
    scratch_device: &Path,
    block_size: u32,
) -> Accel {
    match std::env::var("FASTVIRT_VM_ACCEL").as_deref() {
        Ok("kvm") => return Accel::Kvm,
        Ok("tcg") => return Accel::Tcg,
        _ => {}
    }
    if !Path::new("/dev/kvm").exists() {
        return Accel::Tcg;
    }
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let cache = cache_dir.join("kvm-probe");
    let cached = std::fs::read_to_string(&cache).unwrap_or_default();
    if let Some(answer) = cached
        .strip_prefix(boot_id.trim())
        .filter(|_| !boot_id.trim().is_empty())
    {
        return if answer.trim() == "kvm" {
            Accel::Kvm
        } else {
            Accel::Tcg
        };
    }
    let probe = boot(
        assets,
        scratch_device,
        GuestMode::Verify,
        Accel::Kvm,
        block_size,
        Duration::from_secs(20),
    );
    let accel = match probe {
        Ok(run) if run.value("SHA256").is_some() => Accel::Kvm,
        _ => Accel::Tcg,
    };
    let _ = std::fs::write(
        &cache,
        format!(
            "{} {}",
            boot_id.trim(),
            if accel == Accel::Kvm { "kvm" } else { "tcg" }
        ),
    );
    accel
}
