//! A partition: the addresses a worker owns, their mailboxes, state and delayed messages,
//! driven by one task so that all of it changes in one place, in order.
//!
//! The loop takes deliveries, invocation completions and due timers. Invocations run as tasks
//! (one per batch, not per message) on a `JoinSet` the loop owns, so they end with it.
//!
//! Everything a checkpoint captures — state, specs, queued messages, batches in flight (kept
//! here, not in the invocation task, so a snapshot sees them), delayed messages, held egress —
//! lives in this struct; barriers arrive as inputs, in order with messages (`epochs`).

mod dedup;
mod delayed;
mod epochs;
mod mailbox;
mod state;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Uri;
use spindle_protocol::reqreply::{
    ToFunction,
    from_function::InvocationResponse,
    to_function::{self, InvocationBatchRequest},
};
use spindle_spec::TypeName;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

pub use dedup::SeenKeys;
pub use delayed::DelayedMessages;
pub use epochs::{Epochs, Positions};
pub use mailbox::{Batch, Mailbox, Pending, Slots};
pub use state::{Expiration, SpecRegistry, StateSpec, StateStore};

use crate::app::AppConfig;
use crate::checkpoint::snapshot::Restored;
use crate::clock::now_ms;
use crate::deadletter::{DeadLetters, DeadMessage, kind};
use crate::egress::{EgressHub, EgressRecord};
use crate::invoker::{InvokeFailure, Invoker, Reply};
use crate::message::{Address, Envelope, Value};
use crate::metrics::{FunctionLabels, Metrics, OutcomeLabels, outcome};
use crate::router::{Admission, Router};

/// How long an ingress idempotency key is remembered.
pub const DEDUP_WINDOW_MS: u64 = 15 * 60 * 1000;

/// Most `IncompleteInvocationContext` answers for one batch: the first declares the specs;
/// more means the function keeps asking for what it was given.
const MAX_INCOMPLETE_ROUNDS: u32 = 3;

pub enum Input {
    /// A message routed here by a peer (`from`), or from this worker's own router.
    Deliver {
        env: Envelope,
        admission: Option<Admission>,
        from: Option<u32>,
    },
    /// A record from an ingress. `epoch` learns the checkpoint that will contain it.
    Ingest {
        env: Envelope,
        admission: Option<Admission>,
        epoch: Option<oneshot::Sender<u64>>,
    },
    /// Records read from a source with positions (a Kafka partition, a JetStream stream), in
    /// order; once they are taken, the source stands at `next` — and a snapshot says so.
    Source {
        source: Arc<str>,
        next: i64,
        records: Vec<(Envelope, Option<Admission>)>,
    },
    /// The coordinator starts checkpoint `n` (at the coordinator's own partition only).
    Trigger(u64),
    /// Peer `from` has sent everything of its epoch `checkpoint` on its channel to us.
    Barrier { from: u32, checkpoint: u64 },
    /// Checkpoint `n` is complete: release egress output up to it.
    Completed(u64),
    /// Current state values of an address (inspection and tests).
    ReadState(Address, oneshot::Sender<Vec<(String, Value)>>),
}

struct Completion {
    target: Address,
    result: Result<Reply, InvokeFailure>,
    elapsed: Duration,
}

pub struct Partition {
    app: Arc<AppConfig>,
    /// For messages to addresses other workers own.
    router: Router,
    invoker: Invoker,
    mailboxes: HashMap<Address, Mailbox>,
    /// The batch in flight per address (at most one).
    in_flight: HashMap<Address, Batch>,
    slots: Vec<Slots>,
    specs: SpecRegistry,
    state: StateStore,
    delayed: DelayedMessages,
    seen: SeenKeys,
    egress: EgressHub,
    dead_letters: Arc<DeadLetters>,
    metrics: Arc<Metrics>,
    endpoints: HashMap<TypeName, Uri>,
    invocations: JoinSet<Completion>,
    /// `None` when checkpoints are off: egress then leaves at once (at-most-once).
    epochs: Option<Epochs>,
    /// What this generation resumes from; taken when `run` starts.
    restored: Option<Restored>,
    /// Per source (`kafka/{ingress}/{topic}/{partition}`, `nats/{ingress}`): the next position
    /// to read. Restored for every source, so a snapshot taken before a source's reader
    /// reported still holds its position; merging parts takes the highest.
    positions: BTreeMap<Arc<str>, i64>,
    /// Sources this worker reads in this generation: only their positions are committed back.
    reading: HashSet<Arc<str>>,
}

