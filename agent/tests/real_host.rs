//! Apply and restore on this machine's real kernel. Every test skips with a message when not root
//! or when the facility is missing, and ends with the host exactly as it started. The journal goes
//! to a temporary directory instead of the host's /var/lib.

use fastvirt_agent::apply;
use fastvirt_agent::congestion::{self, Source};
use fastvirt_agent::host;
use fastvirt_agent::hostfs::{HostFs, HostFsError, RealHostFs};
use fastvirt_agent::plan::{self, PlanOptions, Target};
use fastvirt_api::NodeTuningProfileSpec;
use std::path::Path;
use std::sync::Mutex;

/// The tests change shared kernel state: one at a time.
static HOST: Mutex<()> = Mutex::new(());

/// The real host, with the agent's journal redirected into a temporary directory.
struct TestHost {
    real: RealHostFs,
    journal: RealHostFs,
    _dir: tempfile::TempDir,
}

impl TestHost {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        Self {
            real: RealHostFs::new("/"),
            journal: RealHostFs::new(dir.path()),
            _dir: dir,
        }
    }

    fn route(&self, path: &str) -> &RealHostFs {
        if path.starts_with("var/lib/fastvirt/") {
            &self.journal
        } else {
            &self.real
        }
    }
}

impl HostFs for TestHost {
    fn read(&self, path: &str) -> Result<String, HostFsError> {
        self.route(path).read(path)
    }
    fn write(&self, path: &str, value: &str) -> Result<(), HostFsError> {
        self.route(path).write(path, value)
    }
    fn replace_file(&self, path: &str, content: &str) -> Result<(), HostFsError> {
        self.route(path).replace_file(path, content)
    }
    fn remove_file(&self, path: &str) -> Result<(), HostFsError> {
        self.route(path).remove_file(path)
    }
    fn list(&self, dir: &str) -> Vec<String> {
        self.route(dir).list(dir)
    }
    fn exists(&self, path: &str) -> bool {
        self.route(path).exists(path)
    }

    fn modified(&self, path: &str) -> Option<std::time::SystemTime> {
        self.route(path).modified(path)
    }
}

fn skip_unless_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return false;
    }
    eprintln!("skipping {test}: needs root to change kernel settings");
    true
}

fn skip_without(test: &str, path: &str) -> bool {
    if Path::new(path).exists() {
        return false;
    }
    eprintln!("skipping {test}: this kernel has no {path}");
    true
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .to_owned()
}

fn all_online_reserved(extra: &str) -> NodeTuningProfileSpec {
    let online = read("/sys/devices/system/cpu/online");
    serde_yaml::from_str(&format!(
        "cpu: {{reserved: '{online}'}}\nirq: {{moveToReserved: false}}\n{extra}"
    ))
    .expect("profile parses")
}

/// Plans and applies `spec`, returning the applied settings; restores afterwards in the caller.
fn apply_profile(fs: &TestHost, spec: &NodeTuningProfileSpec) -> apply::ApplyReport {
    let host = host::read(fs).expect("the real host reads");
    let plan = plan::plan(&host, spec, &PlanOptions::default()).expect("plan");
    apply::apply(fs, &plan).expect("apply")
}

fn restore(fs: &TestHost) {
    let report = apply::restore(fs).expect("restore");
    assert!(
        report.failed.is_empty(),
        "restore failed: {:#?}",
        report.failed
    );
}

#[test]
fn hugepages_2mib_apply_and_restore() {
    let _host = HOST.lock().unwrap_or_else(|e| e.into_inner());
    let pool = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
    if skip_unless_root("hugepages_2mib_apply_and_restore")
        || skip_without("hugepages_2mib_apply_and_restore", pool)
    {
        return;
    }
    let before = read(pool);
    let wanted = before.parse::<u32>().unwrap() + 16;
    let fs = TestHost::new();
    let report = apply_profile(
        &fs,
        &all_online_reserved(&format!("hugepages: [{{size: 2Mi, count: {wanted}}}]\n")),
    );
    let outcome = (report.applied.len(), report.shortfalls.len());
    let after_apply = read(pool);
    restore(&fs);
    assert_eq!(read(pool), before, "the pool is back where it started");
    match outcome {
        (1, 0) => assert_eq!(after_apply, wanted.to_string()),
        (0, 1) => eprintln!(
            "the kernel could not allocate 16 more pages: {}",
            report.shortfalls[0].message
        ),
        other => panic!("unexpected apply outcome {other:?}: {report:#?}"),
    }
}

#[test]
fn thp_mode_apply_and_restore() {
    let _host = HOST.lock().unwrap_or_else(|e| e.into_inner());
    let enabled = "/sys/kernel/mm/transparent_hugepage/enabled";
    let defrag = "/sys/kernel/mm/transparent_hugepage/defrag";
    if skip_unless_root("thp_mode_apply_and_restore")
        || skip_without("thp_mode_apply_and_restore", enabled)
    {
        return;
    }
    let before = (read(enabled), read(defrag));
    let mode = if before.0.contains("[never]") {
        "madvise"
    } else {
        "never"
    };
    let fs = TestHost::new();
    let report = apply_profile(
        &fs,
        &all_online_reserved(&format!("transparentHugepages: {mode}\n")),
    );
    let applied = read(enabled);
    restore(&fs);
    assert_eq!((read(enabled), read(defrag)), before);
    assert!(applied.contains(&format!("[{mode}]")), "{applied}");
    assert!(
        report
            .applied
            .iter()
            .any(|a| a.setting == "transparent hugepages enabled")
    );
}

