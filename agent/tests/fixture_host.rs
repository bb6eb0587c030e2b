//! Plan, apply, drift, restore and every refusal on a generated 2-socket, 64-CPU host tree.

use fastvirt_agent::apply::{self, ApplyError};
use fastvirt_agent::fixture::{self, FixtureFs, FixtureSpec, HUGEPAGE_LIMITS};
use fastvirt_agent::host;
use fastvirt_agent::hostfs::HostFs;
use fastvirt_agent::journal::Journal;
use fastvirt_agent::plan::{self, Plan, PlanError, PlanOptions, Target};
use fastvirt_api::NodeTuningProfileSpec;
use std::collections::BTreeMap;
use std::path::Path;

const PROFILE: &str = "
cpu: {reserved: '0,16,32,48', isolated: '1-15,17-31,33-47,49-63'}
hugepages:
  - {size: 2Mi, count: 1024, numaNode: 0}
  - {size: 2Mi, count: 512, numaNode: 1}
  - {size: 1Gi, count: 4, numaNode: 1}
power: {governor: performance, energyPerformancePreference: performance, maxCstateLatencyUs: 10}
transparentHugepages: madvise
ksm: {enabled: true, pagesToScan: 1000}
sysctlPreset: virtual-host
sysctls: {kernel.numa_balancing: '0'}
kernelArgs: [iommu=pt, 'isolcpus=managed_irq,domain,1-15', nohz_full=1-15]
";

fn profile(yaml: &str) -> NodeTuningProfileSpec {
    serde_yaml::from_str(yaml).expect("test profile parses")
}

fn fixture() -> (tempfile::TempDir, FixtureFs) {
    let dir = tempfile::tempdir().expect("temporary directory");
    fixture::write_host(dir.path(), &FixtureSpec::two_socket_64_cpus()).expect("fixture tree");
    let fs = FixtureFs::open(dir.path()).expect("fixture opens");
    (dir, fs)
}

/// Every file of the host tree except the fixture's own markers and the agent's journal.
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fixture::host_files(root).expect("a readable fixture tree")
}

fn plan_for(
    fs: &dyn HostFs,
    spec: &NodeTuningProfileSpec,
    options: &PlanOptions,
) -> Result<Plan, PlanError> {
    let host = host::read(fs).expect("fixture host reads");
    plan::plan(&host, spec, options)
}

fn options_from_journal(fs: &dyn HostFs) -> PlanOptions {
    PlanOptions {
        known_managed_irqs: Journal::load(fs).expect("journal").managed_irqs,
        ..PlanOptions::default()
    }
}

fn change<'a>(plan: &'a Plan, setting_prefix: &str) -> &'a plan::Change {
    plan.changes
        .iter()
        .find(|c| c.setting.starts_with(setting_prefix))
        .unwrap_or_else(|| panic!("no change for {setting_prefix}: {:#?}", plan.changes))
}

#[test]
fn host_model_reads_the_fixture() {
    let (_dir, fs) = fixture();
    let host = host::read(&fs).unwrap();
    assert_eq!(host.online.len(), 64);
    assert_eq!(host.numa_nodes.len(), 2);
    assert_eq!(host.numa_nodes[1].cpus.to_string(), "16-31,48-63");
    assert_eq!(host.siblings[&3].to_string(), "3,35");
    let nvme_queue = host.irqs.iter().find(|i| i.name == "nvme1q3").unwrap();
    assert_eq!(nvme_queue.device_numa_node, Some(1));
    assert_eq!(host.thp_enabled.as_ref().unwrap().selected, "always");
    assert_eq!(
        host.sysctl_files["vm.swappiness"].file,
        "/etc/sysctl.d/99-local.conf"
    );
    assert_eq!(
        host.kubelet
            .as_ref()
            .unwrap()
            .as_ref()
            .unwrap()
            .cpu_manager_policy
            .as_deref(),
        Some("none")
    );
}