impl Partition {
    pub fn new(
        app: Arc<AppConfig>,
        router: Router,
        egress: EgressHub,
        dead_letters: Arc<DeadLetters>,
        metrics: Arc<Metrics>,
        epochs: Option<Epochs>,
        restored: Restored,
    ) -> Partition {
        let slots = app.functions.iter().map(|_| Slots::default()).collect();
        Partition {
            app,
            router,
            invoker: Invoker::new(),
            mailboxes: HashMap::new(),
            in_flight: HashMap::new(),
            slots,
            specs: SpecRegistry::default(),
            state: StateStore::default(),
            delayed: DelayedMessages::default(),
            seen: SeenKeys::new(DEDUP_WINDOW_MS),
            egress,
            dead_letters,
            metrics,
            endpoints: HashMap::new(),
            invocations: JoinSet::new(),
            epochs,
            restored: Some(restored),
            positions: BTreeMap::new(),
            reading: HashSet::new(),
        }
    }

    /// Takes up where the restored checkpoint left off: state, messages (re-invoking batches
    /// that were in flight), delayed messages, and egress output not known to have left.
    fn resume(&mut self) {
        let Some(r) = self.restored.take() else {
            return;
        };
        self.state = r.state;
        self.specs = r.specs;
        for (due, env, token) in r.delayed {
            self.delayed.schedule(due, env, token.as_deref());
        }
        self.metrics.delayed_pending.set(self.delayed.len() as i64);
        self.seen = r.seen;
        self.positions = r.positions;
        // Keys of the restored messages are known already (or are added now): no dedup here.
        for env in r.messages {
            if let Some(key) = &env.dedup {
                self.seen.insert(&env.target, key, now_ms());
            }
            self.enqueue(env, None);
        }
        if let Some(epochs) = self.epochs.as_mut() {
            epochs.hold_restored(r.egress);
        }
        self.on_completed(r.checkpoint);
    }

    /// Runs until `shutdown` turns true or every sender of `inputs` is gone. In-flight
    /// invocations are abandoned on shutdown: a rollback re-invokes them from the checkpoint.
    pub async fn run(mut self, mut inputs: mpsc::UnboundedReceiver<Input>, mut shutdown: watch::Receiver<bool>) {
        self.resume();
        let mut buf = Vec::with_capacity(256);
        loop {
            let timer = self.delayed.next_due().map(|due| {
                let wait = due.saturating_sub(now_ms());
                tokio::time::Instant::now() + Duration::from_millis(wait)
            });
            tokio::select! {
                n = inputs.recv_many(&mut buf, 256) => {
                    if n == 0 {
                        break;
                    }
                    for input in buf.drain(..) {
                        self.on_input(input);
                    }
                }
                Some(done) = self.invocations.join_next(), if !self.invocations.is_empty() => {
                    match done {
                        Ok(c) => self.on_completion(c),
                        Err(e) => tracing::error!(error = %e, "invocation task failed"),
                    }
                }
                _ = tokio::time::sleep_until(timer.unwrap_or_else(tokio::time::Instant::now)), if timer.is_some() => {
                    self.fire_due();
                }
                _ = shutdown.wait_for(|s| *s) => break,
            }
        }
        self.invocations.abort_all();
    }

    fn on_input(&mut self, input: Input) {
        match input {
            Input::Deliver { env, admission, from } => {
                if let (Some(from), Some(epochs)) = (from, self.epochs.as_mut())
                    && epochs.recording()
                {
                    epochs.record(from, &env);
                }
                self.deliver(env, admission, false);
            }
            Input::Ingest { env, admission, epoch } => {
                if let Some(tx) = epoch {
                    if let Some(epochs) = &self.epochs {
                        epochs.want();
                    }
                    let _ = tx.send(self.epochs.as_ref().map_or(0, Epochs::epoch));
                }
                self.deliver(env, admission, true);
            }
            Input::Source { source, next, records } => {
                self.reading.insert(source.clone());
                self.positions.insert(source, next);
                for (env, admission) in records {
                    self.deliver(env, admission, true);
                }
            }
            Input::Trigger(n) => self.on_barrier(n, None),
            Input::Barrier { from, checkpoint } => self.on_barrier(checkpoint, Some(from)),
            Input::Completed(n) => self.on_completed(n),
            Input::ReadState(addr, reply) => {
                let values = self
                    .specs
                    .specs(&addr.typename)
                    .iter()
                    .filter_map(|s| Some((s.name.to_string(), self.state.get(&addr, &s.name)?.clone())))
                    .collect();
                let _ = reply.send(values);
            }
        }
    }

