//! Remote invocation: a batch of messages for one address goes to the function serving it and
//! comes back as [`Effects`] — state mutations, messages, delayed messages, egress records — or
//! as a request for state specs the batch must be sent again with.
//!
//! The partition sees only this module's types and the [`Invoke`] trait; the StateFun
//! request-reply protocol (`ToFunction`/`FromFunction`) is [`wire`]'s business and HTTP is
//! [`http`]'s. Tests give the partition a fake invoker.

pub(crate) mod http;
pub(crate) mod wire;

use std::future::Future;
use std::pin::Pin;

use spindle_spec::TypeName;

use crate::app::FunctionId;
use crate::message::{Address, Envelope, Value};
use crate::state::{Mutation, StateSpec, StateValue};

pub(crate) use http::HttpInvoker;

/// One invocation batch: messages for `target`, with its state as it stands.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    /// The function entry (`spec.functions[i]`) serving the target.
    pub function: FunctionId,
    pub target: Address,
    /// One value per declared state spec.
    pub state: Vec<StateValue>,
    /// `(caller, argument)` of each message, in order.
    pub messages: Vec<(Option<Address>, Value)>,
}

/// What a function answered.
#[derive(Debug)]
pub(crate) enum Outcome {
    Effects(Effects),
    /// The function needs these state values declared and the batch sent again.
    Incomplete(Vec<StateSpec>),
}

/// A function's reply, in the order it is applied: state first, then messages, delayed
/// messages and egress. An entry that does not make sense (a message without a target, an
/// egress without a value) is kept as the reason, for a dead letter.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    pub mutations: Vec<Mutation>,
    pub messages: Vec<Result<Envelope, String>>,
    pub delayed: Vec<Result<Delayed, String>>,
    pub egress: Vec<Result<EgressOut, String>>,
}

/// A delayed message sent, or one cancelled by its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Delayed {
    Send {
        env: Envelope,
        delay_ms: u64,
        token: String,
    },
    Cancel {
        token: String,
    },
}

/// A message to an egress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EgressOut {
    pub egress: TypeName,
    pub value: Value,
}

/// Why a batch failed for good. `kind` is a fixed label for metrics; `reason` is for people.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub(crate) struct InvokeFailure {
    pub kind: &'static str,
    pub reason: String,
    pub attempts: u32,
}

pub(crate) type InvokeFuture = Pin<Box<dyn Future<Output = Result<Outcome, InvokeFailure>> + Send + 'static>>;

/// Invokes functions. The future owns what it needs (the partition spawns it).
pub(crate) trait Invoke: Send + Sync + 'static {
    fn invoke(&self, call: Call) -> InvokeFuture;
}
