//! Human-readable output of plans, apply and restore reports and congestion measurements.

use crate::apply::{ApplyReport, RestoreReport};
use crate::congestion::CongestionReport;
use crate::plan::{Change, Compare, IRQBALANCE_BAN_KEY, Plan};
use std::fmt::Write as _;

/// A configuration file is shown by the line the agent manages, not whole.
fn shown(change: &Change, value: &str) -> String {
    if change.compare != Compare::File {
        return value.to_owned();
    }
    value
        .lines()
        .find_map(|l| l.trim().strip_prefix(&format!("{IRQBALANCE_BAN_KEY}=")))
        .map_or_else(|| "(unset)".to_owned(), str::to_owned)
}

fn table(rows: &[[String; 3]]) -> String {
    let width = |i: usize| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0);
    let (w0, w1) = (width(0), width(1));
    let mut out = String::new();
    for row in rows {
        let _ = writeln!(out, "{:<w0$}  {:<w1$}  {}", row[0], row[1], row[2]);
    }
    out
}

pub fn plan(plan: &Plan) -> String {
    let mut out = String::new();
    if plan.changes.is_empty() {
        let _ = writeln!(
            out,
            "No changes: {} setting(s) already as the profile wants.",
            plan.in_place
        );
    } else {
        let mut rows = vec![[
            "SETTING".to_owned(),
            "CURRENT".to_owned(),
            "DESIRED".to_owned(),
        ]];
        rows.extend(plan.changes.iter().map(|c| {
            [
                c.setting.clone(),
                shown(c, &c.current),
                shown(c, &c.desired),
            ]
        }));
        out.push_str(&table(&rows));
        let _ = writeln!(
            out,
            "\n{} change(s); {} setting(s) already as wanted.",
            plan.changes.len(),
            plan.in_place
        );
    }
    section(
        &mut out,
        "Cannot change at runtime",
        plan.unchangeable
            .iter()
            .map(|u| format!("{}: {}", u.setting, u.reason)),
    );
    section(
        &mut out,
        "Reboot required: kernel arguments missing from /proc/cmdline",
        plan.missing_kernel_args.iter().cloned(),
    );
    section(&mut out, "Kubelet", plan.kubelet_mismatches.iter().cloned());
    if plan.kubelet_restart_required {
        let _ = writeln!(out, "Kubelet restart required.");
    }
    section(&mut out, "Notes", plan.notes.iter().cloned());
    out
}

fn section(out: &mut String, title: &str, lines: impl Iterator<Item = String>) {
    let lines: Vec<String> = lines.collect();
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{title}:");
    for line in lines {
        let _ = writeln!(out, "  - {line}");
    }
}

pub fn apply(report: &ApplyReport) -> String {
    let mut out = format!(
        "Applied and verified {} setting(s).\n",
        report.applied.len()
    );
    section(
        &mut out,
        "Applied",
        report
            .applied
            .iter()
            .map(|a| format!("{}: {}", a.setting, a.value)),
    );
    section(
        &mut out,
        "Unchangeable",
        report
            .unchangeable
            .iter()
            .map(|u| format!("{}: {}", u.setting, u.reason)),
    );
    section(
        &mut out,
        "Hugepage shortfalls",
        report.shortfalls.iter().map(|s| s.message.clone()),
    );
    section(&mut out, "Pending", report.pending.iter().cloned());
    section(
        &mut out,
        "Reverted (no longer in the profile)",
        report
            .reverted
            .iter()
            .map(|a| format!("{}: {}", a.setting, a.value)),
    );
    section(
        &mut out,
        "Could not revert",
        report.revert_failures.iter().cloned(),
    );
    out
}

pub fn restore(report: &RestoreReport) -> String {
    let mut out = format!("Restored {} setting(s).\n", report.restored.len());
    section(
        &mut out,
        "Restored",
        report
            .restored
            .iter()
            .map(|a| format!("{}: {}", a.setting, a.value)),
    );
    section(&mut out, "Gone from the host", report.gone.iter().cloned());
    section(
        &mut out,
        "Failed (kept in the journal)",
        report.failed.iter().cloned(),
    );
    out
}

pub fn congestion(report: &CongestionReport) -> String {
    let mut out = format!(
        "source: {}   interval: {:.1} s\n",
        report.source.name(),
        report.interval_seconds
    );
    if let Some(psi) = report.psi_some_percent {
        let _ = writeln!(out, "cpu pressure (some): {psi:.2} % of the interval");
    }
    if !report.cpus.is_empty() {
        let _ = writeln!(
            out,
            "{:>5}  {:>7}  {:>7}  {:>8}  FLAGS",
            "CPU", "UTIL%", "WAIT%", "DEVIRQ/s"
        );
        for cpu in &report.cpus {
            let mut flags = Vec::new();
            if cpu.isolated {
                flags.push("isolated");
            }
            if cpu.bursty {
                flags.push("bursty");
            }
            let interrupts = cpu
                .device_interrupts_per_second
                .map_or_else(|| "-".to_owned(), |rate| format!("{rate:.1}"));
            let _ = writeln!(
                out,
                "{:>5}  {:>7.2}  {:>7.2}  {:>8}  {}",
                cpu.cpu,
                cpu.utilisation_percent,
                cpu.wait_percent,
                interrupts,
                flags.join(",")
            );
        }
    }
    if !report.vms.is_empty() {
        let _ = writeln!(
            out,
            "\n{:>8}  {:>5}  {:>14}  VM",
            "PID", "VCPUS", "VCPU WAIT%"
        );
        for vm in &report.vms {
            let _ = writeln!(
                out,
                "{:>8}  {:>5}  {:>14.2}  {}",
                vm.pid, vm.vcpus, vm.vcpu_wait_percent, vm.name
            );
        }
    }
    let summary = report.summary();
    let _ = writeln!(out, "\nmean wait: {:.2} %", summary.wait_percent);
    if let Some(isolated) = summary.isolated_wait_percent {
        let _ = writeln!(out, "mean wait on isolated CPUs: {isolated:.2} %");
    }
    if !summary.bursty_cpus.is_empty() {
        let _ = writeln!(
            out,
            "bursty congestion (utilisation < 50 %, wait >= 10 %) on CPUs {}",
            summary.bursty_cpus
        );
    }
    out
}
