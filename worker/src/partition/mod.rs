//! A partition: the addresses a worker owns, their mailboxes, state and delayed messages,
//! driven by one task so that all of it changes in one place, in order.
//!
//! The loop takes its inbox (`crate::inbox`), invocation completions and due timers.
//! Invocations run as futures (one per batch, not per message) on a `JoinSet` the loop owns, so
//! they end with it; the [`Invoke`] implementation is injected, so tests drive a partition
//! with a fake one. Messages for addresses other workers own leave through the partition's own
//! [`outbound::Outbound`] switch — nothing else can send on peer channels, which the
//! checkpoint barriers rely on.
//!
//! Everything a checkpoint captures — state, specs, queued messages, batches in flight (kept
//! here, not in the invocation future, so a snapshot sees them), delayed messages, held
//! egress — lives in this struct; barriers arrive as inputs, in order with messages
//! ([`epochs`]), and a snapshot is a [`Capture`].
//!
//! - `batches`: scheduling, invocation and completion of batches
//! - `apply`: a function's effects (state, messages, delayed messages, egress)
//! - `epochs`: barriers, snapshots, egress held per epoch

mod apply;
mod batches;
mod capture;
mod deadletters;
mod dedup;
mod delayed;
mod epochs;
mod mailbox;
pub(crate) mod outbound;
mod replies;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

pub(crate) use capture::{Capture, Compaction};
pub(crate) use dedup::{Seen, SeenKeys};
pub(crate) use epochs::Epochs;

use crate::app::AppConfig;
use crate::clock::now_ms;
use crate::deadletter::{DeadLetters, Payload, kind};
use crate::egress::EgressHub;
use crate::inbox::{Admission, InboxReceiver, Input, Positions};
use crate::invoker::{Invoke, InvokeFailure, Outcome};
use crate::memory::{Memory, Queue, Tally};
use crate::message::{Address, Envelope};
use crate::metrics::Metrics;
use crate::reply::{Replies, ReplyTo};
use crate::state::{SpecRegistry, StateStore};
use crate::stop::CancellationToken;
use crate::trace::{Kind, Tracer};
use deadletters::DeadLetterBox;
use delayed::DelayedMessages;
use mailbox::{Batch, Mailbox, Pending, Slots};
use outbound::Outbound;

use crate::poison::{self, Board, MessageId, message_id};

/// How often the batches in flight are shown to the coordinator's heartbeat (those in flight
/// for at least this long: quick ones never are).
const SHOW_IN_FLIGHT_EVERY: Duration = Duration::from_millis(100);

/// How long an ingress idempotency key is remembered.
pub const DEDUP_WINDOW_MS: u64 = 15 * 60 * 1000;

/// An invocation that ended.
struct Completion {
    target: Address,
    result: Result<Outcome, InvokeFailure>,
    elapsed: Duration,
}

/// What a partition is made of; all of it outlives nothing but the partition's generation.
pub(crate) struct Parts {
    pub app: Arc<AppConfig>,
    pub outbound: Outbound,
    pub invoker: Arc<dyn Invoke>,
    pub egress: EgressHub,
    pub dead_letters: Arc<DeadLetters>,
    pub metrics: Arc<Metrics>,
    /// `None` when checkpoints are off: egress then leaves at once (at-most-once).
    pub epochs: Option<Epochs>,
    /// What this generation resumes from.
    pub restored: Capture,
    /// The generation this partition belongs to (dead-letter ids name it).
    pub generation: u64,
    /// The HTTP requests of this process waiting for replies.
    pub replies: Arc<Replies>,
    /// Key groups to capture whole at the next snapshot (checkpoints on).
    pub compaction: Compaction,
    /// How often one key group's expired values are swept (so every group is swept about
    /// once a minute).
    pub sweep_every: Duration,
    /// Opt-in tracing: spans per ingress record and per invocation batch.
    pub tracer: Tracer,
    /// The worker's memory budget: held egress, idempotency keys and delayed messages count in
    /// it.
    pub memory: Arc<Memory>,
    /// Messages to set aside as dead letters (poison, `crate::poison`) when restored or
    /// received in this generation.
    pub poison: HashSet<MessageId>,
    /// Where this partition's long-running batches are shown to the coordinator's heartbeat.
    pub in_flight: Arc<Board>,
}

/// The partition's queues in the memory budget, brought up to date after every step.
struct Tallies {
    held: Tally,
    keys: Tally,
    delayed: Tally,
}

