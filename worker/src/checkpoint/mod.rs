//! Exactly-once: coordinated checkpoints to object storage and rollback. See
//! `docs/checkpoints.md` for the protocol and its invariants.

pub mod coordinator;
mod direct_encoding;
pub mod manifest;
pub mod snapshot;
pub mod store;
pub mod uploader;
pub mod wants;
