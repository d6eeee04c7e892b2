//! The worker's memory budget: bytes held in the queues that grow while something downstream
//! is slow or failing (`spec.memory`), one bound and one gauge per queue, and the decision the
//! ingresses' admission (`inbox::IngressAdmission`) takes from them — while any queue is at its
//! bound, no new record is admitted; once it drains below, admission resumes. Nothing already
//! accepted is ever dropped for memory: the bound stops the inflow, the queues drain on their
//! own (a checkpoint completes, a peer or a sink catches up, keys expire, messages fall due).
//!
//! The accounting and the decision are pure ([`Usage`], [`Limits::verdict`], the `*_bytes`
//! size estimates); [`Memory`] shares them between tasks, with the gauges and a wake-up for
//! ingresses that wait for room.

use std::fmt;
use std::sync::Arc;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

use crate::message::{Address, Envelope, Value};
use crate::metrics::QueueLabels;

/// The queues with a byte bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Queue {
    /// Egress records waiting for the checkpoint of their epoch.
    HeldEgress,
    /// Messages for other workers, queued or sent but not yet acknowledged.
    Peers,
    /// Released egress records queued for their sinks.
    Sinks,
    /// Idempotency keys (and their replies) remembered for the dedup window.
    IdempotencyKeys,
    /// Delayed messages not yet due.
    Delayed,
}

impl Queue {
    pub const ALL: [Queue; 5] = [
        Queue::HeldEgress,
        Queue::Peers,
        Queue::Sinks,
        Queue::IdempotencyKeys,
        Queue::Delayed,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// The `queue` label of its gauges.
    pub fn label(self) -> &'static str {
        match self {
            Queue::HeldEgress => "held_egress",
            Queue::Peers => "peers",
            Queue::Sinks => "sinks",
            Queue::IdempotencyKeys => "idempotency_keys",
            Queue::Delayed => "delayed",
        }
    }

    /// The spec field that bounds it.
    pub fn field(self) -> &'static str {
        match self {
            Queue::HeldEgress => "spec.memory.heldEgressBytes",
            Queue::Peers => "spec.memory.peerQueueBytes",
            Queue::Sinks => "spec.memory.sinkQueueBytes",
            Queue::IdempotencyKeys => "spec.memory.idempotencyKeyBytes",
            Queue::Delayed => "spec.memory.delayedMessageBytes",
        }
    }
}

/// Bytes per queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage([u64; 5]);

impl Usage {
    pub fn get(&self, q: Queue) -> u64 {
        self.0[q.index()]
    }

    pub fn set(&mut self, q: Queue, bytes: u64) {
        self.0[q.index()] = bytes;
    }
}

/// The bound of each queue, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits(Usage);

/// A queue at its bound: the reason the ingresses do not admit now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    pub queue: Queue,
    pub used: u64,
    pub limit: u64,
}

impl fmt::Display for Full {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the worker's {} hold {} bytes, at their bound of {} ({})",
            self.queue.label().replace('_', " "),
            self.used,
            self.limit,
            self.queue.field()
        )
    }
}

impl Limits {
    pub fn from_spec(m: &spindle_spec::MemorySpec) -> Limits {
        let mut u = Usage::default();
        u.set(Queue::HeldEgress, m.held_egress_bytes);
        u.set(Queue::Peers, m.peer_queue_bytes);
        u.set(Queue::Sinks, m.sink_queue_bytes);
        u.set(Queue::IdempotencyKeys, m.idempotency_key_bytes);
        u.set(Queue::Delayed, m.delayed_message_bytes);
        Limits(u)
    }

    /// No bound (unit tests of other parts).
    pub fn unbounded() -> Limits {
        Limits(Usage([u64::MAX; 5]))
    }

    pub fn get(&self, q: Queue) -> u64 {
        self.0.get(q)
    }