#[test]
fn sysctl_apply_and_restore() {
    let _host = HOST.lock().unwrap_or_else(|e| e.into_inner());
    let path = "/proc/sys/vm/swappiness";
    if skip_unless_root("sysctl_apply_and_restore")
        || skip_without("sysctl_apply_and_restore", path)
    {
        return;
    }
    let before = read(path);
    let value = if before == "10" { "11" } else { "10" };
    let fs = TestHost::new();
    apply_profile(
        &fs,
        &all_online_reserved(&format!("sysctls: {{vm.swappiness: '{value}'}}\n")),
    );
    let applied = read(path);
    restore(&fs);
    assert_eq!(read(path), before);
    assert_eq!(applied, value);
}

#[test]
fn irq_affinity_moves_movable_irqs_records_managed_ones_and_restores() {
    let _host = HOST.lock().unwrap_or_else(|e| e.into_inner());
    let test = "irq_affinity_moves_movable_irqs_records_managed_ones_and_restores";
    if skip_unless_root(test) || skip_without(test, "/proc/irq/default_smp_affinity") {
        return;
    }
    let fs = TestHost::new();
    let host = host::read(&fs).unwrap();
    if host.online.len() < 2 || host.irqs.is_empty() {
        eprintln!("skipping {test}: needs two online CPUs and IRQs with an affinity");
        return;
    }
    let affinities = |host: &host::HostModel| -> Vec<(u32, String)> {
        host.irqs
            .iter()
            .map(|i| (i.number, i.affinity.to_string()))
            .collect()
    };
    let before = (affinities(&host), read("/proc/irq/default_smp_affinity"));
    let first = host.online.iter().next().unwrap();
    let spec: NodeTuningProfileSpec =
        serde_yaml::from_str(&format!("cpu: {{reserved: '{first}'}}\n")).unwrap();
    let plan = plan::plan(&host, &spec, &PlanOptions::default()).unwrap();
    let irq_changes = plan
        .changes
        .iter()
        .filter(|c| matches!(c.target, Target::IrqAffinity { .. }))
        .count();
    let report = apply::apply(&fs, &plan).unwrap();
    let moved = host::read(&fs).unwrap();
    restore(&fs);
    let after = host::read(&fs).unwrap();
    assert_eq!(
        (affinities(&after), read("/proc/irq/default_smp_affinity")),
        before,
        "every IRQ is back"
    );

    let applied_irqs: Vec<&str> = report
        .applied
        .iter()
        .filter(|a| a.setting.starts_with("irq "))
        .map(|a| a.setting.as_str())
        .collect();
    let managed = report
        .unchangeable
        .iter()
        .filter(|u| u.reason.contains("kernel-managed"))
        .count();
    assert_eq!(
        applied_irqs.len() + managed,
        irq_changes,
        "every IRQ was either moved or found managed"
    );
    assert!(!applied_irqs.is_empty(), "this machine has movable IRQs");
    for irq in &moved.irqs {
        let label = format!("irq {} ", irq.number);
        if applied_irqs.iter().any(|s| s.starts_with(&label)) {
            assert_eq!(
                irq.affinity.to_string(),
                first.to_string(),
                "irq {}",
                irq.number
            );
        }
    }
    eprintln!(
        "{} IRQs moved and verified, {managed} kernel-managed IRQs refused their affinity",
        applied_irqs.len()
    );
}

#[test]
fn congestion_uses_the_best_source_this_kernel_has() {
    let fs = RealHostFs::new("/");
    let Ok(source) = congestion::detect(&fs) else {
        eprintln!(
            "skipping congestion_uses_the_best_source_this_kernel_has: no schedstat, per-task schedstat or PSI"
        );
        return;
    };
    let expected = if Path::new("/proc/schedstat").exists() {
        Source::Schedstat
    } else if Path::new("/proc/self/schedstat").exists() {
        Source::TaskSchedstat
    } else {
        Source::Psi
    };
    assert_eq!(source, expected);
    let first = congestion::sample(&fs, source, congestion::monotonic_ns()).unwrap();
    // Some work so the interval has run time to see.
    let mut x = 0u64;
    for i in 0..20_000_000u64 {
        x = x.wrapping_mul(31).wrapping_add(i);
    }
    std::hint::black_box(x);
    std::thread::sleep(std::time::Duration::from_millis(100));
    let second = congestion::sample(&fs, source, congestion::monotonic_ns()).unwrap();
    let report = congestion::rates(&first, &second, &Default::default()).unwrap();
    let online = host::read(&fs).unwrap().online;
    if source != Source::Psi {
        assert_eq!(report.cpus.len(), online.len());
        assert!(
            report
                .cpus
                .iter()
                .all(|c| (0.0..=100.0).contains(&c.utilisation_percent))
        );
        assert!(
            report.cpus.iter().any(|c| c.utilisation_percent > 0.0),
            "{report:#?}"
        );
    }
}
