//! The partition's inbox: everything a generation's partition takes in, in one ordered channel,
//! and the [`Inbox`] handle through which the rest of the worker sends it — ingresses (records),
//! the peer service (messages other workers routed here, barriers), the coordinator (trigger,
//! completion) and the admin endpoint (state reads). Only the partition reads it
//! ([`InboxReceiver`]); what the partition sends to peers goes through its own outbound
//! switch (`partition::outbound`), which nothing else can reach.
//!
//! Servers outlive generations; [`Current`] is how they find the inbox of the generation
//! running now.

use std::collections::BTreeMap;
use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use crate::memory::{Full, Memory};
use crate::message::{Address, Envelope, Value};
use crate::stop::CancellationToken;

/// Source positions (source key → next position to read): `kafka/{ingress}/{topic}/{partition}`
/// or `nats/{ingress}`.
pub type Positions = BTreeMap<Arc<str>, i64>;

/// A message's claim on a bounded admission budget (`maxBufferedMessages`: one budget for the
/// ingress, one for messages from peers). It is held until the message's invocation completed
/// or, for a message forwarded to a peer, until the peer confirmed delivery; dropping it frees
/// the slot.
#[derive(Debug)]
pub struct Admission {
    _permit: OwnedSemaphorePermit,
    in_process: Gauge,
}

impl Admission {
    pub fn new(permit: OwnedSemaphorePermit, in_process: Gauge) -> Admission {
        in_process.inc();
        Admission {
            _permit: permit,
            in_process,
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.in_process.dec();
    }
}

/// The ingresses' door, shared by the HTTP ingress and every source reader: a record is
/// admitted when a slot of the count budget (`maxBufferedMessages`) is free — held as its
/// [`Admission`] — *and* no queue of the memory budget (`spec.memory`) is at its bound. The
/// count bounds what is being processed; the bytes bound what piles up behind it while
/// checkpoints, peers or sinks are slow, which the count cannot see (a record admitted and
/// processed frees its slot, but its egress output may wait for a checkpoint for minutes).
#[derive(Clone)]
pub struct IngressAdmission {
    pub slots: Arc<Semaphore>,
    pub memory: Arc<Memory>,
}

impl IngressAdmission {
    pub fn new(max_buffered_messages: usize, memory: Arc<Memory>) -> IngressAdmission {
        IngressAdmission {
            slots: Arc::new(Semaphore::new(max_buffered_messages)),
            memory,
        }
    }

    /// Why no record may be admitted now (a queue at its bound), if so.
    pub fn full(&self) -> Option<Full> {
        self.memory.full()
    }

    /// Waits until the memory budget has room (readers of sources pause here).
    pub async fn room(&self) {
        self.memory.room().await
    }
}

/// The generation ended (or the worker is stopping): nothing sent now would be processed.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the worker is shutting down or rolling back")]
pub struct Closed;

/// What the partition takes in, in order.
pub(crate) enum Input {
    /// A message peer `from` routed here.
    Deliver {
        env: Envelope,
        admission: Option<Admission>,
        from: u32,
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
        refused: Vec<Refused>,
    },
    /// The coordinator starts checkpoint `n` (at the coordinator's own partition only).
    Trigger(u64),
    /// Peer `from` has sent everything of its epoch `checkpoint` on its channel to us.
    Barrier { from: u32, checkpoint: u64 },
    /// Checkpoint `n` is complete: release egress output up to it.
    Completed(u64),
    /// Current state values of an address (inspection and tests).
    ReadState(Address, oneshot::Sender<Vec<(String, Value)>>),
    /// The state of the addresses a query selects (inspection).
    ListState(
        crate::state::query::StateQuery,
        oneshot::Sender<Vec<crate::state::query::AddressState>>,
    ),
    /// Something that could not be delivered, found outside the partition (a malformed
    /// envelope from a peer): kept with the partition's dead letters.
    DeadLetter(Refused),
    /// The dead letters: list, replay (deliver their messages again) or drop.
    DeadLetters(DeadLetterOp),
}

/// A record refused before it became a message, kept as a dead letter in the same step as
/// what came with it (a source's position moves past it together with the dead letter).
#[derive(Debug)]
pub(crate) struct Refused {
    pub kind: &'static str,
    pub reason: String,
    pub payload: crate::deadletter::Payload,
}

pub(crate) enum DeadLetterOp {
    List(oneshot::Sender<Vec<crate::deadletter::Entry>>),
    Replay(String, oneshot::Sender<Result<(), String>>),
    Drop(String, oneshot::Sender<Result<(), String>>),
}

/// Sends inputs to one generation's partition. Cheap to clone.
#[derive(Clone)]
pub struct Inbox {
    // Unbounded because admission is bounded before sending (see `Admission`); a bounded
    // channel could deadlock a partition that routes to itself or, through peers, in a cycle.
    tx: mpsc::UnboundedSender<Input>,
}

/// The partition's end of its inbox.
pub(crate) type InboxReceiver = mpsc::UnboundedReceiver<Input>;

impl Inbox {
    pub(crate) fn channel() -> (Inbox, InboxReceiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Inbox { tx }, rx)
    }