    /// May the ingresses admit a record now? Not while any queue is at or above its bound —
    /// the first such queue is the reason. A queue may pass its bound by what was admitted
    /// before it was reached (bounded by `maxBufferedMessages` and the body size limits):
    /// the decision is taken at the door, not inside the queues, which never refuse.
    pub fn verdict(&self, used: &Usage) -> Result<(), Full> {
        for q in Queue::ALL {
            let (used, limit) = (used.get(q), self.get(q));
            if used >= limit {
                return Err(Full { queue: q, used, limit });
            }
        }
        Ok(())
    }
}

/// Fixed cost counted per entry on top of its variable-length parts: the structs, map slots
/// and reference counts around them (an estimate; it keeps floods of tiny entries bounded).
pub const ENTRY_OVERHEAD: u64 = 128;

pub fn address_bytes(a: &Address) -> u64 {
    (a.typename.as_str().len() + a.id.len()) as u64
}

pub fn value_bytes(v: &Value) -> u64 {
    (v.typename.len() + v.bytes.len()) as u64
}

/// What a message costs where it is queued.
pub fn envelope_bytes(env: &Envelope) -> u64 {
    ENTRY_OVERHEAD
        + address_bytes(&env.target)
        + env.caller.as_ref().map_or(0, address_bytes)
        + value_bytes(&env.value)
        + env.dedup.as_ref().map_or(0, |k| k.len() as u64)
}

/// What one remembered idempotency key costs (its address, and the reply once it is kept).
pub fn key_bytes(addr: &Address, key: &str, reply: Option<&Value>, waiting: usize) -> u64 {
    ENTRY_OVERHEAD + address_bytes(addr) + key.len() as u64 + reply.map_or(0, value_bytes) + 64 * waiting as u64
}

/// The memory budget of one worker, shared by everything that queues and by the ingresses.
/// Outlives generations (a queue of an ended generation gives its bytes back when dropped).
pub struct Memory {
    limits: Limits,
    /// Bytes per queue: the gauges are the counters (`spindle_memory_bytes{queue}`).
    used: [Gauge; 5],
    /// Woken whenever bytes are given back, for ingresses waiting for room.
    room: Notify,
}

impl fmt::Debug for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memory").field("used", &self.usage()).finish()
    }
}

impl Memory {
    /// A budget with `limits`, its gauges in `bytes` and `limit_bytes`.
    pub fn new(limits: Limits, bytes: &Family<QueueLabels, Gauge>, limit_bytes: &Family<QueueLabels, Gauge>) -> Memory {
        let used = Queue::ALL.map(|q| {
            let labels = QueueLabels { queue: q.label() };
            limit_bytes
                .get_or_create(&labels)
                .set(limits.get(q).min(i64::MAX as u64) as i64);
            bytes.get_or_create(&labels).clone()
        });
        Memory {
            limits,
            used,
            room: Notify::new(),
        }
    }

    /// A budget without bounds or registered gauges (unit tests).
    pub fn unbounded() -> Arc<Memory> {
        Arc::new(Memory::new(Limits::unbounded(), &Family::default(), &Family::default()))
    }

    pub fn usage(&self) -> Usage {
        let mut u = Usage::default();
        for q in Queue::ALL {
            u.set(q, self.used[q.index()].get().max(0) as u64);
        }
        u
    }

    /// Why the ingresses must not admit now, if they must not.
    pub fn full(&self) -> Option<Full> {
        self.limits.verdict(&self.usage()).err()
    }

    /// Waits until no queue is at its bound.
    pub async fn room(&self) {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            // Registered before the check, so a release between the two is not missed.
            notified.as_mut().enable();
            if self.full().is_none() {
                return;
            }
            notified.await;
        }
    }

    fn add(&self, q: Queue, bytes: u64) {
        if bytes > 0 {
            self.used[q.index()].inc_by(bytes as i64);
        }
    }

    fn sub(&self, q: Queue, bytes: u64) {
        if bytes == 0 {
            return;
        }
        let before = self.used[q.index()].dec_by(bytes as i64).max(0) as u64;
        // Only a queue that drops below its bound can open the door: waking the waiters on
        // every release would put a lock on the path of every message.
        let limit = self.limits.get(q);
        if before >= limit && before.saturating_sub(bytes) < limit {
            self.room.notify_waiters();
        }
    }

    /// `bytes` of queue `q`, given back when the charge is dropped (an entry that moves
    /// through tasks: a message to a peer, a record to a sink).
    pub fn charge(self: &Arc<Self>, q: Queue, bytes: u64) -> Charge {
        self.add(q, bytes);
        Charge {
            memory: self.clone(),
            queue: q,
            bytes,
        }
    }

    /// A queue whose owner knows its size and says so as it changes (a structure of the
    /// partition); its bytes are given back when the tally is dropped.
    pub fn tally(self: &Arc<Self>, q: Queue) -> Tally {
        Tally {
            memory: self.clone(),
            queue: q,
            bytes: 0,
        }
    }
}

