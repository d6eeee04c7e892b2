//! Egresses: functions' egress messages leave the application through sinks, one task each.
//!
//! With checkpoints, the partition holds a record back until the checkpoint of the epoch that
//! produced it completes (`partition::epochs`), then emits it here with its idempotency key;
//! until its sink confirms it, it stays in every snapshot ([`held`]).

mod file;
mod held;
mod http;
mod kafka;
mod nats;
mod record;
mod retrying;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use spindle_spec::TypeName;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::app::{AppConfig, EgressSink};
use crate::deadletter::{DeadLetters, kind};
use crate::memory::{Charge, Memory, Queue};
use crate::message::{Address, Value};
use crate::metrics::{EgressLabels, Metrics};
use crate::stop::CancellationToken;

pub use held::{HeldSnapshot, PendingEgress, SinkDead, Unconfirmed};
pub use kafka::murmur2;
pub use record::json_line;

#[derive(Debug, Clone)]
pub struct EgressRecord {
    pub egress: TypeName,
    pub value: Value,
    /// The function address that emitted it.
    pub source: Address,
    /// Idempotency key, set when the record is released by a completed checkpoint.
    pub key: Option<Arc<str>>,
}

impl EgressRecord {
    /// What the record costs in a queue (its key included, once it has one).
    pub fn bytes(&self) -> u64 {
        crate::memory::ENTRY_OVERHEAD
            + self.egress.as_str().len() as u64
            + crate::memory::value_bytes(&self.value)
            + crate::memory::address_bytes(&self.source)
            + self.key.as_ref().map_or(0, |k| k.len() as u64)
    }
}

/// What goes down a sink's queue, in order.
#[derive(Debug)]
pub enum SinkItem {
    Record(EgressRecord),
    /// A restore is about to release records again that the sink may have written already
    /// (none before position `mark` of its output): a sink that can read its output back skips
    /// those it finds from there on. Others ignore it (their receivers drop re-sends by key).
    Resume {
        mark: u64,
    },
}

/// Hands records to their sinks. Dropping every clone lets the sinks drain what they hold and
/// stop. Outlives rollbacks: each generation's partition holds a clone.
#[derive(Clone)]
pub struct EgressHub {
    // Unbounded: the partition must never block on a slow sink (that would stall every
    // address). What sits here is bounded by the ingress admission limit times fan-out, and
    // is visible as `spindle_egress_pending`.
    sinks: HashMap<TypeName, mpsc::UnboundedSender<Queued>>,
    metrics: Arc<Metrics>,
    /// Records in the sinks' queues count in `spec.memory.sinkQueueBytes`.
    memory: Arc<Memory>,
    pub unconfirmed: Unconfirmed,
}

/// The receiving end of a sink's queue.
pub(crate) type SinkQueue = mpsc::UnboundedReceiver<Queued>;

/// An item in a sink's queue, with its bytes charged to the sink queues until the sink takes
/// it out.
#[derive(Debug)]
pub(crate) struct Queued {
    item: SinkItem,
    _charge: Option<Charge>,
}

#[derive(Clone)]
pub struct SinkContext {
    pub metrics: Arc<Metrics>,
    /// The worker's memory budget (the sink queues' bytes).
    pub memory: Arc<Memory>,
    pub unconfirmed: Unconfirmed,
    pub dead_letters: Arc<DeadLetters>,
    /// Also print every record to stdout (local runs).
    pub echo: bool,
    /// This worker's index and the worker count (Kafka transactional ids are per worker).
    pub worker: u32,
    pub workers: u32,
    /// A sink that panics makes the worker unhealthy.
    pub health: Arc<crate::health::Health>,
}

impl SinkContext {
    /// A sink gives up on `records`: they become dead letters (kept by the partition, in
    /// checkpoints, replayable) and are logged.
    pub(crate) fn give_up(&self, egress: &str, records: &[EgressRecord], reason: String) {
        let reason = format!("egress {egress}: {reason}");
        let messages = records.iter().map(EgressRecord::dead_message).collect();
        self.dead_letters.record(kind::EGRESS_FAILED, reason.clone(), messages);
        self.unconfirmed.give_up(records, reason);
    }

    /// A sink is done with `records`: counted by outcome, echoed (local runs), and on failure
    /// written as dead letters with the reason.
    pub(crate) fn finish(&self, egress: &str, records: &[EgressRecord], result: Result<(), String>) {
        if records.is_empty() {
            return;
        }
        let n = records.len() as u64;
        let outcome = match result {
            Ok(()) => {
                self.unconfirmed.confirm(records);
                "ok"
            }
            Err(reason) => {
                self.give_up(egress, records, reason);
                "failed"
            }
        };
        if self.echo {
            for r in records {
                println!("egress {egress} <- {}", json_line(r));
            }
        }
        let labels = EgressLabels {
            egress: egress.to_string(),
            outcome,
        };
        self.metrics.egress_records.get_or_create(&labels).inc_by(n);
        self.metrics.egress_pending.dec_by(n as i64);
    }
}

