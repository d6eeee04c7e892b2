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

/// Longest function id accepted (bytes): ids are keys of state and parts of URLs and headers.
pub const MAX_ID_BYTES: usize = 4096;

/// Why an id is refused at the door (an ingress, a function's reply, a peer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("the id is empty")]
    Empty,
    #[error("the id is {0} bytes long; at most {MAX_ID_BYTES} are accepted")]
    TooLong(usize),
    #[error("the id contains a control character at byte {0}")]
    Control(usize),
}

/// An id is 1 to [`MAX_ID_BYTES`] bytes of UTF-8 without control characters: anything else
/// could not be written into a header, a JSON line or a log line intact.
pub fn check_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.len() > MAX_ID_BYTES {
        return Err(IdError::TooLong(id.len()));
    }
    match id.char_indices().find(|(_, c)| c.is_control()) {
        Some((at, _)) => Err(IdError::Control(at)),
        None => Ok(()),
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
    /// The span this message belongs to (its ingress record's, or the invocation that sent
    /// it), when tracing is on and the trace is sampled.
    pub trace: Option<crate::trace::SpanContext>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_at_the_door() {
        assert_eq!(check_id("ada"), Ok(()));
        assert_eq!(check_id("a b/ü"), Ok(()), "spaces, slashes and non-ASCII are fine");
        assert_eq!(check_id("a\nb"), Err(IdError::Control(1)));
        assert_eq!(check_id("\u{7f}"), Err(IdError::Control(0)));
        assert_eq!(check_id(""), Err(IdError::Empty));
        assert_eq!(
            check_id(&"x".repeat(MAX_ID_BYTES + 1)),
            Err(IdError::TooLong(MAX_ID_BYTES + 1))
        );
        assert_eq!(
            IdError::Control(1).to_string(),
            "the id contains a control character at byte 1"
        );
    }
}