pub(crate) struct Partition {
    app: Arc<AppConfig>,
    /// For messages to addresses other workers own.
    outbound: Outbound,
    invoker: Arc<dyn Invoke>,
    mailboxes: HashMap<Address, Mailbox>,
    /// The batch in flight per address (at most one).
    in_flight: HashMap<Address, Batch>,
    slots: Vec<Slots>,
    specs: SpecRegistry,
    state: StateStore,
    delayed: DelayedMessages,
    seen: SeenKeys,
    /// Dead letters kept (checkpointed) until replayed or dropped.
    dead: DeadLetterBox,
    egress: EgressHub,
    /// The log of dead letters (and their metrics).
    dead_letters: Arc<DeadLetters>,
    metrics: Arc<Metrics>,
    invocations: JoinSet<Completion>,
    epochs: Option<Epochs>,
    /// What this generation resumes from; taken when `run` starts.
    restored: Option<Capture>,
    /// Per source: the next position to read. Restored for every source, so a snapshot taken
    /// before a source's reader reported still holds its position; merging parts takes the
    /// highest.
    positions: Positions,
    /// Sources this worker reads in this generation: only their positions are committed back.
    reading: HashSet<Arc<str>>,
    /// Where released replies go.
    replies: Arc<Replies>,
    compaction: Compaction,
    sweep_every: Duration,
    /// The next key group the sweep looks at.
    sweep_from: u32,
    tracer: Tracer,
    tallies: Tallies,
    poison: HashSet<MessageId>,
    in_flight_board: Arc<Board>,
    generation: u64,
}

impl Partition {
    pub fn new(p: Parts) -> Partition {
        let slots = p.app.functions.iter().map(|_| Slots::default()).collect();
        let dead = DeadLetterBox::new(p.outbound.me(), p.generation, p.app.dead_letter_bytes);
        let key_groups = p.app.key_groups;
        Partition {
            dead,
            app: p.app,
            outbound: p.outbound,
            invoker: p.invoker,
            mailboxes: HashMap::new(),
            in_flight: HashMap::new(),
            slots,
            specs: SpecRegistry::default(),
            state: StateStore::new(key_groups),
            delayed: DelayedMessages::default(),
            seen: SeenKeys::new(DEDUP_WINDOW_MS),
            egress: p.egress,
            dead_letters: p.dead_letters,
            metrics: p.metrics,
            invocations: JoinSet::new(),
            epochs: p.epochs,
            restored: Some(p.restored),
            positions: Positions::new(),
            reading: HashSet::new(),
            replies: p.replies,
            compaction: p.compaction,
            sweep_every: p.sweep_every,
            sweep_from: 0,
            tracer: p.tracer,
            tallies: Tallies {
                held: p.memory.tally(Queue::HeldEgress),
                keys: p.memory.tally(Queue::IdempotencyKeys),
                delayed: p.memory.tally(Queue::Delayed),
            },
            poison: p.poison,
            in_flight_board: p.in_flight,
            generation: p.generation,
        }
    }

    /// Takes up where the restored checkpoint left off: state, messages (re-invoking batches
    /// that were in flight), delayed messages, and egress output not known to have left.
    fn resume(&mut self) {
        let Some(r) = self.restored.take() else {
            return;
        };
        self.state = r.state;
        if self.epochs.is_some() {
            self.state.track_changes();
        }
        self.specs = r.specs;
        for (due, env, token) in r.delayed {
            self.delayed.schedule(due, env, token.as_deref());
        }
        self.metrics.delayed_pending.set(self.delayed.len() as i64);
        self.seen = r.seen;
        self.positions = r.positions;
        self.dead.restore(r.dead_letters);
        self.metrics.dead_letter_bytes.set(self.dead.bytes() as i64);
        // Records a sink gave up on after the restored checkpoint are pending again in it:
        // they are retried, not dead letters.
        self.egress.unconfirmed.clear_dead();
        // Keys of the snapshot's messages are known already (or are added now): they were
        // accepted before it. Channel state is recorded as it arrives, before the check that
        // drops a retry of an input already accepted (`deliver`), so a recorded message whose
        // key is known is such a retry: dropped here as it was then. (Without this, a caller
        // retrying one input at two workers at once had it applied twice after a rollback.)
        let recorded_from = r.messages.len();
        for (i, env) in r.messages.into_iter().chain(r.recorded).enumerate() {
            // A reply on its way is routed on from here (a checkpoint keeps it by the key group
            // of its address, which says nothing of where it goes).
            if ReplyTo::is_reply(&env.target) {
                self.route_reply(env, None);
                continue;
            }
            if let Some(key) = &env.dedup
                && !self.seen.insert(&env.target, key, now_ms())
                && i >= recorded_from
            {
                self.metrics.ingress_duplicates.inc();
                continue;
            }
            self.enqueue(env, None);
        }
        // Records still on their way to a sink of this process (a rollback, not a restart) are
        // written by the copy already queued; the others are released again, and sinks that
        // can read their output back first learn from where.
        let (queued, again): (Vec<_>, Vec<_>) = r
            .egress
            .into_iter()
            .partition(|p| self.egress.unconfirmed.contains(&p.key));
        let egresses: std::collections::BTreeSet<_> = again.iter().map(|p| p.record.egress.clone()).collect();
        for egress in egresses {
            let mark = r.sink_marks.get(&egress).copied().unwrap_or(0);
            self.egress.resume(&egress, mark);
        }
        let resent = again.iter().filter(|p| !ReplyTo::is_reply(&p.record.source)).count();
        self.metrics.egress_resent.inc_by(resent as u64);
        if !queued.is_empty() {
            tracing::debug!(
                records = queued.len(),
                "restored egress records still queued in their sinks are not released again"
            );
        }
        if let Some(epochs) = self.epochs.as_mut() {
            epochs.hold_restored(again);
        }
        self.on_completed(r.checkpoint);
    }

