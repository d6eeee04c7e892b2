//! The data plane's own message types: addresses, typed values and envelopes. Protobuf types
//! stay at the edges (invoker, SDK); these are what the router, mailboxes and (later) the
//! worker-to-worker transport and checkpoints carry.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use spindle_protocol::reqreply;
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

    /// From the wire; `None` when the namespace or type is missing or malformed.
    pub fn from_proto(a: &reqreply::Address) -> Option<Address> {
        let typename = TypeName::new(&a.namespace, &a.r#type).ok()?;
        Some(Address::new(typename, a.id.as_str()))
    }

    pub fn to_proto(&self) -> reqreply::Address {
        reqreply::Address {
            namespace: self.typename.namespace().to_string(),
            r#type: self.typename.name().to_string(),
            id: self.id.to_string(),
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

    /// `None` for a TypedValue without a value: a message must carry one.
    pub fn from_proto(v: reqreply::TypedValue) -> Option<Value> {
        v.has_value.then(|| Value::new(v.typename, v.value))
    }

    pub fn to_proto(&self) -> reqreply::TypedValue {
        reqreply::TypedValue {
            typename: self.typename.to_string(),
            has_value: true,
            value: self.bytes.clone(),
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
