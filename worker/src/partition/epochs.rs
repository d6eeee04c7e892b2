//! Checkpoint epochs inside a partition: snapshots at barriers, Chandy–Lamport channel
//! recording, and egress held back until the checkpoint of its epoch completes.
//!
//! Epoch `n` is everything this worker does between its snapshots for checkpoints `n - 1` and
//! `n`. The snapshot for `n` is taken at the first barrier `n` to arrive (or the coordinator's
//! trigger): the partition copies its state, mailboxes, in-flight batches and delayed messages,
//! then — before handling anything else — puts barrier `n` on every outgoing channel. Until
//! barrier `n` arrives on an input channel, messages from that channel were sent before the
//! sender's snapshot, so they are recorded into the snapshot as well as processed.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, watch};

use super::{Capture, Partition};
use crate::clock::now_ms;
use crate::egress::{EgressRecord, PendingEgress};
use crate::inbox::Positions;
use crate::message::Envelope;
use crate::metrics::Metrics;
use crate::state::StateStore;

pub(crate) struct Epochs {
    application: Arc<str>,
    /// The generation this partition runs: part of every idempotency key, since a generation
    /// that restored past a damaged checkpoint numbers its epochs like the one before it.
    generation: u64,
    me: u32,
    peers: Vec<u32>,
    /// Id of the checkpoint that ends the current epoch (the next snapshot).
    epoch: u64,
    /// Sequence of egress records within the current epoch (for idempotency keys).
    seq: u64,
    recordings: BTreeMap<u64, Recording>,
    /// Egress records waiting for their checkpoint, in epoch order.
    held: VecDeque<PendingEgress>,
    /// What they cost (`spec.memory.heldEgressBytes`).
    held_bytes: u64,
    /// Finished captures, to the uploader. Unbounded: at most one per checkpoint interval.
    snapshots: mpsc::UnboundedSender<Capture>,
    /// Group commit: the highest epoch something here waits for, to the coordinator
    /// (`checkpoint::wants`). `None`: checkpoints only start every interval.
    wants: Option<watch::Sender<u64>>,
    /// Positions of the sources this worker reads, as of each snapshot not yet complete.
    positions_at: BTreeMap<u64, Positions>,
    /// Where the positions of a completed checkpoint go (committed back to Kafka consumer
    /// groups). Unbounded: one map per completed checkpoint.
    completed_positions: Option<mpsc::UnboundedSender<Positions>>,
    metrics: Arc<Metrics>,
}

/// A held record's cost: the record and its idempotency key.
fn held_bytes(p: &PendingEgress) -> u64 {
    p.record.bytes() + p.key.len() as u64
}

struct Recording {
    snapshot: Capture,
    /// Input channels whose barrier has not arrived yet.
    waiting: HashSet<u32>,
    started: Instant,
}

