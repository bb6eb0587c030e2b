//! The operator's Prometheus metrics: reconciles by controller and outcome, failures by reason,
//! reconcile durations, objects skipped because they cannot be read, and whether this replica
//! leads.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub controller: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

pub struct Metrics {
    registry: Registry,
    reconciles: Family<ControllerLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    unreadable: Family<KindLabels, Counter>,
    durations: Family<ControllerLabels, Histogram>,
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("fastvirt_operator");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let unreadable = Family::<KindLabels, Counter>::default();
        let durations = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            // 1 ms to ~16 s.
            Histogram::new(exponential_buckets(0.001, 2.0, 15))
        });
        let leader = Gauge::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed, by reason",
            failures.clone(),
        );
        registry.register(
            "unreadable_objects",
            "Object versions skipped because they cannot be read, by kind",
            unreadable.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "How long reconciles take",
            durations.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        Metrics {
            registry,
            reconciles,
            failures,
            unreadable,
            durations,
            leader,
        }
    }
}

impl Metrics {
    pub fn reconciled(&self, controller: &'static str, took: Duration) {
        let labels = ControllerLabels { controller };
        self.reconciles.get_or_create(&labels).inc();
        self.durations
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    pub fn failed(&self, controller: &'static str, reason: &'static str) {
        self.failures
            .get_or_create(&FailureLabels { controller, reason })
            .inc();
    }

    pub fn unreadable(&self, kind: &str) {
        self.unreadable
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_appear_in_the_exposition() {
        let metrics = Metrics::default();
        metrics.reconciled("blockpool", Duration::from_millis(3));
        metrics.reconciled("blockpool", Duration::from_millis(5));
        metrics.failed("blockpool", "Kube");
        metrics.unreadable("NodeTuningProfile");
        metrics.leader.set(1);
        let text = metrics.encode();
        assert!(
            text.contains("fastvirt_operator_reconciles_total{controller=\"blockpool\"} 2"),
            "{text}"
        );
        assert!(text.contains(
            "fastvirt_operator_reconcile_failures_total{controller=\"blockpool\",reason=\"Kube\"} 1"
        ));
        assert!(text.contains(
            "fastvirt_operator_reconcile_duration_seconds_count{controller=\"blockpool\"} 2"
        ));
        assert!(
            text.contains(
                "fastvirt_operator_unreadable_objects_total{kind=\"NodeTuningProfile\"} 1"
            )
        );
        assert!(text.contains("fastvirt_operator_leader 1"));
    }
}