#[test]
fn plan_lists_every_change_and_what_needs_a_reboot_or_kubelet_restart() {
    let (dir, fs) = fixture();
    let before = snapshot(dir.path());
    let plan = plan_for(&fs, &profile(PROFILE), &PlanOptions::default()).unwrap();
    assert_eq!(snapshot(dir.path()), before, "planning writes nothing");

    let hugepages = change(&plan, "hugepages 2Mi on NUMA node 0");
    assert_eq!(
        (hugepages.current.as_str(), hugepages.desired.as_str()),
        ("0", "1024")
    );
    assert!(matches!(
        hugepages.target,
        Target::Hugepages {
            size_kb: 2048,
            numa_node: Some(0)
        }
    ));
    // IRQs go to reserved CPUs of their device's node; legacy IRQs without a device to all of them.
    assert_eq!(change(&plan, "irq 25 (nvme0q1)").desired, "0,32");
    assert_eq!(change(&plan, "irq 41 (nvme1q0)").desired, "16,48");
    assert_eq!(change(&plan, "irq 1 (i8042)").desired, "0,16,32,48");
    assert_eq!(
        change(&plan, "default IRQ affinity").desired,
        "10001,00010001"
    );
    assert_eq!(change(&plan, "workqueue cpumask").desired, "10001,00010001");
    let ban = change(&plan, "irqbalance");
    assert!(
        ban.desired
            .contains("IRQBALANCE_BANNED_CPULIST=1-15,17-31,33-47,49-63\n")
    );
    assert!(
        ban.desired
            .starts_with("# irqbalance options\nIRQBALANCE_ONESHOT=0\n")
    );
    assert_eq!(change(&plan, "cpu 63 governor").desired, "performance");
    // Only C6 (133 us) exceeds 10 us, and only on isolated CPUs.
    assert!(
        plan.changes
            .iter()
            .any(|c| c.setting == "cpu 1 idle state3 (C6, 133 us) disabled")
    );
    assert!(
        !plan
            .changes
            .iter()
            .any(|c| c.setting.starts_with("cpu 0 idle"))
    );
    assert!(!plan.changes.iter().any(|c| c.setting.contains("C1E")));
    assert_eq!(
        change(&plan, "transparent hugepages enabled").desired,
        "madvise"
    );
    assert_eq!(change(&plan, "ksm run").desired, "1");
    assert_eq!(change(&plan, "sysctl vm.swappiness").desired, "10");
    assert_eq!(change(&plan, "sysctl kernel.numa_balancing").desired, "0");
    assert!(
        plan.notes
            .iter()
            .any(|n| n.contains("/etc/sysctl.d/99-local.conf sets 30")),
        "{:#?}",
        plan.notes
    );
    assert!(
        plan.notes
            .iter()
            .any(|n| n.contains("/usr/lib/sysctl.d/50-default.conf sets 1"))
    );
    assert_eq!(
        plan.missing_kernel_args,
        vec![
            "isolcpus=managed_irq,domain,1-15 (booted with isolcpus=4-7)",
            "nohz_full=1-15"
        ]
    );
    assert!(plan.reboot_required());
    assert!(plan.kubelet_restart_required);
    assert_eq!(
        plan.kubelet_mismatches.len(),
        2,
        "{:#?}",
        plan.kubelet_mismatches
    );
    assert!(
        !plan.notes.iter().any(|n| n.contains("shares its core")),
        "siblings are isolated together"
    );
}

#[test]
fn apply_reads_back_journals_originals_and_reports_managed_irqs() {
    let (_dir, fs) = fixture();
    let spec = profile(PROFILE);
    let plan = plan_for(&fs, &spec, &PlanOptions::default()).unwrap();
    let report = apply::apply(&fs, &plan).unwrap();
    let managed: Vec<_> = report
        .unchangeable
        .iter()
        .filter(|u| u.reason.contains("kernel-managed"))
        .collect();
    assert_eq!(
        managed.len(),
        16,
        "8 queue IRQs on each NVMe controller refuse their affinity"
    );
    assert!(report.shortfalls.is_empty());
    assert_eq!(report.applied.len(), plan.changes.len() - 16);
    assert_eq!(
        fs.read_trimmed("sys/kernel/mm/transparent_hugepage/enabled")
            .unwrap(),
        "always [madvise] never"
    );
    assert_eq!(
        fs.read_trimmed("proc/irq/41/effective_affinity_list")
            .unwrap(),
        "16"
    );

    let journal = Journal::load(&fs).unwrap();
    assert_eq!(journal.managed_irqs.len(), 16);
    assert_eq!(
        journal.originals["proc/sys/vm/swappiness"].value.as_deref(),
        Some("60")
    );
    assert!(
        !journal
            .originals
            .contains_key("proc/irq/25/smp_affinity_list"),
        "refused writes changed nothing"
    );

    let again = plan_for(&fs, &spec, &options_from_journal(&fs)).unwrap();
    assert!(
        again.changes.is_empty(),
        "a second plan finds nothing to do: {:#?}",
        again.changes
    );
    assert_eq!(
        again.unchangeable.len(),
        16,
        "managed IRQs are known from the journal"
    );
}

