//! Synthetic host trees for tests and the benchmark: a multi-socket host with NVMe and NIC IRQs,
//! hugepage pools, cpufreq/cpuidle, THP, KSM, sysctls and their files, and [`FixtureFs`], which
//! behaves like the kernel on write (choice files move their brackets, hugepage pools fill only up
//! to what memory allows, managed IRQs answer EPERM) so apply and read-back are exercised for real.

use crate::cpumask;
use crate::hostfs::{HostFs, HostFsError, RealHostFs};
use fastvirt_api::cpuset::CpuSet;
use fastvirt_api::tuning_profile::SYSCTL_ALLOWLIST;
use nix::errno::Errno;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Paths (relative to the root) whose writes fail with EPERM, one a line.
pub const REFUSE_WRITES: &str = ".fixture/refuse-writes";
/// `path max` lines: a hugepage pool the "kernel" fills only up to `max` pages.
pub const HUGEPAGE_LIMITS: &str = ".fixture/hugepage-limits";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixtureSpec {
    pub sockets: u32,
    /// Physical cores per socket; every core has two SMT threads.
    pub cores_per_socket: u32,
    pub memory_per_node_mib: u64,
    /// NVMe controllers per socket; each has one admin IRQ and `nvme_queues` managed queue IRQs.
    pub nvme_per_socket: u32,
    pub nvme_queues: u32,
    /// NICs per socket, each with `nic_queues` movable IRQs.
    pub nics_per_socket: u32,
    pub nic_queues: u32,
}

impl FixtureSpec {
    /// The test host of issue 5: 2 sockets, 64 CPUs, NVMe and NIC IRQs.
    pub fn two_socket_64_cpus() -> Self {
        Self {
            sockets: 2,
            cores_per_socket: 16,
            memory_per_node_mib: 64 * 1024,
            nvme_per_socket: 1,
            nvme_queues: 8,
            nics_per_socket: 1,
            nic_queues: 8,
        }
    }

    /// The benchmark host: 256 CPUs and about 4,000 IRQs.
    pub fn bench_256_cpus() -> Self {
        Self {
            sockets: 4,
            cores_per_socket: 32,
            memory_per_node_mib: 256 * 1024,
            nvme_per_socket: 4,
            nvme_queues: 64,
            nics_per_socket: 4,
            nic_queues: 185,
        }
    }

    pub fn cpu_count(&self) -> u32 {
        self.sockets * self.cores_per_socket * 2
    }

    /// The NUMA node of a CPU: threads of core `c` are `c` and `c + cores`.
    pub fn node_of(&self, cpu: u32) -> u32 {
        (cpu % (self.sockets * self.cores_per_socket)) / self.cores_per_socket
    }

    pub fn node_cpus(&self, node: u32) -> CpuSet {
        (0..self.cpu_count())
            .filter(|c| self.node_of(*c) == node)
            .collect()
    }
}

/// One IRQ of the fixture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixtureIrq {
    pub number: u32,
    pub name: String,
    pub device: Option<String>,
    pub managed: bool,
}

/// The IRQs a spec generates: legacy ones, then per socket its NVMe and NIC vectors.
pub fn irqs(spec: &FixtureSpec) -> Vec<FixtureIrq> {
    let mut irqs: Vec<FixtureIrq> = [(1, "i8042"), (4, "ttyS0"), (8, "rtc0"), (9, "acpi")]
        .into_iter()
        .map(|(number, name)| FixtureIrq {
            number,
            name: name.to_owned(),
            device: None,
            managed: false,
        })
        .collect();
    let mut next = 24;
    let mut push = |irqs: &mut Vec<FixtureIrq>, name: String, device: &str, managed: bool| {
        irqs.push(FixtureIrq {
            number: next,
            name,
            device: Some(device.to_owned()),
            managed,
        });
        next += 1;
    };
    let mut nvme = 0;
    let mut nic = 0;
    for socket in 0..spec.sockets {
        for _ in 0..spec.nvme_per_socket {
            let device = format!("0000:{:02x}:00.0", 0x40 + nvme);
            push(&mut irqs, format!("nvme{nvme}q0"), &device, false);
            for queue in 1..=spec.nvme_queues {
                push(&mut irqs, format!("nvme{nvme}q{queue}"), &device, true);
            }
            nvme += 1;
        }
        for _ in 0..spec.nics_per_socket {
            let device = format!("0000:{:02x}:00.{}", 0x10 + socket, nic % 8);
            for queue in 0..spec.nic_queues {
                push(
                    &mut irqs,
                    format!("mlx5_comp{queue}@pci:{device}"),
                    &device,
                    false,
                );
            }
            nic += 1;
        }
    }
    irqs
}

