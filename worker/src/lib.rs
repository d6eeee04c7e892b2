//! Spindle's worker: the data plane of a stateful-functions application.
//!
//! The data path reads one way: an ingress ([`ingress`]) accepts a record and hands it to the
//! partition's inbox ([`inbox`]); the partition ([`partition`]) keeps a mailbox per address,
//! sends one batch per address at a time to the function ([`invoker`]), applies the reply and
//! passes messages for other workers to its outbound switch (→ [`peer`]) and egress records to
//! the sinks ([`egress`]); its snapshots go to storage ([`checkpoint`]).
//!
//! Lifetimes: a [`Worker`] is the running process (servers, sinks, coordinator);
//! `process::Process` is what it keeps across generations and how it switches them;
//! `generation::Generation` is one generation of the data plane, replaced by every rollback.
//! [`local`] runs a whole application on this machine (`spindle run`); `serve` is one worker
//! of a cluster (`spindle worker`).

pub(crate) mod admin;
pub mod app;
pub mod auth;
pub(crate) mod brokers;
pub mod checkpoint;
pub mod cli;
pub(crate) mod clock;
pub(crate) mod deadletter;
pub mod egress;
#[cfg(test)]
pub(crate) mod fuzz;
pub(crate) mod generation;
pub(crate) mod health;
pub(crate) mod inbox;
pub mod ingress;
pub(crate) mod invoker;
pub(crate) mod json;
pub mod keygroup;
pub mod local;
pub(crate) mod memory;
pub mod message;
pub mod metrics;
pub(crate) mod partition;
pub mod peer;
pub(crate) mod poison;
pub(crate) mod process;
// Public only for the wire-level tests (attacks on the peer port); not an API.
#[doc(hidden)]
pub mod proto;
pub mod reply;
pub(crate) mod retry;
pub(crate) mod serve;
pub(crate) mod state;
pub mod status;
pub(crate) mod stop;
pub mod tls;
pub mod trace;
pub mod worker;

pub use app::AppConfig;
pub use message::{Address, Envelope, Value};
pub use worker::{Listeners, Worker, WorkerError, WorkerOptions};
