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
        trace: env
            .trace
            .map_or_else(bytes::Bytes::new, |t| bytes::Bytes::copy_from_slice(&t.to_bytes())),
    }
}

/// An upper bound of the envelope's encoded size, without encoding it (checked for every
/// message forwarded to a peer).
pub fn wire_size(env: &Envelope) -> usize {
    // Eight fields, each at most a tag and a 10-byte length before its bytes.
    let caller = env
        .caller
        .as_ref()
        .map_or(0, |c| c.typename.as_str().len() + c.id.len());
    8 * 11
        + env.trace.map_or(0, |_| 24)
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
        // A reply goes to the caller: its id must be one a target may have.
        crate::message::check_id(&e.caller_id).map_err(|err| format!("envelope caller: {err}"))?;
        Some(Address::new(t, e.caller_id.as_str()))
    };
    crate::message::check_id(&e.target_id).map_err(|err| format!("envelope target: {err}"))?;
    Ok(Envelope {
        target: Address::new(target, e.target_id.as_str()),
        caller,
        value: Value::new(e.typename.as_str(), e.value.clone()),
        dedup: (!e.dedup.is_empty()).then(|| e.dedup.as_str().into()),
        trace: crate::trace::SpanContext::from_bytes(&e.trace),
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
                trace: None,
            };
            assert_eq!(from_wire(&to_wire(&env)).unwrap(), env);
        }
    }

    #[test]
    fn any_peer_frame_decodes_to_valid_envelopes_or_an_error_never_a_panic() {
        use prost::Message as _;
        let t = TypeName::parse("t/f").unwrap();
        let env = Envelope {
            target: Address::new(t.clone(), "x"),
            caller: Some(Address::new(t, "c")),
            value: Value::new("t/V", Bytes::from_static(b"v")),
            dedup: Some("k".into()),
            trace: None,
        };
        let frame = |kind| peer::Frame { kind: Some(kind) }.encode_to_vec();
        let valid = [
            frame(peer::frame::Kind::Batch(peer::Batch {
                seq: 3,
                envelopes: vec![to_wire(&env), to_wire(&env)],
                barrier: 2,
            })),
            frame(peer::frame::Kind::Hello(peer::Hello {
                application: "app".into(),
                from_worker: 1,
                to_worker: 0,
                workers: 2,
                key_groups: 16,
                generation: 4,
            })),
        ];
        let mut rng = crate::fuzz::Rng::new(0x5eed_0002);
        for case in 0..crate::fuzz::CASES {
            let bytes = match case % 3 {
                0 => rng.bytes(300),
                n => rng.mutate(&valid[n - 1]),
            };
            let Ok(peer::Frame {
                kind: Some(peer::frame::Kind::Batch(batch)),
            }) = peer::Frame::decode(bytes.as_slice())
            else {
                continue;
            };
            let mut wire: Vec<common::Envelope> = batch.envelopes;
            // Awkward strings where the decoder trusts nothing.
            let mut odd = to_wire(&env);
            (odd.target_type, odd.target_id, odd.caller_type, odd.caller_id) =
                (rng.text(), rng.text(), rng.text(), rng.text());
            wire.push(odd);
            for e in &wire {
                if let Ok(env) = from_wire(e) {
                    for a in std::iter::once(&env.target).chain(env.caller.as_ref()) {
                        assert!(
                            crate::message::check_id(&a.id).is_ok(),
                            "case {case}: accepted id {:?}",
                            a.id
                        );
                    }
                }
            }
        }
    }
}
