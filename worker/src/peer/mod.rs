//! Worker-to-worker transport over gRPC (tonic): one long-lived bidirectional stream per
//! ordered pair of workers, carrying batches of envelopes in order.
//!
//! - [`link::Link`] (sender side): takes what the partition's outbound switch sends to one
//!   peer ([`link::Outgoing`]), sends it as numbered batches and keeps each batch — with the
//!   ingress admissions of its messages — until the peer acknowledges delivery. A broken
//!   stream is reopened with backoff and unacknowledged batches are sent again; the receiver
//!   recognises them by number, so nothing is lost or delivered twice while both processes
//!   live.
//! - [`service::PeerService`] (receiver side): checks the handshake (same application, worker
//!   count and key groups, right worker index), then delivers batches into the current
//!   generation's inbox once admission permits are free: a slow worker stops reading, which
//!   stalls the sender's stream, which holds the sender's ingress admissions — back-pressure
//!   end to end.
//!
//! The control calls of checkpoints and rollback are served on the same port but belong to
//! `checkpoint::control`.

pub mod discovery;
pub(crate) mod link;
pub(crate) mod sequence;
pub(crate) mod service;

pub(crate) use service::PeerService;

/// Largest message the partition hands to a peer (its encoded envelope): a larger one is a
/// dead letter, with the reason, instead of a frame no peer would take.
pub const MAX_ENVELOPE_BYTES: usize = 8 << 20;
/// Largest gRPC message either side of a peer link (or control call) takes, set explicitly
/// on both: a batch of up to [`MAX_ENVELOPE_BYTES`] plus a batch's worth more fits.
pub const MAX_FRAME_BYTES: usize = 16 << 20;

/// Where this worker stands among its peers.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    /// This worker's index.
    pub index: u32,
    /// `host:port` of every worker's peer endpoint, by index (this worker's own included).
    /// Empty for a single worker.
    pub peers: Vec<String>,
}

impl Cluster {
    pub fn workers(&self) -> u32 {
        (self.peers.len() as u32).max(1)
    }

    /// This worker's layout for an application with `key_groups` key groups.
    pub fn layout(&self, key_groups: u32) -> crate::keygroup::Layout {
        crate::keygroup::Layout {
            worker: self.index,
            workers: self.workers(),
            key_groups,
        }
    }
}
