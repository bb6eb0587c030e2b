//! Congestion rates from each source, on fixture /proc trees with known counters.

use fastvirt_agent::congestion::{self, Source};
use fastvirt_agent::hostfs::RealHostFs;
use fastvirt_api::cpuset::CpuSet;
use std::path::Path;

const SECOND: u64 = 1_000_000_000;

fn put(root: &Path, path: &str, content: &str) {
    let full = root.join(path);
    std::fs::create_dir_all(full.parent().unwrap()).unwrap();
    std::fs::write(full, content).unwrap();
}

fn schedstat(cpus: &[(u64, u64)]) -> String {
    let mut text = "version 15\ntimestamp 100\n".to_owned();
    for (cpu, (run, wait)) in cpus.iter().enumerate() {
        text.push_str(&format!("cpu{cpu} 0 0 0 0 0 0 {run} {wait} 10\n"));
    }
    text
}

#[test]
fn schedstat_tells_bursty_congestion_from_busy_but_uncontended_cpus() {
    let dir = tempfile::tempdir().unwrap();
    let fs = RealHostFs::new(dir.path());
    put(
        dir.path(),
        "proc/schedstat",
        &schedstat(&[(0, 0), (0, 0), (0, 0)]),
    );
    assert_eq!(congestion::detect(&fs).unwrap(), Source::Schedstat);
    let before = congestion::sample(&fs, Source::Schedstat, 0).unwrap();
    // Over one second: CPU 0 ran 20 % with 40 % waits (bursty), CPU 1 ran 100 % with no waits,
    // CPU 2 (isolated) ran 90 % with 5 % waits.
    put(
        dir.path(),
        "proc/schedstat",
        &schedstat(&[
            (SECOND / 5, SECOND * 2 / 5),
            (SECOND, 0),
            (SECOND * 9 / 10, SECOND / 20),
        ]),
    );
    let after = congestion::sample(&fs, Source::Schedstat, SECOND).unwrap();
    let report = congestion::rates(&before, &after, &CpuSet::parse("2").unwrap()).unwrap();
    let cpu = |n: usize| &report.cpus[n];
    assert_eq!(
        (
            cpu(0).utilisation_percent,
            cpu(0).wait_percent,
            cpu(0).bursty
        ),
        (20.0, 40.0, true)
    );
    assert_eq!(
        (
            cpu(1).utilisation_percent,
            cpu(1).wait_percent,
            cpu(1).bursty
        ),
        (100.0, 0.0, false)
    );
    assert!(cpu(2).isolated && !cpu(2).bursty);
    let summary = report.summary();
    assert_eq!(summary.source, "schedstat");
    assert_eq!(summary.wait_percent, 15.0);
    assert_eq!(summary.isolated_wait_percent, Some(5.0));
    assert_eq!(summary.bursty_cpus, "0");
}

fn task(root: &Path, pid: u32, tid: u32, comm: &str, cpu: u32, wait_ns: u64) {
    let dir = format!("proc/{pid}/task/{tid}");
    put(
        root,
        &format!("{dir}/schedstat"),
        &format!("1000 {wait_ns} 5\n"),
    );
    put(root, &format!("{dir}/comm"), &format!("{comm}\n"));
    let fields: Vec<String> = (4..=38).map(|i| i.to_string()).collect();
    put(
        root,
        &format!("{dir}/stat"),
        &format!("{tid} ({comm}) S {} {cpu} 0 0\n", fields.join(" ")),
    );
}

