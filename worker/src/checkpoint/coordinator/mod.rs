//! The coordinator (worker 0) drives checkpoints and rollbacks: a pure decision core
//! ([`core`]: events in, commands out, table-tested) and the task that performs its commands
//! ([`task`]: storage, the workers, timers). Workers reach it through a
//! [`CoordinatorLink`](super::link::CoordinatorLink); it reaches them through [`Member`]s.

pub(crate) mod core;
#[cfg(test)]
mod fence_tests;
pub(crate) mod task;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::manifest::PartInfo;
use crate::poison::{InFlight, MessageId};

pub(crate) use task::Coordinator;

/// What the coordinator learns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Event {
    /// A worker process started (or restarted) with an empty memory.
    Join { worker: u32, incarnation: u64 },
    /// A worker's part of a checkpoint was written, or failed.
    Part {
        generation: u64,
        checkpoint: u64,
        worker: u32,
        result: Result<PartInfo, String>,
        /// The part holds no egress record (held, or released and not yet written).
        clean: bool,
    },
    /// A worker is stopping: its input is stopped, and it exits once told to.
    Leaving { worker: u32 },
    /// Group commit: something on a worker waits for `checkpoint` to complete.
    Want { generation: u64, checkpoint: u64 },
    /// The checkpoint interval passed.
    Tick,
    /// Time to look for workers that went silent (every quarter of `failureTimeout`).
    Watch,
    /// A worker answered a heartbeat.
    Heard { worker: u32 },
    /// A worker's messages in flight (for long enough to be seen) in `generation`, from its
    /// answer to a heartbeat (`crate::poison`).
    InFlight {
        worker: u32,
        generation: u64,
        messages: Vec<crate::poison::InFlight>,
    },
    /// Group commit's pause after the last checkpoint passed (see `Core::eager_start`).
    Eager,
    /// The rollback's generation and checkpoint (the newest intact one, 0: none), and the
    /// highest checkpoint id in storage (damaged ones included).
    Chosen {
        generation: u64,
        checkpoint: u64,
        highest: u64,
    },
    /// A worker restored `generation`.
    Restored {
        worker: u32,
        generation: u64,
        incarnation: u64,
    },
    /// The manifest write of a checkpoint ended (its bytes, or why not).
    Manifest {
        generation: u64,
        checkpoint: u64,
        result: Result<u64, String>,
    },
    /// A worker restoring `checkpoint` in `generation` found its stored bytes damaged: the
    /// rollback must restore an older one.
    Damaged { generation: u64, checkpoint: u64 },
}

/// Why a worker did not restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RestoreFailure {
    /// The checkpoint's objects are lost or changed (checksums, sizes): retrying cannot help.
    Damaged(String),
    /// Anything else (storage unavailable, the worker busy): retried.
    Failed(String),
}

impl std::fmt::Display for RestoreFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RestoreFailure::Damaged(r) | RestoreFailure::Failed(r) => f.write_str(r),
        }
    }
}

impl Event {
    /// The worker this event shows alive, if any.
    fn sender(&self) -> Option<u32> {
        match self {
            Event::Join { worker, .. }
            | Event::Part { worker, .. }
            | Event::Leaving { worker }
            | Event::Restored { worker, .. }
            | Event::Heard { worker }
            | Event::InFlight { worker, .. } => Some(*worker),
            _ => None,
        }
    }
}

pub(crate) type MemberFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A worker as the coordinator commands it: this process's own, or another over the control
/// RPC. Both calls are idempotent.
pub(crate) trait Member: Send + Sync {
    /// Restore `checkpoint` (0: start empty) and carry on in `generation`, setting aside the
    /// `poison` messages as dead letters; answers the worker's incarnation once it has.
    fn restore(
        &self,
        generation: u64,
        checkpoint: u64,
        poison: Arc<[MessageId]>,
    ) -> MemberFuture<Result<u64, RestoreFailure>>;
    /// `checkpoint` of `generation` is complete. Best effort: a worker that misses it
    /// releases its egress with the next one.
    fn completed(&self, generation: u64, checkpoint: u64) -> MemberFuture<()>;
    /// A stopping worker may exit: `checkpoint` holds nothing of it left to send.
    fn exit(&self, generation: u64, checkpoint: u64) -> MemberFuture<()>;
    /// A heartbeat: answers once the worker has heard it (it learns the coordinator's
    /// generation: a worker far behind it is fenced, and says so at `/healthz`). The answer
    /// is the worker's generation and its messages in flight.
    fn ping(&self, generation: u64, timeout: Duration) -> MemberFuture<Result<(u64, Vec<InFlight>), String>>;
}
