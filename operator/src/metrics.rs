//! Prometheus metrics of the operator, under the `spindle_operator_` prefix. Label values
//! come from fixed sets (`&'static str`), never from error text or object names.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub const PREFIX: &str = "spindle_operator";
/// Reconciliations, by outcome (`ok`, `error`).
pub const RECONCILIATIONS: &str = "reconciliations";
/// Failed reconciliations, by error kind.
pub const RECONCILE_ERRORS: &str = "reconcile_errors";
pub const RECONCILE_DURATION: &str = "reconcile_duration_seconds";
/// 1 while this replica holds the leader lease.
pub const LEADER: &str = "leader";
/// Worker-count changes carried out (checkpoint, stop, restart at the new count).
pub const RESCALES: &str = "rescales";
/// Applications deleted, by checkpoint retention policy (`retain`, `delete`).
pub const DELETIONS: &str = "deletions";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub policy: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub reconciliations: Family<OutcomeLabels, Counter>,
    pub reconcile_errors: Family<KindLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub leader: Gauge,
    pub rescales: Counter,
    pub deletions: Family<PolicyLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let reconciliations = Family::<OutcomeLabels, Counter>::default();
        registry.register(RECONCILIATIONS, "Reconciliations, by outcome", reconciliations.clone());
        let reconcile_errors = Family::<KindLabels, Counter>::default();
        registry.register(
            RECONCILE_ERRORS,
            "Failed reconciliations, by error kind",
            reconcile_errors.clone(),
        );
        let reconcile_duration = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        registry.register(
            RECONCILE_DURATION,
            "Time of one reconciliation",
            reconcile_duration.clone(),
        );
        let leader = Gauge::default();
        registry.register(LEADER, "1 while this replica holds the leader lease", leader.clone());
        let rescales = Counter::default();
        registry.register(RESCALES, "Worker-count changes carried out", rescales.clone());
        let deletions = Family::<PolicyLabels, Counter>::default();
        registry.register(
            DELETIONS,
            "Applications deleted, by checkpoint retention policy",
            deletions.clone(),
        );
        Metrics {
            registry,
            reconciliations,
            reconcile_errors,
            reconcile_duration,
            leader,
            rescales,
            deletions,
        }
    }
}

impl Metrics {
    pub fn reconciled(&self, took: Duration, error: Option<&'static str>) {
        self.reconcile_duration.observe(took.as_secs_f64());
        let outcome = if error.is_some() { "error" } else { "ok" };
        self.reconciliations.get_or_create(&OutcomeLabels { outcome }).inc();
        if let Some(kind) = error {
            self.reconcile_errors.get_or_create(&KindLabels { kind }).inc();
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
