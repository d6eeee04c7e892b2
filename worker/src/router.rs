//! The routing boundary: finds the worker owning a target's key group and hands the message to
//! the local partition or to the link to that peer. Ingress records go to the local partition
//! first (`Input::Ingest`), which forwards them: that keeps the partition the only sender on
//! peer channels, which the checkpoint barriers rely on.

use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use crate::keygroup::{key_group, worker_of};
use crate::message::{Address, Envelope};
use crate::metrics::{Metrics, RouteLabels};
use crate::partition::Input;

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

/// What goes down the channel to a peer, in order.
#[derive(Debug)]
pub enum Outbound {
    Message {
        env: Envelope,
        admission: Option<Admission>,
    },
    /// This worker's epoch `n` ends here on this channel (checkpoint `n`).
    Barrier(u64),
}

#[derive(Debug, thiserror::Error)]
#[error("the worker is shutting down")]
pub struct Closed;

#[derive(Clone)]
pub struct Router {
    me: u32,
    workers: u32,
    key_groups: u32,
    // Unbounded because admission is bounded before sending (see `Admission`); a bounded
    // channel could deadlock a partition that routes to itself or, through peers, in a cycle.
    local: mpsc::UnboundedSender<Input>,
    /// Links to the other workers, by index (`None` at `me`).
    peers: Arc<[Option<mpsc::UnboundedSender<Outbound>>]>,
    metrics: Arc<Metrics>,
}

impl Router {
    pub fn new(
        me: u32,
        key_groups: u32,
        local: mpsc::UnboundedSender<Input>,
        peers: Vec<Option<mpsc::UnboundedSender<Outbound>>>,
        metrics: Arc<Metrics>,
    ) -> Router {
        Router {
            me,
            workers: (peers.len() as u32).max(1),
            key_groups,
            local,
            peers: peers.into(),
            metrics,
        }
    }

    /// The worker owning `addr`.
    pub fn owner(&self, addr: &Address) -> u32 {
        if self.workers == 1 {
            return 0;
        }
        worker_of(key_group(addr, self.key_groups), self.workers, self.key_groups)
    }

    /// This worker's index.
    pub fn me(&self) -> u32 {
        self.me
    }

    /// Hands a message peer `from` routed here to the local partition (routed, so not counted
    /// again).
    pub fn deliver_routed(&self, env: Envelope, admission: Option<Admission>, from: u32) -> Result<(), Closed> {
        self.local
            .send(Input::Deliver {
                env,
                admission,
                from: Some(from),
            })
            .map_err(|_| Closed)
    }

    /// Ends epoch `n` on every channel to a peer. Called by the partition only, which is the
    /// only sender on those channels, so the barrier follows exactly its pre-snapshot messages.
    pub fn barrier(&self, n: u64) {
        for link in self.peers.iter().flatten() {
            let _ = link.send(Outbound::Barrier(n));
        }
    }

    /// Hands a message owned by worker `owner` (not this one) to the link to it.
    pub fn forward(&self, owner: u32, env: Envelope, admission: Option<Admission>) -> Result<(), Closed> {
        let link = self.peers[owner as usize].as_ref().ok_or(Closed)?;
        self.count("remote");
        self.metrics.peer_pending.inc();
        link.send(Outbound::Message { env, admission }).map_err(|_| {
            self.metrics.peer_pending.dec();
            Closed
        })
    }

    pub fn send(&self, input: Input) -> Result<(), Closed> {
        self.local.send(input).map_err(|_| Closed)
    }

    /// Counts a routing decision: every message is counted once, where its route is decided.
    pub fn count(&self, route: &'static str) {
        self.metrics.messages_routed.get_or_create(&RouteLabels { route }).inc();
    }
}
