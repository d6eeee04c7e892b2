//! The data plane's own message types: addresses, typed values and envelopes — what inboxes,
//! mailboxes, the worker-to-worker transport and checkpoints carry. Their wire forms live at
//! the edges: the StateFun protocol in `invoker::wire`, the peer and checkpoint formats in
//! `proto`.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use spindle_spec::TypeName;

/// A function instance: its type and its id. Every address has its own state and mailbox.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address {
    pub typename: TypeName,
    pub id: Arc<str>,
}

impl Address {
    pub fn new(typename: TypeName, id: impl Into<Arc<str>>) -> Address {
        Address {
            typename,
            id: id.into(),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.typename, self.id)
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// A value with its typename, as StateFun's `TypedValue` with `has_value = true`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Value {
    pub typename: Arc<str>,
    pub bytes: Bytes,
}

impl Value {
    pub fn new(typename: impl Into<Arc<str>>, bytes: Bytes) -> Value {
        Value {
            typename: typename.into(),
            bytes,
        }
    }
}

/// A message on its way to an address.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Envelope {
    pub target: Address,
    /// The sending function; `None` for messages from an ingress.
    pub caller: Option<Address>,
    pub value: Value,
    /// An ingress record's idempotency key (caller-supplied): the worker owning the target
    /// applies a record once per key within the deduplication window.
    pub dedup: Option<Arc<str>>,
}
