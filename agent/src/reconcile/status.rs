//! The TunedNode status of one pass: what is applied (from the journal), what cannot change,
//! the missing kernel arguments, what the kubelet does not yet run, the congestion measured, and
//! conditions that keep their transition times while their status stays.

use super::{Agent, HostOutcome, ReconcileError};
use crate::congestion::{self, Source};
use crate::host;
use crate::journal::Journal;
use crate::kubelet_drop_in;
use crate::plan;
use crate::status_lines;
use fastvirt_api::cpuset::CpuSet;
use fastvirt_api::quantity;
use fastvirt_api::{Condition, TunedNodeStatus};
use k8s_openapi::api::core::v1::Node;

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// A condition that keeps its transition time while its status stays the same.
fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_owned();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .and_then(|c| c.last_transition_time.clone())
        .or_else(|| Some(now()));
    Condition {
        type_: type_.to_owned(),
        status,
        reason: reason.to_owned(),
        message,
        last_transition_time,
        observed_generation: None,
    }
}

impl Agent {
    /// With the drop-in managed: what the running kubelet does not yet do of it, and what a
    /// restart would break.
    fn kubelet_drop_in_reasons(&self, static_memory: bool) -> Vec<String> {
        let dirs = &self.config.kubelet_dirs;
        let fs = self.fs.as_ref();
        let (mut differing, hazards) = kubelet_drop_in::differences(
            dirs,
            fs.modified(&dirs.drop_in()),
            static_memory,
            &kubelet_drop_in::running(fs, dirs),
        );
        differing.extend(hazards);
        differing
    }

    /// Kubelet's hugepage capacity against the host's pools: they differ until it restarts.
    fn hugepage_capacity_mismatches(&self, node: &Node) -> Vec<String> {
        let pools = host::hugepage_pools(self.fs.as_ref(), host::GLOBAL_HUGEPAGES_DIR);
        let capacity = node.status.as_ref().and_then(|s| s.capacity.as_ref());
        let mut mismatches = Vec::new();
        for (size_kb, pages) in &pools {
            let resource = format!("hugepages-{}", plan::size_name(*size_kb));
            let reported = capacity
                .and_then(|c| c.get(&resource))
                .and_then(|q| quantity::bytes(&q.0).ok())
                .unwrap_or(0);
            let on_host = pages * size_kb * 1024;
            if reported != on_host {
                mismatches.push(format!(
                    "the kubelet reports {resource} capacity of {} MiB, the host has {} MiB: restart the kubelet",
                    reported >> 20,
                    on_host >> 20
                ));
            }
        }
        mismatches
    }

    pub(super) fn status(
        &self,
        outcome: &HostOutcome,
        node: &Node,
    ) -> Result<TunedNodeStatus, ReconcileError> {
        let current = Journal::load(self.fs.as_ref())?.current_values(self.fs.as_ref());
        let applied = status_lines::fold(current.iter().map(|(s, v)| (s.as_str(), v.as_str())));
        let mut unchangeable_items: Vec<(String, String)> = Vec::new();
        if let Some(report) = &outcome.report {
            unchangeable_items.extend(
                report
                    .unchangeable
                    .iter()
                    .map(|u| (u.setting.clone(), u.reason.clone())),
            );
            unchangeable_items.extend(
                report
                    .shortfalls
                    .iter()
                    .map(|s| (s.setting.clone(), s.message.clone())),
            );
        }
        let unchangeable = status_lines::fold(
            unchangeable_items
                .iter()
                .map(|(s, r)| (s.as_str(), r.as_str())),
        );
        let plan = outcome.plan.as_ref();
        let missing_kernel_args = plan
            .map(|p| p.missing_kernel_args.clone())
            .unwrap_or_default();
        let mut kubelet_reasons: Vec<String> = plan
            .map(|p| p.kubelet_mismatches.clone())
            .unwrap_or_default();
        if outcome.manages_kubelet_drop_in {
            kubelet_reasons.extend(self.kubelet_drop_in_reasons(outcome.drop_in_static_memory));
        }
        if outcome.profile.is_some() {
            kubelet_reasons.extend(self.hugepage_capacity_mismatches(node));
        }
        let congestion = self.measure_congestion(&outcome.isolated);
        let mut state = self.state();
        let previous = state.previous_conditions.clone();
        let reboot_required = !missing_kernel_args.is_empty();
        let kubelet_restart_required = !kubelet_reasons.is_empty();
        let conditions = vec![
            condition(
                &previous,
                "Applied",
                outcome.applied.0,
                outcome.applied.1,
                outcome.applied.2.clone(),
            ),
            condition(
                &previous,
                "Degraded",
                outcome.degraded.0,
                outcome.degraded.1,
                outcome.degraded.2.clone(),
            ),
            condition(
                &previous,
                "RebootRequired",
                reboot_required,
                if reboot_required {
                    "KernelArgumentsMissing"
                } else {
                    "KernelArgumentsPresent"
                },
                missing_kernel_args.join(" "),
            ),
            condition(
                &previous,
                "KubeletRestartRequired",
                kubelet_restart_required,
                if kubelet_restart_required {
                    "KubeletOutOfDate"
                } else {
                    "KubeletUpToDate"
                },
                kubelet_reasons.join("; "),
            ),
        ];
        state.previous_conditions = conditions.clone();
        self.metrics.applied_settings.set(current.len() as i64);
        self.metrics
            .unchangeable_settings
            .set(unchangeable_items.len() as i64);
        self.metrics.reboot_required.set(i64::from(reboot_required));
        self.metrics
            .kubelet_restart_required
            .set(i64::from(kubelet_restart_required));
        Ok(TunedNodeStatus {
            profile: outcome.profile.clone(),
            profile_generation: outcome.generation,
            applied,
            unchangeable,
            drift_corrections: state.drift_corrections,
            missing_kernel_args,
            reboot_required,
            kubelet_restart_required,
            congestion,
            conditions,
        })
    }

    /// Rates since the previous reconcile; `None` on the first one or without a source.
    fn measure_congestion(
        &self,
        isolated: &CpuSet,
    ) -> Option<fastvirt_api::tuned_node::CongestionSummary> {
        let source: Source = congestion::detect(self.fs.as_ref()).ok()?;
        let sample =
            congestion::sample(self.fs.as_ref(), source, congestion::monotonic_ns()).ok()?;
        let previous = self.state().congestion.replace(sample.clone())?;
        let report = congestion::rates(&previous, &sample, isolated).ok()?;
        self.metrics.record_congestion(&report);
        Some(report.summary())
    }
}