impl Epochs {
    /// `restored`: the checkpoint this generation started from (0: none).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        application: Arc<str>,
        generation: u64,
        me: u32,
        workers: u32,
        restored: u64,
        snapshots: mpsc::UnboundedSender<Capture>,
        wants: Option<watch::Sender<u64>>,
        metrics: Arc<Metrics>,
    ) -> Epochs {
        Epochs {
            application,
            generation,
            me,
            peers: (0..workers).filter(|&w| w != me).collect(),
            epoch: restored + 1,
            seq: 0,
            recordings: BTreeMap::new(),
            held: VecDeque::new(),
            held_bytes: 0,
            snapshots,
            wants,
            positions_at: BTreeMap::new(),
            completed_positions: None,
            metrics,
        }
    }

    /// Sends the sources' positions of every completed checkpoint to `tx`.
    pub fn report_positions(mut self, tx: mpsc::UnboundedSender<Positions>) -> Epochs {
        self.completed_positions = Some(tx);
        self
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Something produced now waits for checkpoint `epoch` (group commit).
    pub fn want(&self) {
        if let Some(w) = &self.wants {
            let epoch = self.epoch;
            w.send_if_modified(|wanted| {
                let newer = epoch > *wanted;
                if newer {
                    *wanted = epoch;
                }
                newer
            });
        }
    }

    /// Holds a record produced now until checkpoint `epoch` completes.
    pub fn hold(&mut self, record: EgressRecord) {
        self.hold_keyed(record, None);
    }

    /// As [`hold`](Self::hold), keeping `key` when the record has one already (a replayed
    /// dead letter: receivers that saw the key before drop it).
    pub fn hold_keyed(&mut self, record: EgressRecord, key: Option<Arc<str>>) {
        self.want();
        let key = key.unwrap_or_else(|| {
            self.seq += 1;
            format!(
                "{}/{}/{}/{}/{}",
                self.application, self.generation, self.epoch, self.me, self.seq
            )
            .into()
        });
        self.metrics.egress_pending.inc();
        let p = PendingEgress {
            epoch: self.epoch,
            key,
            record,
        };
        self.held_bytes += held_bytes(&p);
        self.held.push_back(p);
    }

    /// What the held records cost, in bytes.
    pub fn held_bytes(&self) -> u64 {
        self.held_bytes
    }

    /// Records restored from a checkpoint (its epochs are complete: released at once).
    pub fn hold_restored(&mut self, restored: Vec<PendingEgress>) {
        self.metrics.egress_pending.inc_by(restored.len() as i64);
        for (i, p) in restored.into_iter().enumerate() {
            self.held_bytes += held_bytes(&p);
            self.held.insert(i, p);
        }
    }

    /// Takes the records of epochs up to `completed`.
    pub fn release(&mut self, completed: u64) -> Vec<PendingEgress> {
        let n = self.held.iter().take_while(|p| p.epoch <= completed).count();
        let released: Vec<PendingEgress> = self.held.drain(..n).collect();
        self.held_bytes -= released.iter().map(held_bytes).sum::<u64>();
        released
    }

    pub fn recording(&self) -> bool {
        !self.recordings.is_empty()
    }

    /// A message from peer `from`, about to be delivered: part of the channel state of every
    /// snapshot still waiting for that channel's barrier.
    pub fn record(&mut self, from: u32, env: &Envelope) {
        for r in self.recordings.values_mut() {
            if r.waiting.contains(&from) {
                r.snapshot.recorded.push(env.clone());
            }
        }
    }

    /// A barrier from `from` (or the trigger, `None`) for checkpoint `n`: true when the
    /// partition must snapshot now.
    fn needs_snapshot(&mut self, n: u64, from: Option<u32>) -> bool {
        if n >= self.epoch {
            return true;
        }
        if let Some(from) = from
            && let Some(r) = self.recordings.get_mut(&n)
        {
            r.waiting.remove(&from);
        }
        false
    }

    fn start(&mut self, snapshot: Capture, from: Option<u32>) {
        let n = snapshot.checkpoint;
        self.epoch = n + 1;
        self.seq = 0;
        let waiting = self.peers.iter().copied().filter(|&p| Some(p) != from).collect();
        self.recordings.insert(
            n,
            Recording {
                snapshot,
                waiting,
                started: Instant::now(),
            },
        );
    }

    /// Hands every snapshot whose channels are all closed to the uploader.
    fn finish_ready(&mut self) {
        let done: Vec<u64> = self
            .recordings
            .iter()
            .filter(|(_, r)| r.waiting.is_empty())
            .map(|(n, _)| *n)
            .collect();
        for n in done {
            let r = self.recordings.remove(&n).expect("listed above");
            tracing::debug!(
                checkpoint = n,
                recorded = r.snapshot.recorded.len(),
                aligned_ms = r.started.elapsed().as_millis() as u64,
                "snapshot complete"
            );
            let _ = self.snapshots.send(r.snapshot);
        }
    }
}

impl Drop for Epochs {
    fn drop(&mut self) {
        // Held records die with this generation (a rollback): they were never released.
        self.metrics.egress_pending.dec_by(self.held.len() as i64);
    }
}

