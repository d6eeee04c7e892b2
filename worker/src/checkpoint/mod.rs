//! Exactly-once: coordinated checkpoints to object storage and rollback. See
//! `docs/checkpoints.md` for the protocol and its invariants.
//!
//! - [`codec`]: the part format — a partition's capture to bytes and back (pure)
//! - [`chains`]: incremental checkpoints — per key group the sections holding its state, and
//!   which groups to rewrite whole (pure)
//! - [`store`], [`manifest`]: object storage — parts, manifests written last, retention
//! - [`copy`]: `restoreFrom` — a savepoint or checkpoint made the newest checkpoint
//! - [`restore`]: a checkpoint read back into what one worker owns (ranged, streaming)
//! - [`savepoint`]: taking a savepoint on worker 0 (a named checkpoint retention keeps)
//! - [`uploader`]: a generation's task writing its captures as parts
//! - [`group_commit`]: a generation's task telling the coordinator a checkpoint is wanted
//! - [`link`]: how a worker reaches the coordinator (channel or RPC)
//! - [`coordinator`]: worker 0's decision core and the task performing it
//! - [`control`]: the control RPC between workers and the coordinator
//! - [`progress`]: what a worker knows of generations and completed checkpoints

pub(crate) mod chains;
pub(crate) mod codec;
pub(crate) mod control;
pub(crate) mod coordinator;
pub(crate) mod copy;
pub(crate) mod group_commit;
pub(crate) mod link;
pub mod manifest;
pub(crate) mod progress;
pub(crate) mod restore;
pub(crate) mod savepoint;
// The pipeline without functions, for `spindle-bench scale` and tests; not an API.
#[doc(hidden)]
pub mod scale;
pub mod store;
pub(crate) mod uploader;

pub use progress::Progress;