/// One entry's bytes in a queue, until dropped.
pub struct Charge {
    memory: Arc<Memory>,
    queue: Queue,
    bytes: u64,
}

impl fmt::Debug for Charge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Charge({} bytes of {})", self.bytes, self.queue.label())
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.memory.sub(self.queue, self.bytes);
    }
}

/// A structure's bytes in a queue, set as it changes; given back when dropped.
pub struct Tally {
    memory: Arc<Memory>,
    queue: Queue,
    bytes: u64,
}

impl Tally {
    pub fn set(&mut self, bytes: u64) {
        if bytes > self.bytes {
            self.memory.add(self.queue, bytes - self.bytes);
        } else if bytes < self.bytes {
            self.memory.sub(self.queue, self.bytes - bytes);
        }
        self.bytes = bytes;
    }
}

impl Drop for Tally {
    fn drop(&mut self) {
        self.memory.sub(self.queue, self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(held: u64) -> Limits {
        Limits::from_spec(&spindle_spec::MemorySpec {
            held_egress_bytes: held,
            ..Default::default()
        })
    }

    #[test]
    fn a_queue_at_its_bound_stops_admission_and_names_itself() {
        let l = limits(1000);
        let mut u = Usage::default();
        u.set(Queue::HeldEgress, 999);
        assert_eq!(l.verdict(&u), Ok(()));
        u.set(Queue::HeldEgress, 1000);
        let full = l.verdict(&u).unwrap_err();
        assert_eq!(full.queue, Queue::HeldEgress);
        assert!(full.to_string().contains("spec.memory.heldEgressBytes"), "{full}");
        u.set(Queue::HeldEgress, 0);
        u.set(Queue::Sinks, 64 << 20);
        assert_eq!(l.verdict(&u).unwrap_err().queue, Queue::Sinks);
    }

    #[tokio::test]
    async fn charges_and_tallies_give_their_bytes_back_and_wake_the_door() {
        let (bytes, limit) = (Family::default(), Family::default());
        let m = Arc::new(Memory::new(limits(1000), &bytes, &limit));
        let mut t = m.tally(Queue::HeldEgress);
        t.set(600);
        let c = m.charge(Queue::HeldEgress, 500);
        assert_eq!(m.full().map(|f| f.used), Some(1100));
        let gauge = bytes.get_or_create(&QueueLabels { queue: "held_egress" }).get();
        assert_eq!(gauge, 1100, "the gauge is the counter");
        let waiting = tokio::spawn({
            let m = m.clone();
            async move { m.room().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        t.set(550);
        assert!(m.full().is_some(), "550 + 500 still over");
        drop(c);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("woken once below the bound")
            .unwrap();
        drop(t);
        assert_eq!(m.usage(), Usage::default(), "everything given back");
    }

    #[test]
    fn sizes_count_payloads_and_names() {
        let a = Address::new(spindle_spec::TypeName::parse("t/f").unwrap(), "id");
        let env = Envelope {
            target: a.clone(),
            caller: None,
            value: Value::new("t/v", bytes::Bytes::from(vec![0; 1000])),
            dedup: Some("k".into()),
            trace: None,
        };
        assert_eq!(envelope_bytes(&env), ENTRY_OVERHEAD + 5 + 3 + 1000 + 1);
        assert_eq!(key_bytes(&a, "k", None, 0), ENTRY_OVERHEAD + 5 + 1);
    }
}
