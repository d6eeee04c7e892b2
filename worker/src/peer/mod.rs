//! Worker-to-worker transport over gRPC (tonic): one long-lived bidirectional stream per
//! ordered pair of workers, carrying batches of envelopes in order.
//!
//! - [`link::Link`] (sender side): takes envelopes for one peer, sends them as numbered
//!   batches and keeps each batch — with the ingress admissions of its messages — until the
//!   peer acknowledges delivery. A broken stream is reopened with backoff and unacknowledged
//!   batches are sent again; the receiver recognises them by number, so nothing is lost or
//!   delivered twice while both processes live.
//! - [`service::PeerService`] (receiver side): checks the handshake (same application, worker
//!   count and key groups, right worker index), then delivers batches into the local partition
//!   once admission permits are free: a slow worker stops reading, which stalls the sender's
//!   stream, which holds the sender's ingress admissions — back-pressure end to end.

pub mod control;
pub mod discovery;
pub mod link;
pub mod service;

pub use service::PeerService;

use spindle_spec::TypeName;

use crate::message::{Address, Envelope, Value};

pub mod proto {
    tonic::include_proto!("spindle.peer.v1");
}

/// Where this worker stands among its peers.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    /// This worker's index.
    pub index: u32,
    /// `host:port` of every worker's peer endpoint, by index (this worker's own included).
    /// Empty for a single worker.
    pub peers: Vec<String>,
    /// Incremented on every rollback (exactly-once release); 0 until then.
    pub generation: u64,
}

impl Cluster {
    pub fn workers(&self) -> u32 {
        (self.peers.len() as u32).max(1)
    }
}

pub fn to_wire(env: &Envelope) -> proto::Envelope {
    let (caller_type, caller_id) = match &env.caller {
        Some(c) => (c.typename.to_string(), c.id.to_string()),
        None => (String::new(), String::new()),
    };
    proto::Envelope {
        target_type: env.target.typename.to_string(),
        target_id: env.target.id.to_string(),
        caller_type,
        caller_id,
        typename: env.value.typename.to_string(),
        value: env.value.bytes.clone(),
        dedup: env.dedup.as_deref().unwrap_or("").to_string(),
    }
}

pub fn from_wire(e: &proto::Envelope) -> Result<Envelope, String> {
    let target = TypeName::parse(&e.target_type).map_err(|err| format!("envelope target: {err}"))?;
    let caller = if e.caller_type.is_empty() {
        None
    } else {
        let t = TypeName::parse(&e.caller_type).map_err(|err| format!("envelope caller: {err}"))?;
        Some(Address::new(t, e.caller_id.as_str()))
    };
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