#[test]
fn per_task_fallback_attributes_waits_to_cpus_and_sums_vcpu_threads_per_vm() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let fs = RealHostFs::new(root);
    put(root, "proc/self/schedstat", "0 0 0\n");
    put(
        root,
        "proc/stat",
        "cpu  0 0 0 0 0 0 0 0 0 0\ncpu0 0 0 0 0 0 0 0 0 0 0\ncpu1 0 0 0 0 0 0 0 0 0 0\n",
    );
    put(
        root,
        "proc/pressure/cpu",
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
    );
    put(
        root,
        "proc/4242/cmdline",
        "/usr/bin/qemu-kvm\0-name\0guest=default_fedora,debug-threads=on\0-m\x001024\0",
    );
    put(root, "proc/4242/comm", "qemu-kvm\n");
    task(root, 4242, 4242, "qemu-kvm", 0, 0);
    task(root, 4242, 4250, "CPU 0/KVM", 1, 0);
    task(root, 4242, 4251, "CPU 1/KVM", 1, 0);
    task(root, 17, 17, "kworker/0:1", 0, 0);
    assert_eq!(congestion::detect(&fs).unwrap(), Source::TaskSchedstat);
    let before = congestion::sample(&fs, Source::TaskSchedstat, 0).unwrap();

    // One second later: CPU 0 was busy 30 % (30 ticks), CPU 1 idle. The vCPU threads waited 200
    // and 100 ms on CPU 1; the kworker 50 ms on CPU 0; PSI saw some waiting for 250 ms.
    put(
        root,
        "proc/stat",
        "cpu  0 0 0 0 0 0 0 0 0 0\ncpu0 20 0 10 70 0 0 0 0 0 0\ncpu1 0 0 0 100 0 0 0 0 0 0\n",
    );
    put(
        root,
        "proc/pressure/cpu",
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=250000\n",
    );
    task(root, 4242, 4250, "CPU 0/KVM", 1, 200_000_000);
    task(root, 4242, 4251, "CPU 1/KVM", 1, 100_000_000);
    task(root, 17, 17, "kworker/0:1", 0, 50_000_000);
    let after = congestion::sample(&fs, Source::TaskSchedstat, SECOND).unwrap();
    let report = congestion::rates(&before, &after, &CpuSet::parse("1").unwrap()).unwrap();
    assert_eq!(
        (
            report.cpus[0].utilisation_percent,
            report.cpus[0].wait_percent
        ),
        (30.0, 5.0)
    );
    assert_eq!(
        (
            report.cpus[1].utilisation_percent,
            report.cpus[1].wait_percent
        ),
        (0.0, 30.0)
    );
    assert!(report.cpus[1].bursty, "an idle CPU with waits: bursty");
    assert_eq!(report.psi_some_percent, Some(25.0));
    assert_eq!(report.vms.len(), 1);
    let vm = &report.vms[0];
    assert_eq!(
        (vm.pid, vm.name.as_str(), vm.vcpus, vm.vcpu_wait_percent),
        (4242, "default_fedora", 2, 15.0)
    );
    assert_eq!(report.summary().isolated_wait_percent, Some(30.0));
}

#[test]
fn psi_only_hosts_report_a_node_wide_share_and_no_source_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let fs = RealHostFs::new(dir.path());
    assert!(
        congestion::detect(&fs)
            .unwrap_err()
            .to_string()
            .contains("no source of run-queue wait times")
    );
    put(
        dir.path(),
        "proc/pressure/cpu",
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=1000\n",
    );
    let before = congestion::sample(&fs, Source::Psi, 0).unwrap();
    put(
        dir.path(),
        "proc/pressure/cpu",
        "some avg10=0.00 avg60=0.00 avg300=0.00 total=101000\n",
    );
    let after = congestion::sample(&fs, Source::Psi, 2 * SECOND).unwrap();
    let report = congestion::rates(&before, &after, &CpuSet::default()).unwrap();
    assert!(report.cpus.is_empty());
    assert_eq!(report.summary().wait_percent, 5.0);
    assert_eq!(report.summary().source, "psi");
}

#[test]
fn device_interrupt_rates_show_whether_isolated_cpus_are_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let fs = RealHostFs::new(dir.path());
    let interrupts = |on_cpu0: u64, on_cpu1: u64| {
        format!(
            "           CPU0       CPU1\n 36: {on_cpu0:>10} {on_cpu1:>10}  PCI-MSIX-0000:00:02.0  1-edge  virtio1-req.0\n\
             LOC:    5000000    5000000   Local timer interrupts\n"
        )
    };
    put(dir.path(), "proc/schedstat", &schedstat(&[(0, 0), (0, 0)]));
    put(dir.path(), "proc/interrupts", &interrupts(100, 7));
    let before = congestion::sample(&fs, Source::Schedstat, 0)
        .unwrap()
        .with_device_interrupts(&fs);
    put(dir.path(), "proc/interrupts", &interrupts(2100, 7));
    let after = congestion::sample(&fs, Source::Schedstat, 2 * SECOND)
        .unwrap()
        .with_device_interrupts(&fs);
    let report = congestion::rates(&before, &after, &CpuSet::parse("1").unwrap()).unwrap();
    assert_eq!(report.cpus[0].device_interrupts_per_second, Some(1000.0));
    assert_eq!(
        report.cpus[1].device_interrupts_per_second,
        Some(0.0),
        "the timer (LOC) is not a device"
    );
    let plain = congestion::rates(
        &congestion::sample(&fs, Source::Schedstat, 0).unwrap(),
        &after,
        &CpuSet::default(),
    )
    .unwrap();
    assert_eq!(
        plain.cpus[0].device_interrupts_per_second, None,
        "only measured when both samples have it"
    );
}
