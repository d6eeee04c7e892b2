//! The partition's outbound switch: messages for addresses other workers own go to the link
//! to their owner, and barriers go down every link. The partition owns the only [`Outbound`]
//! of a generation (it holds every link's sender and cannot be cloned), so "only the partition
//! sends on peer channels" — what makes a barrier follow exactly the messages sent before its
//! snapshot — holds by construction.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::inbox::Admission;
use crate::keygroup::Layout;
use crate::memory::{Memory, Queue, envelope_bytes};
use crate::message::{Address, Envelope};
use crate::metrics::{Metrics, RouteLabels};
use crate::peer::link::Outgoing;

pub(crate) struct Outbound {
    layout: Layout,
    /// Links to the other workers, by index (`None` at this worker).
    links: Vec<Option<mpsc::UnboundedSender<Outgoing>>>,
    metrics: Arc<Metrics>,
    /// Messages on their way to a peer count in `spec.memory.peerQueueBytes` until it has them.
    memory: Arc<Memory>,
}

/// The receiving end of the channel to one peer's link.
pub(crate) struct LinkQueue {
    pub to: u32,
    pub rx: mpsc::UnboundedReceiver<Outgoing>,
}

impl Outbound {
    /// The switch for `layout`, and the queue each peer's link reads.
    pub fn new(layout: Layout, metrics: Arc<Metrics>, memory: Arc<Memory>) -> (Outbound, Vec<LinkQueue>) {
        let mut links = Vec::new();
        let mut queues = Vec::new();
        for to in 0..layout.workers {
            if to == layout.worker || layout.workers == 1 {
                links.push(None);
                continue;
            }
            // Unbounded: admission bounds what is in flight (the message's `Admission` travels
            // with it until the peer has it); a bounded channel could deadlock a cycle.
            let (tx, rx) = mpsc::unbounded_channel();
            links.push(Some(tx));
            queues.push(LinkQueue { to, rx });
        }
        (
            Outbound {
                layout,
                links,
                metrics,
                memory,
            },
            queues,
        )
    }

    /// The worker owning `addr`.
    pub fn owner(&self, addr: &Address) -> u32 {
        self.layout.owner(addr)
    }

    /// This worker's index.
    pub fn me(&self) -> u32 {
        self.layout.worker
    }

    /// How many workers the application runs.
    pub fn workers(&self) -> u32 {
        self.layout.workers
    }

    /// Hands a message owned by worker `owner` (not this one) to the link to it. A closed link
    /// means the generation is ending, when nothing is delivered anyway.
    pub fn forward(&self, owner: u32, env: Envelope, admission: Option<Admission>) {
        let Some(link) = self.links.get(owner as usize).and_then(Option::as_ref) else {
            return;
        };
        self.count("remote");
        self.metrics.peer_pending.inc();
        let charge = self.memory.charge(Queue::Peers, envelope_bytes(&env));
        if link.send(Outgoing::Message { env, admission, charge }).is_err() {
            self.metrics.peer_pending.dec();
        }
    }

    /// Ends epoch `n` on every channel to a peer.
    pub fn barrier(&self, n: u64) {
        for link in self.links.iter().flatten() {
            let _ = link.send(Outgoing::Barrier(n));
        }
    }

    /// Counts a message this worker produced and keeps (every message is counted once, where
    /// its route is decided).
    pub fn count_local(&self) {
        self.count("local");
    }

    fn count(&self, route: &'static str) {
        self.metrics.messages_routed.get_or_create(&RouteLabels { route }).inc();
    }
}
