//! The checkpoint part format (`proto/checkpoint.proto`), pure: no I/O.
//!
//! - Format 2 (written now, [`encode`]): a partition's [`Capture`] as one worker's part — one
//!   `GroupState` section per key group it changed (or captured whole), then the rest of the
//!   capture (messages, delayed messages, egress, keys seen, positions, marks, dead letters,
//!   specs: a `Part` without state), then a `PartIndex` saying where each section is, with
//!   its CRC-32. Key-group sections are read back as they stream in ([`GroupDecoder`]).
//! - Format 1 (every part written before incremental checkpoints, and the rest section of
//!   format 2): a `Part`, [`decode`]d into the capture one worker owns under the current
//!   layout (rescaling), section by section.

mod decode;
mod direct;
mod group;

use bytes::Bytes;
use prost::Message as _;

pub(crate) use decode::decode;
pub(crate) use group::{GroupDecoder, SectionError, TypeNames};

use super::manifest::SectionLoc;
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

/// A part, encoded: its payload and where its sections are.
#[derive(Debug)]
pub(crate) struct EncodedPart {
    pub payload: Bytes,
    /// The `PartIndex`.
    pub index: SectionLoc,
    /// The key-group sections (offsets in the payload).
    pub groups: Vec<proto::Section>,
    /// Bytes of delta sections (what changed) and of base sections (whole groups).
    pub delta_bytes: u64,
    pub base_bytes: u64,
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

/// Everything of `capture` but its state, as a `Part`.
fn append_rest(capture: &Capture, meta: &PartMeta, buf: &mut Vec<u8>) {
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
            .map(|(a, key, seen)| proto::Seen {
                target_type: a.typename.to_string(),
                target_id: a.id.to_string(),
                key: key.to_string(),
                at_ms: seen.at_ms,
                reply_typename: seen.reply.as_ref().map_or(String::new(), |v| v.typename.to_string()),
                reply_value: seen.reply.as_ref().map_or_else(Default::default, |v| v.bytes.clone()),
                waiting: seen.waiting.iter().map(|a| a.to_string()).collect(),
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
    buf.reserve(part.encoded_len() + capture.egress.len() * 128);
    part.encode(buf).expect("a Vec grows as needed");
    // The egress records are appended directly; entries of a repeated field may come in any
    // position.
    direct::append_egress(&capture.egress, buf);
}

fn section_at(buf: &[u8], start: usize) -> SectionLoc {
    SectionLoc {
        offset: start as u64,
        length: (buf.len() - start) as u64,
        crc32: crc32fast::hash(&buf[start..]),
    }
}

/// The part of `capture` as written to storage (format 2).
pub(crate) fn encode(capture: &Capture, meta: &PartMeta) -> EncodedPart {
    let entries: usize = capture.changes.groups.iter().map(|g| g.entries.len()).sum();
    let mut buf = Vec::with_capacity(entries * 112 + 4096);
    let mut groups = Vec::with_capacity(capture.changes.groups.len());
    let (mut delta_bytes, mut base_bytes) = (0, 0);
    for g in &capture.changes.groups {
        let start = buf.len();
        direct::append_group(g, &mut buf);
        let at = section_at(&buf, start);
        if g.whole {
            base_bytes += at.length;
        } else {
            delta_bytes += at.length;
        }
        groups.push(proto::Section {
            key_group: g.key_group,
            base: g.whole,
            offset: at.offset,
            length: at.length,
            crc32: at.crc32,
            addresses: g.entries.len() as u64,
        });
    }
    let start = buf.len();
    append_rest(capture, meta, &mut buf);
    let rest = section_at(&buf, start);
    let index = proto::PartIndex {
        checkpoint: capture.checkpoint,
        worker: meta.worker,
        groups: groups.clone(),
        rest: Some(proto::Section {
            offset: rest.offset,
            length: rest.length,
            crc32: rest.crc32,
            ..Default::default()
        }),
    };
    let start = buf.len();
    index.encode(&mut buf).expect("a Vec grows as needed");
    let index = section_at(&buf, start);
    EncodedPart {
        payload: Bytes::from(buf),
        index,
        groups,
        delta_bytes,
        base_bytes,
    }
}

/// Decodes a part's index (its bytes read and checked by the caller).
pub(crate) fn decode_index(bytes: &[u8]) -> Result<proto::PartIndex, DecodeError> {
    Ok(proto::PartIndex::decode(bytes)?)
}

#[cfg(test)]
mod tests;