fn device_node(spec: &FixtureSpec, device: &str) -> u32 {
    let bus = u32::from_str_radix(&device[5..7], 16).unwrap_or(0);
    if bus >= 0x40 {
        (bus - 0x40) / spec.nvme_per_socket.max(1)
    } else {
        bus - 0x10
    }
}

fn create(root: &Path, path: &str) -> io::Result<fs::File> {
    let full = root.join(path);
    if let Some(dir) = full.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::File::create(full)
}

fn put(root: &Path, path: &str, content: &str) -> io::Result<()> {
    let full = root.join(path);
    if let Some(dir) = full.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(full, content)
}

/// Default sysctl values of the fixture: those of a stock kernel.
fn sysctl_default(name: &str) -> &'static str {
    match name {
        "vm.swappiness" => "60",
        "vm.dirty_ratio" => "20",
        "vm.dirty_background_ratio" => "10",
        "vm.stat_interval" => "1",
        "vm.compaction_proactiveness" => "20",
        "kernel.numa_balancing" | "kernel.nmi_watchdog" | "kernel.timer_migration" => "1",
        _ => "0",
    }
}

/// Every file of a host tree by path relative to `root`, except the fixture's own markers and the
/// agent's journal: what a test compares before and after the agent worked on it.
pub fn host_files(root: &Path) -> io::Result<BTreeMap<String, String>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir)? {
            let path = entry?.path();
            let relative = path
                .strip_prefix(root)
                .map_err(io::Error::other)?
                .to_string_lossy()
                .into_owned();
            if relative.starts_with(".fixture") || relative.starts_with("var/lib/fastvirt") {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else {
                files.insert(relative, fs::read_to_string(&path)?);
            }
        }
    }
    Ok(files)
}