#[test]
fn drift_is_found_and_corrected_and_the_journal_keeps_the_first_original() {
    let (_dir, fs) = fixture();
    let spec = profile(PROFILE);
    apply::apply(&fs, &plan_for(&fs, &spec, &PlanOptions::default()).unwrap()).unwrap();
    fs.tamper("proc/sys/vm/swappiness", "35").unwrap();
    fs.tamper("proc/irq/40/smp_affinity_list", "0-63").unwrap();
    let drift = plan_for(&fs, &spec, &options_from_journal(&fs)).unwrap();
    let drifted: Vec<&str> = drift.changes.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(
        drifted,
        vec!["proc/irq/40/smp_affinity_list", "proc/sys/vm/swappiness"]
    );
    apply::apply(&fs, &drift).unwrap();
    assert_eq!(fs.read_trimmed("proc/sys/vm/swappiness").unwrap(), "10");
    assert_eq!(
        Journal::load(&fs).unwrap().originals["proc/sys/vm/swappiness"]
            .value
            .as_deref(),
        Some("60"),
        "the drifted value is not the host's original"
    );
}

#[test]
fn restore_returns_the_host_exactly_to_where_it_started() {
    let (dir, fs) = fixture();
    let before = snapshot(dir.path());
    apply::apply(
        &fs,
        &plan_for(&fs, &profile(PROFILE), &PlanOptions::default()).unwrap(),
    )
    .unwrap();
    assert_ne!(snapshot(dir.path()), before);
    let report = apply::restore(&fs).unwrap();
    assert!(report.failed.is_empty(), "{:#?}", report.failed);
    assert_eq!(snapshot(dir.path()), before);
    let journal = Journal::load(&fs).unwrap();
    assert!(
        journal.originals.is_empty(),
        "restored values are forgotten"
    );
    assert_eq!(
        journal.managed_irqs.len(),
        16,
        "what the kernel refuses stays known"
    );
}

