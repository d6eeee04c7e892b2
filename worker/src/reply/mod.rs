//! Request–reply over the HTTP ingress: a request that asks for its reply gets a *reply
//! address* as its message's caller ([`address`]); the message a function sends to that
//! address travels like any other (checkpointed, routed, replayed after a rollback) to the
//! worker holding the request, which holds it until the checkpoint containing it completes and
//! then hands it to the waiting request ([`waiters`]). docs/worker.md ("Request–reply") has
//! the whole path and the guarantees; the partition's side is `partition::replies`, the
//! HTTP side `ingress::reply`.

pub mod address;
pub mod waiters;

pub use address::{NAMESPACE, ReplyTo};
pub use waiters::{Released, Replies, Waiting};

use bytes::Bytes;
use spindle_protocol::Primitive;

use crate::message::Value;

/// The body of an HTTP response carrying `value`: StateFun primitive types decoded (a string
/// as its UTF-8 text, numbers and booleans as their decimal text), anything else — JSON by the
/// SDKs' convention, or the type's own bytes — as it is.
pub fn body(value: &Value) -> Bytes {
    match Primitive::decode(&value.typename, &value.bytes) {
        Some(Primitive::String(s)) => Bytes::from(s),
        Some(Primitive::Int(v)) => Bytes::from(v.to_string()),
        Some(Primitive::Long(v)) => Bytes::from(v.to_string()),
        Some(Primitive::Bool(v)) => Bytes::from(v.to_string()),
        Some(Primitive::Float(v)) => Bytes::from(v.to_string()),
        Some(Primitive::Double(v)) => Bytes::from(v.to_string()),
        None => value.bytes.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_are_decoded_and_other_values_kept() {
        let s = Primitive::String("hi ✓".into());
        assert_eq!(body(&Value::new(s.typename(), s.encode())), "hi ✓".as_bytes());
        let n = Primitive::Long(-42);
        assert_eq!(body(&Value::new(n.typename(), n.encode())), "-42".as_bytes());
        let json = Value::new("shop/Total", Bytes::from_static(br#"{"total":3}"#));
        assert_eq!(body(&json), br#"{"total":3}"#.as_slice());
    }
}
