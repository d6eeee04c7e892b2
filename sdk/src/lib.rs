//! The Spindle SDK: write remote stateful functions in Rust that speak Apache Flink StateFun's
//! request-reply protocol, so they run under Spindle's worker or under StateFun itself.
//!
//! A function is a handler `Fn(&mut Context, Message)` registered under a [`TypeName`] together
//! with the states it declares ([`ValueSpec`]), or an async one (an `async fn` that awaits a
//! database or an HTTP API) registered with [`Functions::register_async`]. A handler answers
//! its caller — another function, or an HTTP request waiting with `Spindle-Reply: wait` — with
//! [`Context::reply`]. [`Functions::handle`] turns one `ToFunction` request into one
//! `FromFunction` reply (pure, no I/O; [`Functions::handle_async`] for async handlers);
//! [`serve`] exposes them over HTTP/1.1.
//!
//! ```no_run
//! use std::{sync::Arc, time::Duration};
//! use spindle_sdk::{Address, Functions, HandlerError, TypeName, ValueSpec};
//!
//! const SEEN: ValueSpec<i64> = ValueSpec::new("seen").expire_after_write(Duration::from_secs(3600));
//!
//! # async fn run() -> std::io::Result<()> {
//! let mut functions = Functions::new();
//! functions.register(
//!     TypeName::parse("example/counter").unwrap(),
//!     vec![SEEN.decl()],
//!     |ctx, _msg| {
//!         let seen = ctx.get(&SEEN)?.unwrap_or(0) + 1;
//!         ctx.set(&SEEN, &seen);
//!         Ok::<_, HandlerError>(())
//!     },
//! );
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await?;
//! spindle_sdk::serve(listener, Arc::new(functions), std::future::pending()).await
//! # }
//! ```

mod address;
mod context;
mod error;
mod functions;
mod message;
mod server;
mod spec;
mod state;
mod types;

#[cfg(test)]
mod tests;

pub use address::Address;
pub use context::Context;
pub use error::{DecodeError, EncodeError, HandlerError, SdkError, UsageError};
pub use functions::{Functions, HandlerFuture};
pub use message::Message;
pub use server::serve;
pub use spec::{Expiration, StateDecl, ValueSpec};
pub use spindle_spec::{TypeName, TypeNameError};
pub use types::{JsonType, Type};
