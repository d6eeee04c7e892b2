//! The checkpoint part format (`proto/checkpoint.proto`): a partition's [`Capture`] encoded as
//! one worker's part, and the parts of a checkpoint decoded back into the capture one worker
//! resumes from — the entries of the key groups it owns under the current layout (rescaling).
//! Pure: no I/O.

mod decode;
mod direct;

use bytes::Bytes;
use prost::Message as _;

pub(crate) use decode::decode;

use crate::deadletter::{Entry, Payload};
use crate::partition::Capture;
use crate::proto::checkpoint as proto;
use crate::proto::to_wire;
use crate::state::{Expiration, StateSpec};

/// Who wrote a part, and for which layout.
#[derive(Debug, Clone)]
pub(crate) struct PartMeta {
    pub application: String,
    /// `None` outside Kubernetes.
    pub namespace: Option<String>,
    pub uid: Option<String>,
    pub generation: u64,
    pub worker: u32,
    pub workers: u32,
    pub key_groups: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("part is not a valid checkpoint part: {0}")]
    Malformed(#[from] prost::DecodeError),
    #[error(
        "part of checkpoint {checkpoint} belongs to application {found}, not to this application ({expected}): refusing to restore another application's state"
    )]
    OtherApplication {
        checkpoint: u64,
        found: String,
        expected: String,
    },
    #[error("part of checkpoint {checkpoint} has {found} key groups, the application {expected}")]
    KeyGroups { checkpoint: u64, found: u32, expected: u32 },
    #[error("part of checkpoint {checkpoint}: {reason}")]
    Entry { checkpoint: u64, reason: String },
}

fn spec_to_wire(s: &StateSpec) -> proto::Spec {
    let (expire_mode, ttl) = match s.expiration {
        Expiration::Never => (0, 0),
        Expiration::AfterWrite(d) => (1, d.as_millis() as u64),
        Expiration::AfterInvoke(d) => (2, d.as_millis() as u64),
    };
    proto::Spec {
        name: s.name.to_string(),
        typename: s.typename.clone(),
        expire_mode,
        ttl_ms: ttl,
    }
}

fn dead_letter_to_wire(e: &Entry) -> proto::DeadLetter {
    let mut d = proto::DeadLetter {
        id: e.id.to_string(),
        at_ms: e.at_ms,
        kind: e.kind.clone(),
        reason: e.reason.clone(),
        ..Default::default()
    };
    match &e.payload {
        Payload::Messages(m) => d.messages = m.iter().map(to_wire).collect(),
        Payload::Egress(records) => {
            d.egress = records
                .iter()
                .map(|r| proto::EgressOut {
                    egress: r.egress.to_string(),
                    source_type: r.source.typename.to_string(),
                    source_id: r.source.id.to_string(),
                    typename: r.value.typename.to_string(),
                    value: r.value.bytes.clone(),
                    key: r.key.to_string(),
                    epoch: r.epoch,
                })
                .collect()
        }
        Payload::Record {
            target,
            typename,
            value,
        } => {
            d.record = Some(proto::RefusedRecord {
                target: target.clone(),
                typename: typename.clone(),
                value: value.clone(),
            })
        }
        Payload::Nothing => {}
    }
    d
}

/// The part of `capture` as written to storage.
pub(crate) fn encode(capture: &Capture, meta: &PartMeta) -> Bytes {
    let specs = capture
        .specs
        .iter()
        .map(|(t, specs)| proto::TypeSpecs {
            typename: t.to_string(),
            specs: specs.iter().map(spec_to_wire).collect(),
        })
        .collect();
    let part = proto::Part {
        application: meta.application.clone(),
        checkpoint: capture.checkpoint,
        generation: meta.generation,
        worker: meta.worker,
        workers: meta.workers,
        key_groups: meta.key_groups,
        state: Vec::new(),
        specs,
        messages: capture.messages.iter().map(to_wire).collect(),
        recorded: capture.recorded.iter().map(to_wire).collect(),
        delayed: capture
            .delayed
            .iter()
            .map(|(due, env, token)| proto::Delayed {
                due_ms: *due,
                message: Some(to_wire(env)),
                token: token.as_deref().unwrap_or("").to_string(),
            })
            .collect(),
        egress: Vec::new(),
        seen: capture
            .seen
            .entries()
            .map(|(a, key, at)| proto::Seen {
                target_type: a.typename.to_string(),
                target_id: a.id.to_string(),
                key: key.to_string(),
                at_ms: at,
            })
            .collect(),
        positions: capture
            .positions
            .iter()
            .map(|(source, next)| proto::Position {
                source: source.to_string(),
                next: *next,
            })
            .collect(),
        dead_letters: capture.dead_letters.iter().map(dead_letter_to_wire).collect(),
        sink_marks: capture
            .sink_marks
            .iter()
            .map(|(egress, mark)| proto::SinkMark {
                egress: egress.to_string(),
                mark: *mark,
            })
            .collect(),
        namespace: meta.namespace.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
    };
    // The state and the egress records, the bulk of a part, are appended directly;
    // entries of a repeated field may come in any position.
    let mut buf = Vec::with_capacity(part.encoded_len() + capture.state.addresses() * 96 + capture.egress.len() * 128);
    part.encode(&mut buf).expect("a Vec grows as needed");
    direct::append_state(&capture.state, &mut buf);
    direct::append_egress(&capture.egress, &mut buf);
    Bytes::from(buf)
}

#[cfg(test)]
mod tests;
