//! Prometheus metrics of the agent: tuning state, drift, and per-CPU and per-VM congestion.

use crate::congestion::CongestionReport;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CpuLabels {
    pub cpu: String,
    pub isolated: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VmLabels {
    pub pid: String,
    pub vm: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub drift_corrections: Counter,
    pub rechecks: Counter,
    pub recheck_failures: Counter,
    pub unreadable_profiles: Counter,
    pub applied_settings: Gauge,
    pub unchangeable_settings: Gauge,
    pub reboot_required: Gauge,
    pub kubelet_restart_required: Gauge,
    pub recheck_seconds: FloatGauge,
    pub cpu_utilisation: Family<CpuLabels, FloatGauge>,
    pub cpu_wait: Family<CpuLabels, FloatGauge>,
    pub psi_some: FloatGauge,
    pub vm_vcpu_wait: Family<VmLabels, FloatGauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("fastvirt_agent");
        let metrics = Self {
            drift_corrections: Counter::default(),
            rechecks: Counter::default(),
            recheck_failures: Counter::default(),
            unreadable_profiles: Counter::default(),
            applied_settings: Gauge::default(),
            unchangeable_settings: Gauge::default(),
            reboot_required: Gauge::default(),
            kubelet_restart_required: Gauge::default(),
            recheck_seconds: FloatGauge::default(),
            cpu_utilisation: Family::default(),
            cpu_wait: Family::default(),
            psi_some: FloatGauge::default(),
            vm_vcpu_wait: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "drift_corrections",
            "Settings found changed by someone else and set back",
            metrics.drift_corrections.clone(),
        );
        registry.register(
            "rechecks",
            "Re-checks of the host against the profile",
            metrics.rechecks.clone(),
        );
        registry.register(
            "recheck_failures",
            "Re-checks that failed",
            metrics.recheck_failures.clone(),
        );
        registry.register(
            "unreadable_profiles",
            "NodeTuningProfile versions skipped because they cannot be read",
            metrics.unreadable_profiles.clone(),
        );
        registry.register(
            "applied_settings",
            "Settings the last apply wrote and verified",
            metrics.applied_settings.clone(),
        );
        registry.register(
            "unchangeable_settings",
            "Settings the kernel will not change at runtime",
            metrics.unchangeable_settings.clone(),
        );
        registry.register(
            "reboot_required",
            "1 when kernel arguments of the profile are missing",
            metrics.reboot_required.clone(),
        );
        registry.register(
            "kubelet_restart_required",
            "1 when the kubelet must restart to see hugepages or CPU manager settings",
            metrics.kubelet_restart_required.clone(),
        );
        registry.register(
            "recheck_duration_seconds",
            "Duration of the last re-check",
            metrics.recheck_seconds.clone(),
        );
        registry.register(
            "cpu_utilisation_percent",
            "Share of the last interval the CPU ran tasks",
            metrics.cpu_utilisation.clone(),
        );
        registry.register(
            "cpu_runqueue_wait_percent",
            "Run-queue wait accumulated on the CPU per interval time",
            metrics.cpu_wait.clone(),
        );
        registry.register(
            "cpu_pressure_some_percent",
            "PSI: share of the interval some task waited for a CPU",
            metrics.psi_some.clone(),
        );
        registry.register(
            "vm_vcpu_wait_percent",
            "Average share of the interval a VM's vCPU threads waited for a host CPU",
            metrics.vm_vcpu_wait.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    pub fn record_congestion(&self, report: &CongestionReport) {
        self.cpu_utilisation.clear();
        self.cpu_wait.clear();
        self.vm_vcpu_wait.clear();
        for cpu in &report.cpus {
            let labels = CpuLabels {
                cpu: cpu.cpu.to_string(),
                isolated: cpu.isolated.to_string(),
            };
            self.cpu_utilisation
                .get_or_create(&labels)
                .set(cpu.utilisation_percent);
            self.cpu_wait.get_or_create(&labels).set(cpu.wait_percent);
        }
        if let Some(psi) = report.psi_some_percent {
            self.psi_some.set(psi);
        }
        for vm in &report.vms {
            let labels = VmLabels {
                pid: vm.pid.to_string(),
                vm: vm.name.clone(),
            };
            self.vm_vcpu_wait
                .get_or_create(&labels)
                .set(vm.vcpu_wait_percent);
        }
    }
}
