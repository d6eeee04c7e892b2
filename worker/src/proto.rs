//! The worker's wire formats, generated from `worker/proto` (see `build.rs`), and the one
//! conversion between the data plane's [`Envelope`] and its wire form, which the peer
//! transport and the checkpoint codec share. Everything else about the wire stays at its edge:
//! the StateFun protocol in `invoker`, frames in `peer`, parts in `checkpoint::codec`.

use spindle_spec::TypeName;

use crate::message::{Address, Envelope, Value};

#[allow(clippy::all)]
pub mod spindle {
    pub mod common {
        pub mod v1 {
            tonic::include_proto!("spindle.common.v1");
        }
    }
    pub mod peer {
        pub mod v1 {
            tonic::include_proto!("spindle.peer.v1");
        }
    }
    pub mod control {
        pub mod v1 {
            tonic::include_proto!("spindle.control.v1");
        }
    }
    pub mod checkpoint {
        pub mod v1 {
            tonic::include_proto!("spindle.checkpoint.v1");
        }
    }
}

pub use spindle::checkpoint::v1 as checkpoint;
pub use spindle::common::v1 as common;
pub use spindle::control::v1 as control;
pub use spindle::peer::v1 as peer;

pub fn to_wire(env: &Envelope) -> common::Envelope {
    let (caller_type, caller_id) = match &env.caller {
        Some(c) => (c.typename.to_string(), c.id.to_string()),
        None => (String::new(), String::new()),
    };
    common::Envelope {
        target_type: env.target.typename.to_string(),
        target_id: env.target.id.to_string(),
        caller_type,
        caller_id,
        typename: env.value.typename.to_string(),
        value: env.value.bytes.clone(),
        dedup: env.dedup.as_deref().unwrap_or("").to_string(),
    }
}

/// An upper bound of the envelope's encoded size, without encoding it (checked for every
/// message forwarded to a peer).
pub fn wire_size(env: &Envelope) -> usize {
    // Seven fields, each at most a tag and a 10-byte length before its bytes.
    let caller = env
        .caller
        .as_ref()
        .map_or(0, |c| c.typename.as_str().len() + c.id.len());
    7 * 11
        + env.target.typename.as_str().len()
        + env.target.id.len()
        + caller
        + env.value.typename.len()
        + env.value.bytes.len()
        + env.dedup.as_deref().map_or(0, str::len)
}

/// The envelope, or why it is malformed (named for the caller's error message).
pub fn from_wire(e: &common::Envelope) -> Result<Envelope, String> {
    let target = TypeName::parse(&e.target_type).map_err(|err| format!("envelope target: {err}"))?;
    let caller = if e.caller_type.is_empty() {
        None
    } else {
        let t = TypeName::parse(&e.caller_type).map_err(|err| format!("envelope caller: {err}"))?;
        Some(Address::new(t, e.caller_id.as_str()))
    };
    crate::message::check_id(&e.target_id).map_err(|err| format!("envelope target: {err}"))?;
    Ok(Envelope {
        target: Address::new(target, e.target_id.as_str()),
        caller,
        value: Value::new(e.typename.as_str(), e.value.clone()),
        dedup: (!e.dedup.is_empty()).then(|| e.dedup.as_str().into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn envelopes_survive_the_wire() {
        let t = TypeName::parse("t/f").unwrap();
        for (caller, dedup) in [(None, Some("k1".into())), (Some(Address::new(t.clone(), "c")), None)] {
            let env = Envelope {
                target: Address::new(t.clone(), "x/y"),
                caller,
                value: Value::new("t/V", Bytes::from_static(b"\0\x01")),
                dedup,
            };
            assert_eq!(from_wire(&to_wire(&env)).unwrap(), env);
        }
    }
}
