//! Spindle's worker: the data plane of a stateful-functions application.
//!
//! An ingress accepts a record and hands it to the [`router::Router`], which delivers it to
//! the [`partition::Partition`] owning the target address. The partition keeps a mailbox per
//! address, sends one batch per address at a time to the remote function ([`invoker`]),
//! applies the reply (state, messages, delayed messages) and passes egress messages to the
//! [`egress`] sinks. [`local`] runs a whole application on this machine.

pub mod admin;
pub mod app;
pub mod checkpoint;
pub mod cli;
pub mod clock;
pub mod deadletter;
pub mod egress;
pub mod ingress;
pub mod invoker;
pub mod json;
pub mod keygroup;
pub mod local;
pub mod message;
pub mod metrics;
pub mod node;
pub mod partition;
pub mod peer;
pub mod retry;
pub mod router;
pub mod worker;
pub mod world;

pub use app::AppConfig;
pub use message::{Address, Envelope, Value};
pub use worker::{Listeners, Worker, WorkerError, WorkerOptions};