    /// Queues a message for its target and starts a batch if the address is idle; a message
    /// for an address another worker owns goes to that worker.
    /// `produced_here`: the message comes from this partition (a function's output, a due
    /// delayed message or an ingress record), so its route is decided here; others were routed
    /// already.
    fn deliver(&mut self, env: Envelope, admission: Option<Admission>, produced_here: bool) {
        if self.app.function_for(&env.target.typename).is_none() {
            self.dead_letters.record(
                kind::UNKNOWN_FUNCTION,
                format!("no function serves type `{}`", env.target.typename),
                vec![DeadMessage::from_envelope(&env)],
            );
            return;
        };
        let owner = self.router.owner(&env.target);
        if owner != self.router.me() {
            // Fails only when the worker is stopping, when nothing is delivered anyway.
            let _ = self.router.forward(owner, env, admission);
            return;
        }
        if produced_here {
            self.router.count("local");
        }
        if let Some(key) = &env.dedup
            && !self.seen.insert(&env.target, key, now_ms())
        {
            // Applied before (within the window): acknowledged, not applied again.
            self.metrics.ingress_duplicates.inc();
            return;
        }
        self.enqueue(env, admission);
    }

    /// Puts a message for an address this partition owns in its mailbox.
    fn enqueue(&mut self, env: Envelope, admission: Option<Admission>) {
        let Some(function) = self.app.function_for(&env.target.typename).map(|f| f.id) else {
            return;
        };
        let target = env.target.clone();
        let mailbox = self.mailboxes.entry(target.clone()).or_default();
        mailbox.queue.push_back(Pending { env, admission });
        self.metrics.messages_queued.inc();
        if !mailbox.busy {
            mailbox.busy = true;
            self.schedule(target, function);
        }
    }

    /// Starts a batch for `addr` now, or queues it behind the others waiting for a slot.
    fn schedule(&mut self, addr: Address, function: usize) {
        let max = self.app.functions[function].max_in_flight;
        let slots = &mut self.slots[function];
        if slots.in_flight < max && slots.waiting.is_empty() {
            self.start(addr, function);
        } else {
            slots.waiting.push_back(addr);
        }
    }

    fn fill_slots(&mut self, function: usize) {
        let max = self.app.functions[function].max_in_flight;
        while self.slots[function].in_flight < max {
            let Some(addr) = self.slots[function].waiting.pop_front() else {
                break;
            };
            self.start(addr, function);
        }
    }

    fn start(&mut self, target: Address, function: usize) {
        let max_batch = self.app.functions[function].max_batch_size;
        let mailbox = self
            .mailboxes
            .get_mut(&target)
            .expect("a scheduled address has a mailbox");
        let n = mailbox.queue.len().min(max_batch);
        let messages: Vec<Pending> = mailbox.queue.drain(..n).collect();
        self.metrics.messages_queued.dec_by(n as i64);
        self.launch(Batch {
            target,
            function,
            messages,
            incomplete_rounds: 0,
        });
    }