impl EgressHub {
    /// A hub with one egress whose sink is the returned channel (unit tests of producers).
    #[cfg(test)]
    pub(crate) fn to_channel(
        egress: TypeName,
        metrics: Arc<Metrics>,
    ) -> (EgressHub, mpsc::UnboundedReceiver<SinkItem>) {
        let (tx, mut queued) = mpsc::unbounded_channel::<Queued>();
        let (out, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(q) = queued.recv().await {
                if out.send(q.item).is_err() {
                    break;
                }
            }
        });
        let hub = EgressHub {
            sinks: HashMap::from([(egress, tx)]),
            metrics,
            memory: Memory::unbounded(),
            unconfirmed: Unconfirmed::default(),
        };
        (hub, rx)
    }

    /// Starts one task per egress of `app` on `tasks`.
    /// Sinks write what they were given and stop once `stop` fires (after the last producer
    /// stopped).
    pub fn start(
        app: &AppConfig,
        ctx: &SinkContext,
        tasks: &mut JoinSet<()>,
        stop: CancellationToken,
    ) -> std::io::Result<EgressHub> {
        let mut sinks = HashMap::new();
        for e in &app.egresses {
            let (tx, rx) = mpsc::unbounded_channel::<Queued>();
            let name = e.typename.to_string();
            match &e.sink {
                EgressSink::File { path } => {
                    let sink = file::FileSink::open(path, e.typename.clone(), ctx.clone())?;
                    tasks.spawn(crate::health::supervised(
                        ctx.health.clone(),
                        "egress sink",
                        stop.clone(),
                        sink.run(rx, stop.clone()),
                    ));
                }
                EgressSink::Http {
                    url,
                    timeout,
                    max_in_flight,
                    tls,
                } => {
                    let client = crate::tls::client::http_client(tls.as_ref(), &app.base_dir, Duration::from_secs(60))
                        .map_err(|e| {
                            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("egress {name}: TLS: {e}"))
                        })?;
                    let sink = http::HttpSink::new(url, *timeout, *max_in_flight, client, name, ctx.clone())?;
                    tasks.spawn(crate::health::supervised(
                        ctx.health.clone(),
                        "egress sink",
                        stop.clone(),
                        sink.run(rx, stop.clone()),
                    ));
                }
                EgressSink::Kafka(spec) => {
                    let sink = kafka::KafkaSink::new(spec.clone(), name, app, ctx.clone());
                    tasks.spawn(crate::health::supervised(
                        ctx.health.clone(),
                        "egress sink",
                        stop.clone(),
                        sink.run(rx, stop.clone()),
                    ));
                }
                EgressSink::Nats(spec) => {
                    let sink = nats::NatsSink::new(spec.clone(), name, app.base_dir.clone(), ctx.clone());
                    tasks.spawn(crate::health::supervised(
                        ctx.health.clone(),
                        "egress sink",
                        stop.clone(),
                        sink.run(rx, stop.clone()),
                    ));
                }
            }
            sinks.insert(e.typename.clone(), tx);
        }
        Ok(EgressHub {
            sinks,
            metrics: ctx.metrics.clone(),
            memory: ctx.memory.clone(),
            unconfirmed: ctx.unconfirmed.clone(),
        })
    }

    pub fn has(&self, egress: &TypeName) -> bool {
        self.sinks.contains_key(egress)
    }

    /// Queues a record; false when no egress of that name exists (or it stopped).
    pub fn emit(&self, record: EgressRecord) -> bool {
        let Some(tx) = self.sinks.get(&record.egress) else {
            return false;
        };
        self.metrics.egress_pending.inc();
        let charge = self.memory.charge(Queue::Sinks, record.bytes());
        let sent = tx
            .send(Queued {
                item: SinkItem::Record(record),
                _charge: Some(charge),
            })
            .is_ok();
        if !sent {
            self.metrics.egress_pending.dec();
        }
        sent
    }
}

impl EgressHub {
    /// Tells `egress`'s sink that records from before its position `mark` are about to be
    /// released again (see [`SinkItem::Resume`]).
    pub fn resume(&self, egress: &TypeName, mark: u64) {
        if let Some(tx) = self.sinks.get(egress) {
            self.unconfirmed.resume_from(egress, mark);
            let _ = tx.send(Queued {
                item: SinkItem::Resume { mark },
                _charge: None,
            });
        }
    }
}

/// A sink's queue that closes when told to stop, then yields what it still holds: the hub
/// lives as long as the worker, so its senders never all drop while the sinks should drain.
pub(crate) struct Closing {
    rx: mpsc::UnboundedReceiver<Queued>,
    /// What `recv_items` takes out of the queue before unwrapping (their charges drop then).
    taken: Vec<Queued>,
    stop: CancellationToken,
    closed: bool,
}

impl Closing {
    fn new(rx: mpsc::UnboundedReceiver<Queued>, stop: CancellationToken) -> Closing {
        Closing {
            rx,
            taken: Vec::new(),
            stop,
            closed: false,
        }
    }

    /// Up to `limit` items; 0 once the queue is closed and empty.
    pub async fn recv_items(&mut self, buf: &mut Vec<SinkItem>, limit: usize) -> usize {
        let n = loop {
            if self.closed {
                break self.rx.recv_many(&mut self.taken, limit).await;
            }
            tokio::select! {
                n = self.rx.recv_many(&mut self.taken, limit) => break n,
                _ = self.stop.cancelled() => {
                    self.rx.close();
                    self.closed = true;
                }
            }
        };
        buf.extend(self.taken.drain(..).map(|q| q.item));
        n
    }

    /// Up to `limit` records (resume notices are dropped: only sinks that read their output
    /// back use them); 0 once the queue is closed and empty.
    pub async fn recv_many(&mut self, buf: &mut Vec<EgressRecord>, limit: usize) -> usize {
        let mut items = Vec::with_capacity(limit);
        loop {
            if self.recv_items(&mut items, limit).await == 0 {
                return 0;
            }
            let before = buf.len();
            buf.extend(items.drain(..).filter_map(|i| match i {
                SinkItem::Record(r) => Some(r),
                SinkItem::Resume { .. } => None,
            }));
            if buf.len() > before {
                return buf.len() - before;
            }
        }
    }

    pub async fn recv(&mut self) -> Option<EgressRecord> {
        let mut buf = Vec::with_capacity(1);
        (self.recv_many(&mut buf, 1).await > 0).then(|| buf.pop()).flatten()
    }
}
