//! What the profile means for the kubelet: a restart once hugepage pools change, and either the
//! kubelet drop-in the agent writes (`kubelet.manageDropIn`) or a comparison of the kubelet's
//! configuration file with the profile's CPU partition.

use super::{Compare, PlanOptions, Planner, Target};
use fastvirt_api::NodeTuningProfileSpec;
use fastvirt_api::cpuset::CpuSet;
use fastvirt_api::tuning_profile::ValidatedCpus;

pub(super) fn plan_kubelet(
    planner: &mut Planner,
    profile: &NodeTuningProfileSpec,
    cpus: &ValidatedCpus,
    options: &PlanOptions,
) {
    let drop_in = profile
        .kubelet
        .as_ref()
        .filter(|kubelet| kubelet.manage_drop_in)
        .zip(options.kubelet_drop_in.as_ref());
    plan_config_comparison(planner, &cpus.reserved, &cpus.isolated, drop_in.is_some());
    if let Some((settings, file)) = drop_in {
        if crate::kubelet_drop_in::aligns_memory(settings)
            && options.kubelet_reserved_memory.is_none()
        {
            planner.note(
                "the static memory manager is left out of the kubelet drop-in: the Node reports no \
                 memory capacity and allocatable to take the kubelet's reservation from"
                    .to_owned(),
            );
        }
        planner.want(
            "kubelet drop-in".to_owned(),
            file.path.clone(),
            // An absent drop-in is created (and removed again by a restore).
            Some(file.current.clone().unwrap_or_default()),
            crate::kubelet_drop_in::render(
                settings,
                &cpus.reserved,
                options.kubelet_reserved_memory,
            ),
            Compare::File,
            Target::ConfigFile,
        );
    }
}

/// `drop_in`: the agent writes the kubelet's CPU settings itself, and what the running kubelet does
/// with them is reported apart (see [`crate::kubelet_drop_in::differences`]).
fn plan_config_comparison(
    planner: &mut Planner,
    reserved: &CpuSet,
    isolated: &CpuSet,
    drop_in: bool,
) {
    let hugepages_change = planner
        .plan
        .changes
        .iter()
        .any(|c| matches!(c.target, Target::Hugepages { .. }));
    if hugepages_change {
        planner.plan.kubelet_restart_required = true;
        planner.note(
            "the kubelet reports hugepage capacity from when it started: restart it once the \
             pools are allocated so the new pages become allocatable"
                .to_owned(),
        );
    }
    if drop_in {
        return;
    }
    match &planner.host.kubelet {
        None => planner.note("no kubelet configuration found on this host".to_owned()),
        Some(Err(error)) => planner.note(format!("kubelet configuration unreadable: {error}")),
        Some(Ok(config)) => {
            let mut mismatches = Vec::new();
            let policy = config.cpu_manager_policy.as_deref().unwrap_or("none");
            if !isolated.is_empty() && policy != "static" {
                mismatches.push(format!(
                    "{}: cpuManagerPolicy is {policy}; pinned vCPUs need static",
                    config.path
                ));
            }
            let configured = config
                .reserved_system_cpus
                .as_deref()
                .and_then(|c| CpuSet::parse(c).ok())
                .unwrap_or_default();
            // Without CPU partitioning the profile has no opinion on the kubelet's reserved CPUs.
            if !reserved.is_empty() && &configured != reserved {
                mismatches.push(format!(
                    "{}: reservedSystemCPUs is {:?}, the profile reserves {reserved}",
                    config.path,
                    config.reserved_system_cpus.as_deref().unwrap_or("")
                ));
            }
            if !mismatches.is_empty() {
                planner.plan.kubelet_restart_required = true;
            }
            planner.plan.kubelet_mismatches = mismatches;
        }
    }
}
