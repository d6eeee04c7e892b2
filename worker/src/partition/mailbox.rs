//! Mailboxes: the messages waiting for one address, and the bookkeeping that keeps at most one
//! batch per address in flight and at most `maxInFlight` batches per function entry.

use std::collections::VecDeque;

use crate::app::FunctionId;
use crate::inbox::Admission;
use crate::message::{Address, Envelope};

/// A message waiting for, or part of, an invocation. Holding the ingress admission until the
/// message is processed is what back-pressures the ingress.
#[derive(Debug)]
pub(crate) struct Pending {
    pub env: Envelope,
    /// Never read: dropping it, with the message, is what frees the slot.
    pub _admission: Option<Admission>,
}

#[derive(Debug, Default)]
pub(crate) struct Mailbox {
    pub queue: VecDeque<Pending>,
    /// A batch of this address is in flight or waiting for a slot of its function entry.
    pub busy: bool,
}

/// An invocation batch: messages for one address, sent together.
#[derive(Debug)]
pub(crate) struct Batch {
    pub target: Address,
    pub function: FunctionId,
    pub messages: Vec<Pending>,
    /// Times the function answered `IncompleteInvocationContext` for this batch.
    pub incomplete_rounds: u32,
    /// When the batch was first sent.
    pub since: std::time::Instant,
    /// Its messages' identities (`crate::poison`), once worked out.
    pub ids: Option<Vec<crate::poison::MessageId>>,
    /// The span of the invocation in flight (tracing on, some message traced).
    pub span: Option<crate::trace::Span>,
}

/// Per function entry: batches in flight and addresses waiting for a slot (FIFO, so a busy
/// address cannot starve the others).
#[derive(Debug, Default)]
pub(crate) struct Slots {
    pub in_flight: usize,
    pub waiting: VecDeque<Address>,
}
