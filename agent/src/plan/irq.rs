//! Where device interrupts go: every IRQ that can move to the reserved CPUs (on the device's NUMA
//! node where it has some), the default affinity for new ones, and irqbalance's ban list so that
//! it never puts one back on an isolated CPU. IRQs the kernel manages are reported, not written.

use super::{Compare, PlanOptions, Planner, Target};
use crate::cpumask;
use crate::host::DEFAULT_SMP_AFFINITY;
use fastvirt_api::cpuset::CpuSet;

/// The irqbalance setting that lists the CPUs it never routes an IRQ to.
pub const IRQBALANCE_BAN_KEY: &str = "IRQBALANCE_BANNED_CPULIST";

pub(super) fn plan_irqs(planner: &mut Planner, reserved: &CpuSet, options: &PlanOptions) {
    let host = planner.host;
    for irq in &host.irqs {
        let label = if irq.name.is_empty() {
            format!("irq {} affinity", irq.number)
        } else {
            format!("irq {} ({}) affinity", irq.number, irq.name)
        };
        if irq.managed || options.known_managed_irqs.contains(&irq.number) {
            planner.unchangeable(
                label,
                "kernel-managed IRQ: its driver spreads queue interrupts over CPUs itself and the \
                 kernel refuses other affinities; keep it off isolated CPUs with the \
                 isolcpus=managed_irq,... kernel argument"
                    .to_owned(),
            );
            continue;
        }
        let local = irq
            .device_numa_node
            .and_then(|node| host.numa_node(node))
            .map(|node| node.cpus.intersection(reserved))
            .filter(|cpus| !cpus.is_empty());
        let desired = local.unwrap_or_else(|| reserved.clone());
        planner.want(
            label,
            format!("proc/irq/{}/smp_affinity_list", irq.number),
            Some(irq.affinity.clone()),
            desired.to_string(),
            Compare::CpuList,
            Target::IrqAffinity { irq: irq.number },
        );
    }
    planner.want(
        "default IRQ affinity".to_owned(),
        DEFAULT_SMP_AFFINITY.to_owned(),
        host.default_smp_affinity.as_ref().map(cpumask::format),
        cpumask::format(reserved),
        Compare::CpuMask,
        Target::Knob,
    );
}

/// The irqbalance environment file with the ban list set to `isolated`.
pub fn with_ban_list(config: &str, isolated: &CpuSet) -> String {
    let line = format!("{IRQBALANCE_BAN_KEY}={isolated}");
    let mut replaced = false;
    let mut lines: Vec<String> = config
        .lines()
        .map(|l| {
            if l.trim_start()
                .starts_with(&format!("{IRQBALANCE_BAN_KEY}="))
            {
                replaced = true;
                line.clone()
            } else {
                l.to_owned()
            }
        })
        .collect();
    if !replaced {
        lines.push(line);
    }
    lines.join("\n") + "\n"
}

pub(super) fn plan_irqbalance(planner: &mut Planner, isolated: &CpuSet) {
    let irqbalance = &planner.host.irqbalance;
    let (path, content) = match (&irqbalance.config, irqbalance.installed) {
        (Some((path, content)), _) => (path.clone(), content.clone()),
        (None, true) => (crate::host::IRQBALANCE_CONFIGS[0].to_owned(), String::new()),
        (None, false) => {
            planner.note(
                "irqbalance is not installed: no ban list to set, IRQ affinity stays as the agent \
                 sets it"
                    .to_owned(),
            );
            return;
        }
    };
    if content.contains("IRQBALANCE_BANNED_CPUS=") {
        planner.note(format!(
            "/{path} also sets the older IRQBALANCE_BANNED_CPUS mask; irqbalance prefers \
             {IRQBALANCE_BAN_KEY}"
        ));
    }
    let desired = with_ban_list(&content, isolated);
    if desired != content {
        planner.note(
            "irqbalance reads its ban list when it starts: restart irqbalance once to use it"
                .to_owned(),
        );
    }
    planner.want(
        format!("irqbalance {IRQBALANCE_BAN_KEY}"),
        path,
        Some(content),
        desired,
        Compare::File,
        Target::ConfigFile,
    );
}
