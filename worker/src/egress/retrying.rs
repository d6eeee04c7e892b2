//! The retry loop of the connector sinks (Kafka, JetStream): attempt everything pending, keep
//! what failed, back off, until the egress's timeout — then the rest is given up on.

use std::time::{Duration, Instant};

use super::SinkContext;
use crate::metrics::KindLabels;
use crate::retry::Backoff;

/// One try of a sink at its pending records.
pub(crate) trait Attempt {
    type Pending;
    /// Tries everything in `pending`; what failed stays in it. (`Send`: sinks run as tasks.)
    fn attempt(&mut self, pending: &mut Vec<Self::Pending>) -> impl Future<Output = Result<(), String>> + Send;
}

/// Attempts until `pending` is empty or `timeout` has passed; returns what is left and the last
/// error. Failures are counted under `kind` and logged (the first of a run, then every 30 s).
pub(crate) async fn within<S: Attempt>(
    sink: &mut S,
    mut pending: Vec<S::Pending>,
    timeout: Option<Duration>,
    ctx: &SinkContext,
    egress: &str,
    kind: &'static str,
) -> Option<(Vec<S::Pending>, String)> {
    let mut backoff = Backoff::within(timeout);
    let mut failing: Option<Instant> = None;
    while !pending.is_empty() {
        let Err(error) = sink.attempt(&mut pending).await else {
            continue;
        };
        ctx.metrics.connector_errors.get_or_create(&KindLabels { kind }).inc();
        let Some(wait) = backoff.next_wait() else {
            return Some((
                pending,
                format!("not written within the timeout of {timeout:?}: {error}"),
            ));
        };
        let now = Instant::now();
        if failing.is_none_or(|t| now.duration_since(t) > Duration::from_secs(30)) {
            tracing::warn!(egress, %error, pending = pending.len(), kind, "egress failed; retrying");
            failing = Some(now);
        }
        tokio::time::sleep(wait).await;
    }
    None
}