    fn launch(&mut self, batch: Batch) {
        let entry = &self.app.functions[batch.function];
        let uri = match self.endpoints.get(&batch.target.typename) {
            Some(uri) => uri.clone(),
            None => {
                let url = entry.endpoint_for(&batch.target.typename);
                match url.parse::<Uri>() {
                    Ok(uri) => {
                        self.endpoints.insert(batch.target.typename.clone(), uri.clone());
                        uri
                    }
                    Err(e) => {
                        let reason = format!("endpoint `{url}` is not a valid URL: {e}");
                        return self.fail_batch(batch, kind::INVOCATION_FAILED, reason);
                    }
                }
            }
        };
        let specs = self.specs.specs(&batch.target.typename);
        let request = ToFunction {
            request: Some(spindle_protocol::reqreply::to_function::Request::Invocation(
                InvocationBatchRequest {
                    target: Some(batch.target.to_proto()),
                    state: self.state.values_for_invocation(&batch.target, specs, now_ms()),
                    invocations: batch
                        .messages
                        .iter()
                        .map(|p| to_function::Invocation {
                            caller: p.env.caller.as_ref().map(Address::to_proto),
                            argument: Some(p.env.value.to_proto()),
                        })
                        .collect(),
                },
            )),
        };
        self.slots[batch.function].in_flight += 1;
        self.metrics.batches_in_flight.inc();
        let invoker = self.invoker.clone();
        let timeout = entry.call_timeout;
        let retries = self
            .metrics
            .invocation_retries
            .get_or_create(&FunctionLabels {
                function: batch.target.typename.to_string(),
            })
            .clone();
        let target = batch.target.clone();
        self.in_flight.insert(target.clone(), batch);
        self.invocations.spawn(async move {
            let started = Instant::now();
            let result = invoker
                .invoke(&uri, &request, timeout, |reason| {
                    retries.inc();
                    tracing::warn!(%target, %reason, "invocation attempt failed; retrying");
                })
                .await;
            Completion {
                target,
                result,
                elapsed: started.elapsed(),
            }
        });
    }

    fn on_completion(&mut self, c: Completion) {
        let Completion {
            target,
            result,
            elapsed,
        } = c;
        let Some(mut batch) = self.in_flight.remove(&target) else {
            tracing::error!(%target, "an invocation completed for an address with no batch in flight");
            return;
        };
        let function = batch.function;
        let label = batch.target.typename.to_string();
        self.metrics
            .invocation_seconds
            .get_or_create(&FunctionLabels {
                function: label.clone(),
            })
            .observe(elapsed.as_secs_f64());
        let count = |outcome| OutcomeLabels {
            function: label.clone(),
            outcome,
        };
        match result {
            Ok(Reply::Result(response)) => {
                self.metrics.invocations.get_or_create(&count(outcome::OK)).inc();
                self.metrics
                    .invocation_messages
                    .get_or_create(&FunctionLabels {
                        function: label.clone(),
                    })
                    .inc_by(batch.messages.len() as u64);
                self.apply(&batch.target, response);
            }
            Ok(Reply::Incomplete(missing)) => {
                self.metrics
                    .invocations
                    .get_or_create(&count(outcome::INCOMPLETE))
                    .inc();
                // Several batches of one type may ask at once; the first registers, the others
                // just re-send. Only a function that keeps asking hits the round limit.
                self.specs
                    .register(&batch.target.typename, missing.iter().map(StateSpec::from_proto));
                batch.incomplete_rounds += 1;
                if batch.incomplete_rounds < MAX_INCOMPLETE_ROUNDS {
                    tracing::debug!(target = %batch.target, specs = missing.len(), "registered state specs; re-sending the batch");
                    // Launch before releasing the slot, so that gauges never read idle between.
                    self.launch(batch);
                    self.release_slot(function);
                    return;
                }
                let names: Vec<_> = missing.iter().map(|s| s.state_name.as_str()).collect();
                let reason = format!(
                    "function `{}` asked again for state {names:?} that it was already given",
                    batch.target.typename
                );
                self.metrics.invocations.get_or_create(&count(outcome::FAILED)).inc();
                self.dead_letter_batch(&batch, kind::BAD_REPLY, reason);
            }
            Err(failure) => {
                self.metrics.invocations.get_or_create(&count(outcome::FAILED)).inc();
                let reason = format!(
                    "invoking {} failed ({}, {} attempts): {}",
                    batch.target, failure.kind, failure.attempts, failure.reason
                );
                self.dead_letter_batch(&batch, kind::INVOCATION_FAILED, reason);
            }
        }
        self.finish(batch);
        self.release_slot(function);
    }

    /// A batch that could not be sent at all.
    fn fail_batch(&mut self, batch: Batch, kind: &'static str, reason: String) {
        self.dead_letter_batch(&batch, kind, reason);
        self.slots[batch.function].in_flight += 1; // balanced by release_slot below
        self.metrics.batches_in_flight.inc();
        let function = batch.function;
        self.finish(batch);
        self.release_slot(function);
    }

    fn dead_letter_batch(&self, batch: &Batch, kind: &'static str, reason: String) {
        let messages = batch
            .messages
            .iter()
            .map(|p| DeadMessage::from_envelope(&p.env))
            .collect();
        self.dead_letters.record(kind, reason, messages);
    }