    /// Runs until `stop` fires or every sender of `inputs` is gone. In-flight invocations are
    /// abandoned then: a rollback re-invokes them from the checkpoint.
    pub async fn run(mut self, mut inputs: InboxReceiver, stop: CancellationToken) {
        self.resume();
        self.account();
        let mut buf = Vec::with_capacity(256);
        let mut sweep = tokio::time::interval(self.sweep_every);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut show = tokio::time::interval(SHOW_IN_FLIGHT_EVERY);
        show.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                _ = sweep.tick() => self.sweep_step(),
                _ = show.tick() => self.show_in_flight(),
                _ = stop.cancelled() => break,
            }
            self.account();
        }
        self.invocations.abort_all();
    }

    /// Tells the memory budget what the partition's own queues cost now.
    fn account(&mut self) {
        let held = self.epochs.as_ref().map_or(0, Epochs::held_bytes);
        self.tallies.held.set(held);
        self.tallies.keys.set(self.seen.bytes());
        self.tallies.delayed.set(self.delayed.bytes());
    }

    fn on_input(&mut self, input: Input) {
        match input {
            Input::Deliver { env, admission, from } => {
                if let Some(epochs) = self.epochs.as_mut()
                    && epochs.recording()
                {
                    epochs.record(from, &env);
                }
                self.deliver(env, admission, false);
            }
            Input::Ingest {
                mut env,
                admission,
                epoch,
            } => {
                self.trace_ingress(&mut env, "http");
                if let Some(tx) = epoch {
                    if let Some(epochs) = &self.epochs {
                        epochs.want();
                    }
                    let _ = tx.send(self.epochs.as_ref().map_or(0, Epochs::epoch));
                }
                self.deliver(env, admission, true);
            }
            Input::Source {
                source,
                next,
                records,
                refused,
            } => {
                self.reading.insert(source.clone());
                self.positions.insert(source.clone(), next);
                for (mut env, admission) in records {
                    self.trace_ingress(&mut env, &source);
                    self.deliver(env, admission, true);
                }
                for r in refused {
                    self.dead(r.kind, r.reason, r.payload);
                }
            }
            Input::DeadLetter(r) => self.dead(r.kind, r.reason, r.payload),
            Input::DeadLetters(op) => self.on_dead_letters(op),
            Input::Trigger(n) => self.on_barrier(n, None),
            Input::Barrier { from, checkpoint } => self.on_barrier(checkpoint, Some(from)),
            Input::Completed(n) => self.on_completed(n),
            Input::ReadState(addr, reply) => {
                let values = self
                    .specs
                    .specs(&addr.typename)
                    .iter()
                    .filter_map(|s| Some((s.name.to_string(), self.state.get(&addr, &s.name)?)))
                    .collect();
                let _ = reply.send(values);
            }
            Input::ListState(query, reply) => {
                let _ = reply.send(crate::state::query::select(&self.state, &query, now_ms()));
            }
        }
    }

    /// The span of an ingress record (tracing on): the root of its trace, or the child of the
    /// caller's `traceparent`; the message carries it on to its invocation.
    fn trace_ingress(&self, env: &mut Envelope, ingress: &str) {
        let parent = env.trace.take();
        if !self.tracer.is_on() {
            return;
        }
        let Some(mut span) = self.tracer.start_span("spindle.ingress", Kind::Server, parent) else {
            return;
        };
        span.str("spindle.ingress", ingress)
            .str("statefun.target.type", env.target.typename.as_str())
            .str("statefun.target.id", env.target.id.as_ref())
            .str("statefun.message.typename", env.value.typename.as_ref())
            .int("spindle.worker", self.outbound.me() as i64);
        env.trace = Some(span.ctx);
        self.tracer.end(span);
    }

    /// Drops the expired values of the next key group that has any (so values of addresses
    /// nobody invokes again do not stay for ever); the next checkpoint writes the change.
    fn sweep_step(&mut self) {
        let Some(kg) = self.state.next_expiring(self.sweep_from) else {
            return;
        };
        self.sweep_from = kg + 1;
        let swept = self.state.sweep(kg, now_ms());
        self.metrics.state_expired.inc_by(swept as u64);
    }

    /// Queues a message for its target and starts a batch if the address is idle; a message
    /// for an address another worker owns goes to that worker.
    /// `produced_here`: the message comes from this partition (a function's output, a due
    /// delayed message or an ingress record), so its route is decided here; others were routed
    /// already.
    fn deliver(&mut self, env: Envelope, admission: Option<Admission>, produced_here: bool) {
        if ReplyTo::is_reply(&env.target) {
            self.route_reply(env, admission);
            return;
        }
        if self.app.function_for(&env.target.typename).is_none() {
            let reason = format!("no function serves type `{}`", env.target.typename);
            self.dead(kind::UNKNOWN_FUNCTION, reason, Payload::Messages(vec![env]));
            return;
        };
        let owner = self.outbound.owner(&env.target);
        if owner != self.outbound.me() {
            let size = crate::proto::wire_size(&env);
            if size > crate::peer::MAX_ENVELOPE_BYTES {
                let reason = format!(
                    "the message is {size} bytes encoded; at most {} travel between workers",
                    crate::peer::MAX_ENVELOPE_BYTES
                );
                self.dead(kind::TOO_LARGE, reason, Payload::Messages(vec![env]));
                return;
            }
            self.outbound.forward(owner, env, admission);
            return;
        }
        if produced_here {
            self.outbound.count_local();
        }
        if let Some(key) = &env.dedup
            && !self.seen.insert(&env.target, key, now_ms())
        {
            // Applied before (within the window): acknowledged, not applied again.
            self.metrics.ingress_duplicates.inc();
            self.answer_retry(&env, key);
            return;
        }
        self.enqueue(env, admission);
    }

    /// Puts a message for an address this partition owns in its mailbox (or, if it is
    /// poison, with the dead letters).
    fn enqueue(&mut self, env: Envelope, admission: Option<Admission>) {
        let Some(function) = self.app.function_for(&env.target.typename).map(|f| f.id) else {
            return;
        };
        if !self.poison.is_empty() && self.poison.remove(&message_id(&env)) {
            self.metrics.poison_dead_letters.inc();
            tracing::warn!(
                target = %env.target,
                rollbacks = self.app.poison_after_rollbacks,
                "set aside as a dead letter: this message was in flight at every one of the last rollbacks"
            );
            let why = poison::reason(self.app.poison_after_rollbacks);
            self.dead(kind::POISON, why, Payload::Messages(vec![env]));
            return;
        }
        let target = env.target.clone();
        let mailbox = self.mailboxes.entry(target.clone()).or_default();
        mailbox.queue.push_back(Pending {
            env,
            _admission: admission,
        });
        self.metrics.messages_queued.inc();
        if !mailbox.busy {
            mailbox.busy = true;
            self.schedule(target, function);
        }
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        // A partition ends with its generation; what it held is not queued or in flight any
        // more (a rollback restores it from the checkpoint), so the gauges must not say so.
        let queued: usize = self.mailboxes.values().map(|m| m.queue.len()).sum();
        self.metrics.messages_queued.dec_by(queued as i64);
        self.metrics.batches_in_flight.dec_by(self.in_flight.len() as i64);
        let in_flight: usize = self.in_flight.values().map(|b| b.messages.len()).sum();
        self.metrics.messages_in_flight.dec_by(in_flight as i64);
        self.metrics.delayed_pending.dec_by(self.delayed.len() as i64);
    }
}