#[test]
fn a_failed_write_rolls_back_this_apply_and_nothing_else() {
    let (dir, fs) = fixture();
    let spec = profile(
        "cpu: {reserved: '0', isolated: '1-3'}\ntransparentHugepages: never\nsysctls: {vm.swappiness: '5', vm.dirty_ratio: '30'}\n",
    );
    // An earlier apply changed THP; the failing apply must leave that alone.
    let thp_only = profile("cpu: {reserved: '0'}\ntransparentHugepages: never\n");
    apply::apply(
        &fs,
        &plan_for(&fs, &thp_only, &PlanOptions::default()).unwrap(),
    )
    .unwrap();
    let before = snapshot(dir.path());
    fs.refuse_writes("proc/sys/vm/swappiness");
    let plan = plan_for(&fs, &spec, &PlanOptions::default()).unwrap();
    let error = apply::apply(&fs, &plan).unwrap_err();
    let ApplyError::Write {
        setting, rollback, ..
    } = &error
    else {
        panic!("{error}")
    };
    assert_eq!(setting, "sysctl vm.swappiness");
    assert!(rollback.failures.is_empty());
    let earlier = plan
        .changes
        .iter()
        .take_while(|c| c.setting != "sysctl vm.swappiness")
        .count();
    assert_eq!(
        rollback.restored,
        earlier - 16,
        "all but the refused NVMe queue IRQs were written: {rollback}"
    );
    assert!(
        error.to_string().contains("Operation not permitted"),
        "{error}"
    );
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn refusals_explain_themselves_and_write_nothing() {
    let (dir, fs) = fixture();
    let before = snapshot(dir.path());
    let cases = [
        (
            "cpu: {reserved: '0', isolated: '60-70'}",
            "cpu.isolated names CPUs 64-70 that are not online on this host (online: 0-63)",
        ),
        (
            "cpu: {reserved: '0'}\nhugepages: [{size: 1Gi, count: 110}]",
            "hugepages: the profile asks for 112640 MiB of hugepages, more than 80 % of this host's 131072 MiB of memory (104857 MiB)",
        ),
        (
            "cpu: {reserved: '0'}\nhugepages: [{size: 2Mi, count: 8, numaNode: 3}]",
            "hugepages: NUMA node 3 does not exist on this host (nodes: 0-1)",
        ),
        (
            "cpu: {reserved: '0'}\nsysctls: {kernel.panic: '1'}",
            "invalid profile: sysctl kernel.panic is not on the allowlist",
        ),
        (
            "cpu: {reserved: '0-3', isolated: '3-5'}",
            "invalid profile: cpu.reserved and cpu.isolated overlap on CPUs 3",
        ),
    ];
    for (yaml, message) in cases {
        let error = plan_for(&fs, &profile(yaml), &PlanOptions::default())
            .unwrap_err()
            .to_string();
        assert!(error.starts_with(message), "{yaml}:\n{error}");
    }
    let generous = PlanOptions {
        max_hugepage_percent: 90,
        ..PlanOptions::default()
    };
    plan_for(
        &fs,
        &profile("cpu: {reserved: '0'}\nhugepages: [{size: 1Gi, count: 110}]"),
        &generous,
    )
    .expect("a larger share is allowed when configured");
    let outside = fs.write("etc/passwd", "x").unwrap_err().to_string();
    assert!(outside.contains("not one of the tuning paths"), "{outside}");
    assert_eq!(snapshot(dir.path()), before);
}

#[test]
fn hugepage_shortfalls_and_unobtainable_1g_pages_are_reported_with_free_memory() {
    let dir = tempfile::tempdir().unwrap();
    fixture::write_host(dir.path(), &FixtureSpec::two_socket_64_cpus()).unwrap();
    std::fs::write(
        dir.path().join(HUGEPAGE_LIMITS),
        "sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages 300\n",
    )
    .unwrap();
    let fs = FixtureFs::open(dir.path()).unwrap();
    // Node 1 has 57.6 GiB free: 60 pages of 1 GiB cannot fit.
    let spec = profile(
        "cpu: {reserved: '0'}\nhugepages: [{size: 2Mi, count: 1024, numaNode: 0}, {size: 1Gi, count: 60, numaNode: 1}]\n",
    );
    let plan = plan_for(&fs, &spec, &PlanOptions::default()).unwrap();
    let one_gig = plan
        .unchangeable
        .iter()
        .find(|u| u.setting == "hugepages 1Gi on NUMA node 1")
        .unwrap();
    assert!(
        one_gig
            .reason
            .contains("boot with hugepagesz=1G hugepages=60"),
        "{}",
        one_gig.reason
    );
    let report = apply::apply(&fs, &plan).unwrap();
    assert_eq!(report.shortfalls.len(), 1);
    let shortfall = &report.shortfalls[0];
    assert_eq!((shortfall.got, shortfall.wanted), (300, 1024));
    assert!(
        shortfall
            .message
            .contains("free memory there now: 58982 MiB"),
        "{}",
        shortfall.message
    );
}

#[test]
fn ksm_is_left_to_kubevirt_and_missing_facilities_are_noted() {
    let (dir, fs) = fixture();
    std::fs::remove_file(dir.path().join("etc/default/irqbalance")).unwrap();
    std::fs::remove_file(dir.path().join("usr/sbin/irqbalance")).unwrap();
    for cpu in 0..64 {
        std::fs::remove_dir_all(
            dir.path()
                .join(format!("sys/devices/system/cpu/cpu{cpu}/cpufreq")),
        )
        .unwrap();
    }
    let spec = profile(
        "cpu: {reserved: '0', isolated: '1-3'}\nksm: {enabled: true}\npower: {governor: performance}\n",
    );
    let options = PlanOptions {
        ksm_handled_by_kubevirt: true,
        ..PlanOptions::default()
    };
    let plan = plan_for(&fs, &spec, &options).unwrap();
    assert!(!plan.changes.iter().any(|c| c.path.contains("ksm")));
    for expected in [
        "left to KubeVirt's KSM handler",
        "irqbalance is not installed",
        "no cpufreq driver",
    ] {
        assert!(
            plan.notes.iter().any(|n| n.contains(expected)),
            "{expected}: {:#?}",
            plan.notes
        );
    }
}

#[test]
fn an_irqbalance_config_the_agent_created_is_removed_on_restore() {
    let (dir, fs) = fixture();
    std::fs::remove_file(dir.path().join("etc/default/irqbalance")).unwrap();
    let before = snapshot(dir.path());
    let spec = profile("cpu: {reserved: '0,32', isolated: '1-31,33-63'}\n");
    let plan = plan_for(&fs, &spec, &PlanOptions::default()).unwrap();
    assert_eq!(change(&plan, "irqbalance").path, "etc/default/irqbalance");
    apply::apply(&fs, &plan).unwrap();
    assert_eq!(
        fs.read("etc/default/irqbalance").unwrap(),
        "IRQBALANCE_BANNED_CPULIST=1-31,33-63\n"
    );
    apply::restore(&fs).unwrap();
    assert_eq!(
        snapshot(dir.path()),
        before,
        "the created file is gone again"
    );
}

#[test]
fn the_benchmark_host_applies_and_then_holds_a_steady_state() {
    let args = fastvirt_agent::cli::BenchArgs {
        runs: 1,
        rechecks: 1,
        interval: std::time::Duration::from_secs(30),
        write_docs: None,
    };
    // bench::run fails if a re-check after the apply still finds changes.
    let results = fastvirt_agent::bench::run(&args).unwrap();
    assert_eq!((results.cpus, results.irqs), (256, 4004));
    assert!(results.changes > 4000, "{} changes", results.changes);
    assert!(results.rss_peak_mib > 0.0);
}

#[test]
fn settings_a_new_profile_no_longer_wants_are_reverted() {
    let (_dir, fs) = fixture();
    let first = profile(
        "cpu: {reserved: '0'}\ntransparentHugepages: never\nsysctls: {vm.swappiness: '10'}\n",
    );
    apply::apply(
        &fs,
        &plan_for(&fs, &first, &PlanOptions::default()).unwrap(),
    )
    .unwrap();
    let second = profile("cpu: {reserved: '0'}\ntransparentHugepages: never\n");
    let report = apply::apply(
        &fs,
        &plan_for(&fs, &second, &PlanOptions::default()).unwrap(),
    )
    .unwrap();
    assert_eq!(report.reverted.len(), 1, "{:#?}", report.reverted);
    assert_eq!(report.reverted[0].setting, "sysctl vm.swappiness");
    assert_eq!(fs.read_trimmed("proc/sys/vm/swappiness").unwrap(), "60");
    let journal = Journal::load(&fs).unwrap();
    assert!(!journal.originals.contains_key("proc/sys/vm/swappiness"));
    assert!(
        journal
            .originals
            .contains_key("sys/kernel/mm/transparent_hugepage/enabled")
    );
}

#[test]
fn debugfs_flags_mark_managed_irqs_before_any_write() {
    let (dir, fs) = fixture();
    let flags = dir.path().join("sys/kernel/debug/irq/irqs");
    std::fs::create_dir_all(&flags).unwrap();
    std::fs::write(
        flags.join("25"),
        "handler:  handle_edge_irq\ndstate:   0x3540a200\n            IRQD_AFFINITY_MANAGED\n",
    )
    .unwrap();
    std::fs::write(
        flags.join("24"),
        "handler:  handle_edge_irq\ndstate:   0x00400200\n",
    )
    .unwrap();
    let plan = plan_for(
        &fs,
        &profile("cpu: {reserved: '0'}\n"),
        &PlanOptions::default(),
    )
    .unwrap();
    assert!(
        plan.unchangeable
            .iter()
            .any(|u| u.setting == "irq 25 (nvme0q1) affinity")
    );
    assert!(
        !plan
            .changes
            .iter()
            .any(|c| c.path == "proc/irq/25/smp_affinity_list")
    );
    assert!(
        plan.changes
            .iter()
            .any(|c| c.path == "proc/irq/24/smp_affinity_list")
    );
}
