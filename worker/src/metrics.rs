//! Prometheus metrics of a worker, registered under the `spindle_` prefix. Label values come
//! from fixed sets (`&'static str`) or from the spec (function and egress typenames), never
//! from error text.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunctionLabels {
    pub function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub function: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EgressLabels {
    pub egress: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// `local` (this worker owns the target) or `remote` (forwarded to a peer).
    pub route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LagLabels {
    /// The ingress's name in the spec.
    pub ingress: String,
    /// Its position key: `kafka/{ingress}/{topic}/{partition}` or `nats/{ingress}`.
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// A queue with a byte bound (`spec.memory`): `held_egress`, `peers`, `sinks`,
    /// `idempotency_keys`, `delayed`.
    pub queue: &'static str,
}

/// Most function types with a label of their own.
pub const FUNCTION_LABELS: usize = 256;
/// The label of the types past [`FUNCTION_LABELS`].
pub const OTHER_FUNCTIONS: &str = "_other";

/// Outcomes of an invocation batch.
pub mod outcome {
    pub const OK: &str = "ok";
    pub const INCOMPLETE: &str = "incomplete_context";
    pub const FAILED: &str = "failed";
}

pub struct Metrics {
    pub registry: Registry,
    /// Function types that have their own label (see [`Metrics::function_label`]).
    function_labels: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Records accepted by ingresses.
    pub ingress_accepted: Counter,
    /// Records refused by ingresses, by reason.
    pub ingress_rejected: Family<KindLabels, Counter>,
    /// Times a source reader paused because a queue was at its memory bound (`spec.memory`).
    pub ingress_paused: Counter,
    /// Ingress records dropped because their idempotency key was seen before.
    pub ingress_duplicates: Counter,
    pub invocations: Family<OutcomeLabels, Counter>,
    pub invocation_messages: Family<FunctionLabels, Counter>,
    pub invocation_retries: Family<FunctionLabels, Counter>,
    pub invocation_seconds: Family<FunctionLabels, Histogram>,
    pub delayed_cancelled: Counter,
    pub dead_letters: Family<KindLabels, Counter>,
    pub egress_records: Family<EgressLabels, Counter>,
    /// Messages waiting in mailboxes (not yet in an invocation).
    pub messages_queued: Gauge,
    /// Invocation batches in flight.
    pub batches_in_flight: Gauge,
    pub delayed_pending: Gauge,
    /// Egress records handed to sinks and not yet written.
    pub egress_pending: Gauge,
    /// Ingress records accepted and not yet fully processed.
    pub ingress_in_process: Gauge,
    /// Messages routed, by route (local or remote).
    pub messages_routed: Family<RouteLabels, Counter>,
    /// Messages handed to a peer link and not yet acknowledged by the peer.
    pub peer_pending: Gauge,
    /// Messages received from peers and not yet processed.
    pub peer_in_process: Gauge,
    pub peer_batches_sent: Counter,
    pub peer_envelopes_sent: Counter,
    /// Encoded bytes of the batches sent to peers (protobuf, before HTTP/2 framing).
    pub peer_bytes_sent: Counter,
    pub peer_reconnects: Counter,
    /// Handshakes refused, on either side.
    pub peer_refused: Counter,
    /// Checkpoints completed (coordinator).
    pub checkpoints_completed: Counter,
    /// Checkpoints that failed (coordinator): a part or the manifest was not written in time.
    pub checkpoints_failed: Counter,
    /// Completed checkpoints found damaged (checksum, size) and skipped at a restore.
    pub checkpoints_damaged: Counter,
    /// Restores that fell back past completed checkpoints damaged after completion.
    pub checkpoint_data_loss: Counter,
    /// From trigger to manifest written (coordinator).
    pub checkpoint_seconds: Histogram,
    /// Time the partition stops to copy its snapshot.
    pub checkpoint_capture_seconds: Histogram,
    pub part_upload_seconds: Histogram,
    pub part_upload_failures: Counter,
    /// Size of this worker's last part.
    pub checkpoint_part_bytes: Gauge,
    /// Size of the last completed checkpoint, all parts (coordinator).
    pub checkpoint_bytes: Gauge,
    /// Payload bytes of this worker's parts, all of them; of which key-group deltas (what
    /// changed) and bases (key groups rewritten whole by compaction).
    pub checkpoint_written_bytes: Counter,
    pub checkpoint_delta_bytes: Counter,
    pub checkpoint_base_bytes: Counter,
    /// Part bytes read by this worker's restores.
    pub restore_read_bytes: Counter,
    /// State values dropped by the sweep after they expired.
    pub state_expired: Counter,
    pub last_checkpoint: Gauge,
    pub generation: Gauge,
    /// Rollbacks started (coordinator).
    pub rollbacks: Counter,
    /// Source (Kafka, JetStream) and connector-egress errors, by kind; retried.
    pub connector_errors: Family<KindLabels, Counter>,
    /// Kafka consumer-group offset commits made after completed checkpoints.
    pub offset_commits: Counter,
    /// Egress records the broker already had (JetStream's duplicate window dropped a re-send).
    pub egress_duplicates: Counter,
    /// Egress records released again by a restore: they may have been written before the
    /// failure (same keys; file sinks skip those they find, other receivers drop them by key).
    pub egress_resent: Counter,
    /// Bytes of dead letters kept (in checkpoints) by this worker.
    pub dead_letter_bytes: Gauge,
    /// Dead letters only logged because the kept ones reached `deadLetters.maxBytes`.
    pub dead_letters_overflow: Counter,
    /// Messages set aside as poison (in flight at `poisonAfterRollbacks` consecutive
    /// rollbacks), by the worker that restored or received them.
    pub poison_dead_letters: Counter,
    /// Messages the coordinator found in flight at `poisonAfterRollbacks` consecutive
    /// rollbacks (coordinator).
    pub poison_detected: Counter,
    /// Source records skipped because retention deleted them before they were read.
    pub source_records_lost: Counter,
    pub restore_seconds: Histogram,
    /// Bytes held per bounded queue (`spec.memory`, see `memory.rs`).
    pub memory_bytes: Family<QueueLabels, Gauge>,
    /// The bound of each of those queues.
    pub memory_limit_bytes: Family<QueueLabels, Gauge>,
    /// From the start of a rollback until every worker has restored (coordinator).
    pub recovery_seconds: Histogram,
    /// Messages of the invocation batches in flight.
    pub messages_in_flight: Gauge,
    /// Records of a source not read yet (Kafka: to the partition's stable end; NATS: the
    /// consumer's pending count), per source this worker reads.
    pub ingress_lag: Family<LagLabels, Gauge>,
    /// The same, summed here for [`Metrics::backlog`] (a family cannot be summed).
    lags: std::sync::Mutex<std::collections::BTreeMap<String, i64>>,
    /// Queued and in-flight messages plus ingress lag: what an autoscaler reads. Set from the
    /// others when the metrics are read.
    pub backlog: Gauge,
    /// When this worker learned of the last completed checkpoint (Unix seconds).
    pub last_checkpoint_time: Gauge,
    /// Messages invoked and dead letters written, all kinds: the totals `/status` shows
    /// (their families cannot be summed).
    pub(crate) messages_invoked: Counter,
    pub(crate) dead_letters_written: Counter,
}

fn seconds() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("spindle");
        let m = Metrics {
            ingress_accepted: Counter::default(),
            ingress_rejected: Family::default(),
            ingress_paused: Counter::default(),
            ingress_duplicates: Counter::default(),
            invocations: Family::default(),
            invocation_messages: Family::default(),
            invocation_retries: Family::default(),
            invocation_seconds: Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 16))),
            delayed_cancelled: Counter::default(),
            dead_letters: Family::default(),
            egress_records: Family::default(),
            messages_queued: Gauge::default(),
            batches_in_flight: Gauge::default(),
            delayed_pending: Gauge::default(),
            egress_pending: Gauge::default(),
            ingress_in_process: Gauge::default(),
            messages_routed: Family::default(),
            peer_pending: Gauge::default(),
            peer_in_process: Gauge::default(),
            peer_batches_sent: Counter::default(),
            peer_envelopes_sent: Counter::default(),
            peer_bytes_sent: Counter::default(),
            peer_reconnects: Counter::default(),
            peer_refused: Counter::default(),
            checkpoints_completed: Counter::default(),
            checkpoints_failed: Counter::default(),
            checkpoints_damaged: Counter::default(),
            checkpoint_data_loss: Counter::default(),
            checkpoint_seconds: seconds(),
            checkpoint_capture_seconds: seconds(),
            part_upload_seconds: seconds(),
            part_upload_failures: Counter::default(),
            checkpoint_part_bytes: Gauge::default(),
            checkpoint_bytes: Gauge::default(),
            checkpoint_written_bytes: Counter::default(),
            checkpoint_delta_bytes: Counter::default(),
            checkpoint_base_bytes: Counter::default(),
            restore_read_bytes: Counter::default(),
            state_expired: Counter::default(),
            last_checkpoint: Gauge::default(),
            generation: Gauge::default(),
            rollbacks: Counter::default(),
            connector_errors: Family::default(),
            offset_commits: Counter::default(),
            egress_duplicates: Counter::default(),
            egress_resent: Counter::default(),
            dead_letter_bytes: Gauge::default(),
            dead_letters_overflow: Counter::default(),
            poison_dead_letters: Counter::default(),
            poison_detected: Counter::default(),
            source_records_lost: Counter::default(),
            restore_seconds: seconds(),
            memory_bytes: Family::default(),
            memory_limit_bytes: Family::default(),
            recovery_seconds: seconds(),
            messages_in_flight: Gauge::default(),
            ingress_lag: Family::default(),
            lags: Default::default(),
            backlog: Gauge::default(),
            last_checkpoint_time: Gauge::default(),
            messages_invoked: Counter::default(),
            dead_letters_written: Counter::default(),
            registry: Registry::default(),
            function_labels: Default::default(),
        };
        let r = &mut registry;
        r.register(
            "ingress_accepted",
            "Records accepted by ingresses",
            m.ingress_accepted.clone(),
        );
        r.register(
            "ingress_rejected",
            "Records refused by ingresses, by reason",
            m.ingress_rejected.clone(),
        );
        r.register(
            "ingress_duplicates",
            "Ingress records dropped as repeats of an idempotency key",
            m.ingress_duplicates.clone(),
        );
        r.register(
            "invocations",
            "Invocation batches by function and outcome",
            m.invocations.clone(),
        );
        r.register(
            "invocation_messages",
            "Messages delivered to functions",
            m.invocation_messages.clone(),
        );
        r.register(
            "invocation_retries",
            "Invocation attempts retried",
            m.invocation_retries.clone(),
        );
        r.register(
            "invocation_duration_seconds",
            "Time per invocation batch, retries included",
            m.invocation_seconds.clone(),
        );
        r.register(
            "delayed_cancelled",
            "Delayed messages cancelled",
            m.delayed_cancelled.clone(),
        );
        r.register("dead_letters", "Dead-letter records by kind", m.dead_letters.clone());
        r.register(
            "egress_records",
            "Egress records by egress and outcome",
            m.egress_records.clone(),
        );
        r.register(
            "messages_queued",
            "Messages waiting in mailboxes",
            m.messages_queued.clone(),
        );
        r.register(
            "batches_in_flight",
            "Invocation batches in flight",
            m.batches_in_flight.clone(),
        );
        r.register(
            "delayed_pending",
            "Delayed messages not yet due",
            m.delayed_pending.clone(),
        );
        r.register(
            "egress_pending",
            "Egress records not yet written",
            m.egress_pending.clone(),
        );
        r.register(
            "ingress_in_process",
            "Accepted ingress records not yet processed",
            m.ingress_in_process.clone(),
        );
        r.register(
            "messages_routed",
            "Messages routed, by route (local or remote)",
            m.messages_routed.clone(),
        );
        r.register(
            "peer_pending",
            "Messages sent to peers and not yet acknowledged",
            m.peer_pending.clone(),
        );
        r.register(
            "peer_in_process",
            "Messages from peers not yet processed",
            m.peer_in_process.clone(),
        );
        r.register(
            "peer_batches_sent",
            "Batches sent to peers",
            m.peer_batches_sent.clone(),
        );
        r.register(
            "peer_envelopes_sent",
            "Messages sent to peers",
            m.peer_envelopes_sent.clone(),
        );
        r.register(
            "peer_bytes_sent",
            "Encoded bytes of batches sent to peers",
            m.peer_bytes_sent.clone(),
        );
        r.register(
            "peer_reconnects",
            "Peer streams reopened after a failure",
            m.peer_reconnects.clone(),
        );
        r.register("peer_refused", "Peer handshakes refused", m.peer_refused.clone());
        r.register(
            "checkpoints_completed",
            "Checkpoints completed (coordinator)",
            m.checkpoints_completed.clone(),
        );
        r.register(
            "checkpoints_failed",
            "Checkpoints failed (coordinator)",
            m.checkpoints_failed.clone(),
        );
        r.register(
            "checkpoints_damaged",
            "Damaged checkpoints skipped at a restore",
            m.checkpoints_damaged.clone(),
        );
        r.register(
            "checkpoint_data_loss",
            "Restores that fell back past completed checkpoints damaged after completion (data loss)",
            m.checkpoint_data_loss.clone(),
        );
        r.register(
            "checkpoint_duration_seconds",
            "From trigger to manifest written",
            m.checkpoint_seconds.clone(),
        );
        r.register(
            "checkpoint_capture_seconds",
            "Partition pause to copy a snapshot",
            m.checkpoint_capture_seconds.clone(),
        );
        r.register(
            "checkpoint_part_upload_seconds",
            "Encoding and writing this worker's part",
            m.part_upload_seconds.clone(),
        );
        r.register(
            "checkpoint_part_upload_failures",
            "Parts that could not be written",
            m.part_upload_failures.clone(),
        );
        r.register(
            "checkpoint_part_bytes",
            "Size of this worker's last part",
            m.checkpoint_part_bytes.clone(),
        );
        r.register(
            "checkpoint_bytes",
            "Size of the last completed checkpoint",
            m.checkpoint_bytes.clone(),
        );
        r.register(
            "checkpoint_written_bytes",
            "Payload bytes of this worker's parts",
            m.checkpoint_written_bytes.clone(),
        );
        r.register(
            "checkpoint_delta_bytes",
            "Bytes of key-group deltas (state that changed) in this worker's parts",
            m.checkpoint_delta_bytes.clone(),
        );
        r.register(
            "checkpoint_base_bytes",
            "Bytes of key groups rewritten whole (compaction) in this worker's parts",
            m.checkpoint_base_bytes.clone(),
        );
        r.register(
            "restore_read_bytes",
            "Part bytes read by this worker's restores",
            m.restore_read_bytes.clone(),
        );
        r.register(
            "state_expired",
            "State values dropped by the sweep after they expired",
            m.state_expired.clone(),
        );
        r.register(
            "last_checkpoint",
            "Id of the last completed checkpoint",
            m.last_checkpoint.clone(),
        );
        r.register(
            "generation",
            "Current generation (incremented by every rollback)",
            m.generation.clone(),
        );
        r.register("rollbacks", "Rollbacks started (coordinator)", m.rollbacks.clone());
        r.register(
            "connector_errors",
            "Kafka/JetStream read, write and commit errors by kind (retried)",
            m.connector_errors.clone(),
        );
        r.register(
            "offset_commits",
            "Kafka consumer-group offset commits after completed checkpoints",
            m.offset_commits.clone(),
        );
        r.register(
            "egress_duplicates",
            "Egress re-sends the broker dropped as duplicates (JetStream Nats-Msg-Id)",
            m.egress_duplicates.clone(),
        );
        r.register(
            "egress_resent",
            "Egress records released again by a restore (same idempotency keys)",
            m.egress_resent.clone(),
        );
        r.register(
            "dead_letter_bytes",
            "Bytes of dead letters kept (in checkpoints) by this worker",
            m.dead_letter_bytes.clone(),
        );
        r.register(
            "dead_letters_overflow",
            "Dead letters only logged because the kept ones reached deadLetters.maxBytes",
            m.dead_letters_overflow.clone(),
        );
        r.register(
            "poison_dead_letters",
            "Messages set aside as dead letters because they were in flight at poisonAfterRollbacks consecutive rollbacks",
            m.poison_dead_letters.clone(),
        );
        r.register(
            "poison_detected",
            "Messages found in flight at poisonAfterRollbacks consecutive rollbacks (coordinator)",
            m.poison_detected.clone(),
        );
        r.register(
            "source_records_lost",
            "Kafka records skipped because retention deleted them before they were read (data loss)",
            m.source_records_lost.clone(),
        );
        r.register(
            "restore_duration_seconds",
            "Time to restore a checkpoint on this worker",
            m.restore_seconds.clone(),
        );
        r.register(
            "ingress_paused",
            "Times a Kafka/NATS reader paused because a queue was at its memory bound",
            m.ingress_paused.clone(),
        );
        r.register(
            "memory_bytes",
            "Bytes held per bounded queue; at its bound (spec.memory) the ingresses stop admitting",
            m.memory_bytes.clone(),
        );
        r.register(
            "memory_limit_bytes",
            "The bound of each queue in spindle_memory_bytes (spec.memory)",
            m.memory_limit_bytes.clone(),
        );
        r.register(
            "recovery_duration_seconds",
            "From rollback start until every worker restored",
            m.recovery_seconds.clone(),
        );
        r.register(
            "messages_in_flight",
            "Messages of the invocation batches in flight",
            m.messages_in_flight.clone(),
        );
        r.register(
            "ingress_lag_messages",
            "Records of a source not read yet (Kafka partition, JetStream stream), per source this worker reads",
            m.ingress_lag.clone(),
        );
        r.register(
            "backlog_messages",
            "Queued and in-flight messages plus ingress lag: the backlog to autoscale on",
            m.backlog.clone(),
        );
        r.register(
            "last_checkpoint_timestamp_seconds",
            "When this worker learned of the last completed checkpoint (Unix time)",
            m.last_checkpoint_time.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Sets the lag of source `key` (`kafka/{ingress}/…`, `nats/{ingress}`).
    pub fn set_ingress_lag(&self, key: &str, lag: i64) {
        let lag = lag.max(0);
        let ingress = key.split('/').nth(1).unwrap_or(key).to_string();
        self.ingress_lag
            .get_or_create(&LagLabels {
                ingress,
                source: key.to_string(),
            })
            .set(lag);
        self.lags.lock().expect("lag lock").insert(key.to_string(), lag);
    }

    /// `n` records of source `key` reached the partition: they leave the lag (for the queue).
    pub fn take_from_lag(&self, key: &str, n: i64) {
        let mut lags = self.lags.lock().expect("lag lock");
        let Some(lag) = lags.get_mut(key) else {
            return;
        };
        *lag = (*lag - n).max(0);
        let ingress = key.split('/').nth(1).unwrap_or(key).to_string();
        self.ingress_lag
            .get_or_create(&LagLabels {
                ingress,
                source: key.to_string(),
            })
            .set(*lag);
    }

    /// The lag per ingress name (summed over its sources).
    pub fn lag_by_ingress(&self) -> std::collections::BTreeMap<String, i64> {
        let mut out = std::collections::BTreeMap::new();
        for (key, lag) in self.lags.lock().expect("lag lock").iter() {
            let ingress = key.split('/').nth(1).unwrap_or(key).to_string();
            *out.entry(ingress).or_insert(0) += lag;
        }
        out
    }

    /// Queued plus in-flight messages plus ingress lag.
    pub fn backlog(&self) -> i64 {
        let lag: i64 = self.lags.lock().expect("lag lock").values().sum();
        self.messages_queued.get() + self.messages_in_flight.get() + lag
    }

    pub fn encode(&self) -> String {
        self.backlog.set(self.backlog());
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }

    /// Nothing accepted is still being processed, queued, delayed or waiting for an egress.
    /// The `function` label for type `t`. A `ns/*` entry serves any type a caller names, so
    /// the label set is bounded: the first [`FUNCTION_LABELS`] types get their own, the rest
    /// share `_other`.
    pub fn function_label(&self, t: &str) -> String {
        let mut known = self.function_labels.lock().expect("function label lock");
        if known.contains(t) {
            return t.to_string();
        }
        if known.len() < FUNCTION_LABELS {
            known.insert(t.to_string());
            return t.to_string();
        }
        OTHER_FUNCTIONS.to_string()
    }

    pub fn is_idle(&self) -> bool {
        self.ingress_in_process.get() == 0
            && self.messages_queued.get() == 0
            && self.batches_in_flight.get() == 0
            && self.delayed_pending.get() == 0
            && self.egress_pending.get() == 0
            && self.peer_pending.get() == 0
            && self.peer_in_process.get() == 0
    }
}