/// Writes a host tree for `spec` below `root`.
pub fn write_host(root: &Path, spec: &FixtureSpec) -> io::Result<()> {
    let cpus = spec.cpu_count();
    let cores = spec.sockets * spec.cores_per_socket;
    let all = format!("0-{}", cpus - 1);
    put(root, "sys/devices/system/cpu/online", &format!("{all}\n"))?;
    for cpu in 0..cpus {
        let dir = format!("sys/devices/system/cpu/cpu{cpu}");
        let core = cpu % cores;
        put(
            root,
            &format!("{dir}/topology/thread_siblings_list"),
            &format!("{core},{}\n", core + cores),
        )?;
        put(
            root,
            &format!("{dir}/cpufreq/scaling_governor"),
            "powersave\n",
        )?;
        put(
            root,
            &format!("{dir}/cpufreq/scaling_available_governors"),
            "performance powersave\n",
        )?;
        put(
            root,
            &format!("{dir}/cpufreq/energy_performance_preference"),
            "balance_performance\n",
        )?;
        put(
            root,
            &format!("{dir}/cpufreq/energy_performance_available_preferences"),
            "default performance balance_performance balance_power power\n",
        )?;
        for (index, (name, latency)) in [("POLL", 0), ("C1", 2), ("C1E", 10), ("C6", 133)]
            .iter()
            .enumerate()
        {
            let state = format!("{dir}/cpuidle/state{index}");
            put(root, &format!("{state}/name"), &format!("{name}\n"))?;
            put(root, &format!("{state}/latency"), &format!("{latency}\n"))?;
            put(root, &format!("{state}/disable"), "0\n")?;
        }
    }
    let node_kb = spec.memory_per_node_mib * 1024;
    let free_kb = node_kb * 9 / 10;
    for node in 0..spec.sockets {
        let dir = format!("sys/devices/system/node/node{node}");
        put(
            root,
            &format!("{dir}/cpulist"),
            &format!("{}\n", spec.node_cpus(node)),
        )?;
        put(
            root,
            &format!("{dir}/meminfo"),
            &format!(
                "Node {node} MemTotal:       {node_kb} kB\nNode {node} MemFree:        {free_kb} kB\n"
            ),
        )?;
        for size in ["2048", "1048576"] {
            put(
                root,
                &format!("{dir}/hugepages/hugepages-{size}kB/nr_hugepages"),
                "0\n",
            )?;
        }
    }
    for size in ["2048", "1048576"] {
        put(
            root,
            &format!("sys/kernel/mm/hugepages/hugepages-{size}kB/nr_hugepages"),
            "0\n",
        )?;
    }
    put(
        root,
        "proc/meminfo",
        &format!(
            "MemTotal:       {} kB\nMemFree:        {} kB\n",
            node_kb * u64::from(spec.sockets),
            free_kb * u64::from(spec.sockets)
        ),
    )?;
    let online: CpuSet = (0..cpus).collect();
    let mask = cpumask::format(&online);
    let irqs = irqs(spec);
    // Streamed: on the benchmark host the file runs to 11 MB, which would dominate the benchmark's
    // own peak memory if built in one string.
    let mut interrupts = io::BufWriter::new(create(root, "proc/interrupts")?);
    for cpu in 0..cpus {
        write!(interrupts, "{:>11}", format!("CPU{cpu}"))?;
    }
    writeln!(interrupts)?;
    let mut refused = String::new();
    for irq in &irqs {
        write!(interrupts, "{:>4}:", irq.number)?;
        for _ in 0..cpus {
            interrupts.write_all(b"          0 ")?;
        }
        let chip = match &irq.device {
            Some(device) => format!("PCI-MSIX-{device}"),
            None => "IO-APIC".to_owned(),
        };
        writeln!(interrupts, " {chip}   0-edge      {}", irq.name)?;
        let dir = format!("proc/irq/{}", irq.number);
        put(
            root,
            &format!("{dir}/smp_affinity_list"),
            &format!("{all}\n"),
        )?;
        put(root, &format!("{dir}/smp_affinity"), &format!("{mask}\n"))?;
        put(root, &format!("{dir}/effective_affinity_list"), "0\n")?;
        if let Some(device) = &irq.device {
            let device_dir = format!("sys/bus/pci/devices/{device}");
            put(
                root,
                &format!("{device_dir}/msi_irqs/{}", irq.number),
                "msix\n",
            )?;
            put(
                root,
                &format!("{device_dir}/numa_node"),
                &format!("{}\n", device_node(spec, device)),
            )?;
        }
        if irq.managed {
            let _ = writeln!(refused, "{dir}/smp_affinity_list");
        }
    }
    interrupts.flush()?;
    put(root, REFUSE_WRITES, &refused)?;
    put(root, HUGEPAGE_LIMITS, "")?;
    put(root, "proc/irq/default_smp_affinity", &format!("{mask}\n"))?;
    put(
        root,
        "sys/devices/virtual/workqueue/cpumask",
        &format!("{mask}\n"),
    )?;
    put(
        root,
        "sys/kernel/mm/transparent_hugepage/enabled",
        "[always] madvise never\n",
    )?;
    put(
        root,
        "sys/kernel/mm/transparent_hugepage/defrag",
        "always defer defer+madvise [madvise] never\n",
    )?;
    put(root, "sys/kernel/mm/ksm/run", "0\n")?;
    put(root, "sys/kernel/mm/ksm/pages_to_scan", "100\n")?;
    for name in SYSCTL_ALLOWLIST {
        put(
            root,
            &crate::write_allowlist::sysctl_path(name),
            &format!("{}\n", sysctl_default(name)),
        )?;
    }
    put(
        root,
        "usr/lib/sysctl.d/50-default.conf",
        "kernel.numa_balancing = 1\n",
    )?;
    put(
        root,
        "etc/sysctl.d/99-local.conf",
        "# site settings\nvm.swappiness = 30\n",
    )?;
    put(
        root,
        "etc/default/irqbalance",
        "# irqbalance options\nIRQBALANCE_ONESHOT=0\n",
    )?;
    put(root, "usr/sbin/irqbalance", "")?;
    put(
        root,
        "proc/cmdline",
        "BOOT_IMAGE=/vmlinuz root=/dev/sda1 ro iommu=pt isolcpus=4-7\n",
    )?;
    put(
        root,
        "var/lib/kubelet/config.yaml",
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\ncpuManagerPolicy: none\n",
    )?;
    Ok(())
}

/// The kernel's answer to a write, as the fixture models it.
fn kernel_error(errno: Errno) -> io::Error {
    io::Error::from_raw_os_error(errno as i32)
}

/// A fixture tree that answers writes like the kernel would.
#[derive(Debug)]
pub struct FixtureFs {
    real: RealHostFs,
    online: CpuSet,
    refused: Mutex<BTreeSet<String>>,
    hugepage_limits: BTreeMap<String, u64>,
}