    /// The batch is done: its messages (and their ingress admissions) are released and the
    /// address is rescheduled if more arrived meanwhile.
    fn finish(&mut self, batch: Batch) {
        let Batch {
            target,
            function,
            messages,
            ..
        } = batch;
        drop(messages);
        let more = self.mailboxes.get(&target).is_some_and(|m| !m.queue.is_empty());
        if more {
            self.schedule(target, function);
        } else {
            self.mailboxes.remove(&target);
        }
    }

    fn release_slot(&mut self, function: usize) {
        self.slots[function].in_flight -= 1;
        self.fill_slots(function);
        self.metrics.batches_in_flight.dec();
    }

    /// Applies a function's answer: state first, then messages, delayed messages, egress.
    fn apply(&mut self, source: &Address, r: InvocationResponse) {
        let now = now_ms();
        let specs = self.specs.specs(&source.typename);
        self.state.apply(source, r.state_mutations, specs, now);
        for m in r.outgoing_messages {
            match envelope(source, m.target, m.argument) {
                Ok(env) => self.deliver(env, None, true),
                Err(reason) => self.bad_reply(source, reason),
            }
        }
        for d in r.delayed_invocations {
            if d.is_cancellation_request {
                if self.delayed.cancel(source, &d.cancellation_token) {
                    self.metrics.delayed_cancelled.inc();
                }
                continue;
            }
            match envelope(source, d.target, d.argument) {
                Ok(env) => {
                    let due = now.saturating_add(d.delay_in_ms.max(0) as u64);
                    self.delayed.schedule(due, env, Some(&d.cancellation_token));
                }
                Err(reason) => self.bad_reply(source, reason),
            }
        }
        self.metrics.delayed_pending.set(self.delayed.len() as i64);
        for e in r.outgoing_egresses {
            let record = TypeName::new(&e.egress_namespace, &e.egress_type)
                .map_err(|err| format!("egress message to a malformed egress: {err}"))
                .and_then(|egress| {
                    let value = e
                        .argument
                        .and_then(Value::from_proto)
                        .ok_or_else(|| format!("egress message to `{egress}` without a value"))?;
                    Ok(EgressRecord {
                        egress,
                        value,
                        source: source.clone(),
                        key: None,
                    })
                });
            match record {
                Ok(record) if !self.egress.has(&record.egress) => {
                    self.dead_letters.record(
                        kind::UNKNOWN_EGRESS,
                        format!(
                            "{source} sent to egress `{}`, which the application does not declare",
                            record.egress
                        ),
                        vec![record.dead_message()],
                    );
                }
                Ok(record) => match self.epochs.as_mut() {
                    Some(epochs) => epochs.hold(record),
                    None => {
                        let _ = self.egress.emit(record);
                    }
                },
                Err(reason) => self.bad_reply(source, reason),
            }
        }
    }

    fn bad_reply(&self, source: &Address, reason: String) {
        self.dead_letters
            .record(kind::BAD_REPLY, format!("reply of {source}: {reason}"), vec![]);
    }

    fn fire_due(&mut self) {
        for env in self.delayed.take_due(now_ms()) {
            self.deliver(env, None, true);
        }
        self.metrics.delayed_pending.set(self.delayed.len() as i64);
    }
}

/// An outgoing message from the wire, sent by `source`.
fn envelope(
    source: &Address,
    target: Option<spindle_protocol::reqreply::Address>,
    argument: Option<spindle_protocol::reqreply::TypedValue>,
) -> Result<Envelope, String> {
    let target = target
        .as_ref()
        .and_then(Address::from_proto)
        .ok_or_else(|| format!("message with a missing or malformed target {target:?}"))?;
    let value = argument
        .and_then(Value::from_proto)
        .ok_or_else(|| format!("message to {target} without a value"))?;
    Ok(Envelope {
        target,
        caller: Some(source.clone()),
        value,
        dedup: None,
    })
}

impl Drop for Partition {
    fn drop(&mut self) {
        // A partition ends with its generation; what it held is not queued or in flight any
        // more (a rollback restores it from the checkpoint), so the gauges must not say so.
        let queued: usize = self.mailboxes.values().map(|m| m.queue.len()).sum();
        self.metrics.messages_queued.dec_by(queued as i64);
        self.metrics.batches_in_flight.dec_by(self.in_flight.len() as i64);
        self.metrics.delayed_pending.dec_by(self.delayed.len() as i64);
    }
}