    fn send(&self, input: Input) -> Result<(), Closed> {
        self.tx.send(input).map_err(|_| Closed)
    }

    /// A message peer `from` routed to an address this worker owns (routed, so not counted
    /// again).
    pub fn deliver_routed(&self, env: Envelope, admission: Option<Admission>, from: u32) -> Result<(), Closed> {
        self.send(Input::Deliver { env, admission, from })
    }

    /// An ingress record. With `durable`, the answer tells the epoch whose checkpoint will
    /// contain it (the receiver fails if the generation ends before the record is queued).
    pub fn ingest(
        &self,
        env: Envelope,
        admission: Option<Admission>,
        durable: bool,
    ) -> Result<Option<oneshot::Receiver<u64>>, Closed> {
        let (epoch, rx) = match durable {
            true => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
            false => (None, None),
        };
        self.send(Input::Ingest { env, admission, epoch })?;
        Ok(rx)
    }

    /// Records of source `source` (and those refused among them), after which it stands at
    /// `next`.
    pub(crate) fn source(
        &self,
        source: Arc<str>,
        next: i64,
        records: Vec<(Envelope, Option<Admission>)>,
        refused: Vec<Refused>,
    ) -> Result<(), Closed> {
        self.send(Input::Source {
            source,
            next,
            records,
            refused,
        })
    }

    /// A record that cannot be delivered, kept as a dead letter.
    pub(crate) fn dead_letter(&self, refused: Refused) -> Result<(), Closed> {
        self.send(Input::DeadLetter(refused))
    }

    /// The dead letters this partition keeps.
    pub async fn dead_letters(&self) -> Result<Vec<crate::deadletter::Entry>, Closed> {
        let (tx, rx) = oneshot::channel();
        self.send(Input::DeadLetters(DeadLetterOp::List(tx)))?;
        rx.await.map_err(|_| Closed)
    }

    /// Replays (`drop: false`) or drops dead letter `id`: `Err(why)` inside when this
    /// partition has no such dead letter or it cannot be replayed.
    pub async fn settle_dead_letter(&self, id: &str, drop: bool) -> Result<Result<(), String>, Closed> {
        let (tx, rx) = oneshot::channel();
        let op = match drop {
            true => DeadLetterOp::Drop(id.to_string(), tx),
            false => DeadLetterOp::Replay(id.to_string(), tx),
        };
        self.send(Input::DeadLetters(op))?;
        rx.await.map_err(|_| Closed)
    }

    /// The coordinator starts checkpoint `n`.
    pub fn trigger(&self, n: u64) -> Result<(), Closed> {
        self.send(Input::Trigger(n))
    }

    /// Peer `from` ended its epoch `checkpoint` on its channel to this worker.
    pub fn barrier(&self, from: u32, checkpoint: u64) -> Result<(), Closed> {
        self.send(Input::Barrier { from, checkpoint })
    }

    /// Checkpoint `n` is complete.
    pub fn completed(&self, n: u64) -> Result<(), Closed> {
        self.send(Input::Completed(n))
    }

    /// The state values of `addr` as they stand, by state name.
    pub async fn read_state(&self, addr: Address) -> Result<Vec<(String, Value)>, Closed> {
        let (tx, rx) = oneshot::channel();
        self.send(Input::ReadState(addr, tx))?;
        rx.await.map_err(|_| Closed)
    }

    /// The state of the addresses `query` selects, as it stands.
    pub async fn list_state(
        &self,
        query: crate::state::query::StateQuery,
    ) -> Result<Vec<crate::state::query::AddressState>, Closed> {
        let (tx, rx) = oneshot::channel();
        self.send(Input::ListState(query, tx))?;
        rx.await.map_err(|_| Closed)
    }
}

/// One generation as servers see it.
#[derive(Clone)]
pub struct Entry {
    pub generation: u64,
    /// The checkpoint the generation started from (0: none); peers' barriers come after it.
    pub restored: u64,
    pub inbox: Inbox,
    /// Fires when the generation ends; streams bound to it close then.
    pub stop: CancellationToken,
}

/// The generation running now (`None` while a restore is under way). Servers hold this, not
/// a generation: they outlive every one of them.
#[derive(Clone)]
pub struct Current {
    rx: watch::Receiver<Option<Entry>>,
    shutdown: CancellationToken,
}

impl Current {
    /// A current generation that is set through the returned sender.
    pub(crate) fn new(shutdown: CancellationToken) -> (watch::Sender<Option<Entry>>, Current) {
        let (tx, rx) = watch::channel(None);
        (tx, Current { rx, shutdown })
    }

    /// The generation running now, if any.
    pub fn now(&self) -> Option<Entry> {
        self.rx.borrow().clone()
    }

    /// The generation running now, waiting while a restore is under way.
    pub async fn wait(&self) -> Result<Entry, Closed> {
        let mut rx = self.rx.clone();
        tokio::select! {
            e = rx.wait_for(Option::is_some) => e.map(|e| e.clone().expect("waited for Some")).map_err(|_| Closed),
            _ = self.shutdown.cancelled() => Err(Closed),
        }
    }
}