impl Partition {
    /// Barrier `n` from peer `from`, or the coordinator's trigger for `n` (`from = None`).
    pub(super) fn on_barrier(&mut self, n: u64, from: Option<u32>) {
        let Some(epochs) = self.epochs.as_mut() else {
            return;
        };
        if epochs.needs_snapshot(n, from) {
            let started = Instant::now();
            let snapshot = self.capture(n);
            self.metrics
                .checkpoint_capture_seconds
                .observe(started.elapsed().as_secs_f64());
            let reading: Positions = self
                .positions
                .iter()
                .filter(|(k, _)| self.reading.contains(*k))
                .map(|(k, v)| (k.clone(), *v))
                .collect();
            // Nothing else runs in between: the barriers follow exactly the messages sent
            // before the snapshot, on every channel.
            self.outbound.barrier(n);
            let epochs = self.epochs.as_mut().expect("checked above");
            if epochs.completed_positions.is_some() && !reading.is_empty() {
                epochs.positions_at.insert(n, reading);
            }
            epochs.start(snapshot, from);
        }
        self.epochs.as_mut().expect("checked above").finish_ready();
    }

    /// Checkpoint `n` completed: its epoch's egress output (and older) may leave.
    pub(super) fn on_completed(&mut self, n: u64) {
        let Some(epochs) = self.epochs.as_mut() else {
            return;
        };
        // This worker has not snapshotted `n` yet, so `n` cannot be complete: releasing would
        // let out egress no checkpoint holds. (Only a broken or forged announcement says so.)
        if n >= epochs.epoch {
            tracing::error!(
                checkpoint = n,
                epoch = epochs.epoch,
                "ignored the completion of a checkpoint this worker has not taken"
            );
            return;
        }
        // Positions of every snapshot up to `n` are done with; the newest is the one to report.
        let later = epochs.positions_at.split_off(&(n + 1));
        let newest = std::mem::replace(&mut epochs.positions_at, later)
            .into_values()
            .next_back();
        if let (Some(p), Some(tx)) = (newest, &epochs.completed_positions)
            && !p.is_empty()
        {
            let _ = tx.send(p);
        }
        let released = epochs.release(n);
        let released = self.release_replies(released, n);
        // Until its sink has written it, a released record stays in snapshots (see
        // `Unconfirmed`): a later checkpoint must not forget it.
        self.egress.unconfirmed.add(&released);
        for p in released {
            let record = EgressRecord {
                key: Some(p.key),
                ..p.record
            };
            // Only records of declared egresses are held, so `emit` takes it; it counts the
            // record as pending again, and it was counted once when held.
            let _ = self.egress.emit(record);
            self.metrics.egress_pending.dec();
        }
    }

    /// Copies what a restore needs: the state that changed since the last snapshot (and the
    /// key groups compaction asked for whole, swept first), messages, delayed messages, egress.
    /// Cells, values and addresses are shared (`Arc`s, `Bytes`), so this copies lists, not
    /// payloads — O(what changed), not O(state).
    fn capture(&mut self, n: u64) -> Capture {
        let whole = std::mem::take(&mut *self.compaction.lock().expect("compaction plan lock"));
        let now = now_ms();
        for &kg in &whole {
            let swept = self.state.sweep(kg, now);
            self.metrics.state_expired.inc_by(swept as u64);
        }
        let changes = self.state.capture(&whole);
        let mut messages = Vec::with_capacity(self.metrics.messages_queued.get().max(0) as usize);
        // Per address: the batch in flight first, then what waits behind it.
        for batch in self.in_flight.values() {
            messages.extend(batch.messages.iter().map(|p| p.env.clone()));
            if let Some(m) = self.mailboxes.get(&batch.target) {
                messages.extend(m.queue.iter().map(|p| p.env.clone()));
            }
        }
        for (addr, m) in &self.mailboxes {
            if !self.in_flight.contains_key(addr) {
                messages.extend(m.queue.iter().map(|p| p.env.clone()));
            }
        }
        // One step: a record is pending, or a dead letter (taken into the partition's now).
        let held = self.egress.unconfirmed.snapshot();
        self.take_sink_dead(held.dead);
        let epochs = self.epochs.as_ref().expect("only called with checkpoints on");
        Capture {
            checkpoint: n,
            state: StateStore::new(self.state.key_groups()),
            changes,
            specs: self.specs.clone(),
            messages,
            recorded: Vec::new(),
            delayed: self
                .delayed
                .entries()
                .map(|(due, env, token)| (due, env.clone(), token.map(Arc::from)))
                .collect(),
            egress: held.pending.into_iter().chain(epochs.held.iter().cloned()).collect(),
            sink_marks: held.marks,
            seen: self.seen.clone(),
            dead_letters: self.dead.entries().cloned().collect(),
            positions: self.positions.clone(),
        }
    }
}