impl FixtureFs {
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let real = RealHostFs::new(root);
        let refused = fs::read_to_string(real.full_path(REFUSE_WRITES))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        let hugepage_limits = fs::read_to_string(real.full_path(HUGEPAGE_LIMITS))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (path, max) = l.split_once(' ')?;
                Some((path.to_owned(), max.trim().parse().ok()?))
            })
            .collect();
        let online = real
            .read_trimmed("sys/devices/system/cpu/online")
            .and_then(|o| CpuSet::parse(&o).ok())
            .unwrap_or_default();
        Ok(Self {
            real,
            online,
            refused: Mutex::new(refused),
            hugepage_limits,
        })
    }

    pub fn root(&self) -> &Path {
        self.real.root()
    }

    /// Makes later writes to `path` fail with EPERM, as a broken or locked-down knob would.
    pub fn refuse_writes(&self, path: &str) {
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_owned());
    }

    /// Sets a file behind the agent's back, as another tool on the host would.
    pub fn tamper(&self, path: &str, content: &str) -> io::Result<()> {
        fs::write(self.real.full_path(path), format!("{content}\n"))
    }

    /// Like a kernel file: it must exist, and a write replaces its content.
    fn store(&self, path: &str, content: &str) -> Result<(), HostFsError> {
        fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(self.real.full_path(path))
            .and_then(|mut file| io::Write::write_all(&mut file, format!("{content}\n").as_bytes()))
            .map_err(|source| HostFsError::Write {
                path: path.to_owned(),
                value: content.to_owned(),
                source,
            })
    }

    /// The kernel's interpretation of a value written to `path`: what the file reads afterwards.
    fn kernel_semantics(&self, path: &str, value: &str) -> Result<Vec<(String, String)>, Errno> {
        let name = path.rsplit('/').next().unwrap_or_default();
        match name {
            // The kernel delivers on one CPU of the new set (x86 picks the first).
            "smp_affinity_list" => {
                let cpus = CpuSet::parse(value.trim()).map_err(|_| Errno::EINVAL)?;
                let first = cpus
                    .iter()
                    .find(|c| self.online.contains(*c))
                    .ok_or(Errno::EINVAL)?;
                let dir = path.trim_end_matches("smp_affinity_list");
                Ok(vec![
                    (path.to_owned(), cpus.to_string()),
                    (format!("{dir}effective_affinity_list"), first.to_string()),
                ])
            }
            "default_smp_affinity" | "cpumask" => {
                let cpus = cpumask::parse(value).map_err(|_| Errno::EINVAL)?;
                Ok(vec![(path.to_owned(), cpumask::format(&cpus))])
            }
            "enabled" | "defrag" if path.contains("transparent_hugepage") => {
                let current = self.real.read(path).map_err(|_| Errno::ENOENT)?;
                let options: Vec<String> = current
                    .split_whitespace()
                    .map(|w| w.trim_matches(['[', ']']).to_owned())
                    .collect();
                if !options.iter().any(|o| o == value.trim()) {
                    return Err(Errno::EINVAL);
                }
                let text = options
                    .iter()
                    .map(|o| {
                        if o == value.trim() {
                            format!("[{o}]")
                        } else {
                            o.clone()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ");
                Ok(vec![(path.to_owned(), text)])
            }
            "nr_hugepages" => {
                let wanted: u64 = value.trim().parse().map_err(|_| Errno::EINVAL)?;
                let got = self
                    .hugepage_limits
                    .get(path)
                    .map_or(wanted, |max| wanted.min(*max));
                Ok(vec![(path.to_owned(), got.to_string())])
            }
            "scaling_governor" => {
                let dir = path.trim_end_matches("scaling_governor");
                let available = self
                    .real
                    .read_trimmed(&format!("{dir}scaling_available_governors"))
                    .unwrap_or_default();
                if available.split_whitespace().any(|g| g == value.trim()) {
                    Ok(vec![(path.to_owned(), value.trim().to_owned())])
                } else {
                    Err(Errno::EINVAL)
                }
            }
            _ => Ok(vec![(path.to_owned(), value.trim().to_owned())]),
        }
    }
}

impl HostFs for FixtureFs {
    fn read(&self, path: &str) -> Result<String, HostFsError> {
        self.real.read(path)
    }

    fn for_each_line(&self, path: &str, line: &mut dyn FnMut(&str)) -> Result<(), HostFsError> {
        self.real.for_each_line(path, line)
    }

    fn write(&self, path: &str, value: &str) -> Result<(), HostFsError> {
        crate::write_allowlist::check(path)?;
        let write_error = |errno: Errno| HostFsError::Write {
            path: path.to_owned(),
            value: value.to_owned(),
            source: kernel_error(errno),
        };
        if self
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(path)
        {
            return Err(write_error(Errno::EPERM));
        }
        for (file, content) in self.kernel_semantics(path, value).map_err(write_error)? {
            self.store(&file, &content)?;
        }
        Ok(())
    }

    fn replace_file(&self, path: &str, content: &str) -> Result<(), HostFsError> {
        self.real.replace_file(path, content)
    }

    fn remove_file(&self, path: &str) -> Result<(), HostFsError> {
        self.real.remove_file(path)
    }

    fn list(&self, dir: &str) -> Vec<String> {
        self.real.list(dir)
    }

    fn exists(&self, path: &str) -> bool {
        self.real.exists(path)
    }

    fn modified(&self, path: &str) -> Option<std::time::SystemTime> {
        self.real.modified(path)
    }
}
