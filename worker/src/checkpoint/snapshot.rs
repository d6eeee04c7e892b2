//! A worker's part of a checkpoint in memory ([`Snapshot`], captured by the partition), its
//! encoding (`proto/checkpoint.proto`), and the reverse: the entries of one or more parts that
//! a worker owns under the current layout ([`Restored`]). Pure: no I/O.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;
use spindle_spec::TypeName;

use crate::egress::EgressRecord;
use crate::keygroup::{key_group, worker_of};
use crate::message::{Address, Envelope, Value};
use crate::partition::{DEDUP_WINDOW_MS, Expiration, SeenKeys, SpecRegistry, StateSpec, StateStore};

pub mod proto {
    tonic::include_proto!("spindle.checkpoint.v1");
}

/// An egress record held until the checkpoint of its epoch completes.
#[derive(Debug, Clone)]
pub struct PendingEgress {
    pub epoch: u64,
    /// `{application}/{epoch}/{worker}/{sequence}`: the same after any number of restores, so a
    /// receiver can drop a re-send.
    pub key: Arc<str>,
    pub record: EgressRecord,
}

/// Everything a worker must resume from, as of its snapshot for checkpoint `checkpoint`.
#[derive(Debug)]
pub struct Snapshot {
    pub checkpoint: u64,
    pub state: StateStore,
    pub specs: SpecRegistry,
    /// Not fully processed at the snapshot, per address in processing order.
    pub messages: Vec<Envelope>,
    /// Arrived on an input channel after the snapshot, before that channel's barrier.
    pub recorded: Vec<Envelope>,
    pub delayed: Vec<(u64, Envelope, Option<Arc<str>>)>,
    pub egress: Vec<PendingEgress>,
    pub seen: SeenKeys,
    /// Source positions: the next offset or sequence to read per source.
    pub positions: BTreeMap<Arc<str>, i64>,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            checkpoint: 0,
            state: StateStore::default(),
            specs: SpecRegistry::default(),
            messages: Vec::new(),
            recorded: Vec::new(),
            delayed: Vec::new(),
            egress: Vec::new(),
            seen: SeenKeys::new(DEDUP_WINDOW_MS),
            positions: BTreeMap::new(),
        }
    }
}

/// Who wrote a part, and for which layout.
#[derive(Debug, Clone)]
pub struct PartMeta {
    pub application: String,
    pub generation: u64,
    pub worker: u32,
    pub workers: u32,
    pub key_groups: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("part is not a valid checkpoint part: {0}")]
    Malformed(#[from] prost::DecodeError),
    #[error("part of checkpoint {checkpoint} belongs to application `{found}`, not `{expected}`")]
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

fn message_to(env: &Envelope) -> proto::Message {
    let (caller_type, caller_id) = match &env.caller {
        Some(c) => (c.typename.to_string(), c.id.to_string()),
        None => (String::new(), String::new()),
    };
    proto::Message {
        target_type: env.target.typename.to_string(),
        target_id: env.target.id.to_string(),
        caller_type,
        caller_id,
        typename: env.value.typename.to_string(),
        value: env.value.bytes.clone(),
        dedup: env.dedup.as_deref().unwrap_or("").to_string(),
    }
}

fn message_from(m: proto::Message) -> Result<Envelope, String> {
    let target = TypeName::parse(&m.target_type).map_err(|e| format!("message target: {e}"))?;
    let caller = if m.caller_type.is_empty() {
        None
    } else {
        let t = TypeName::parse(&m.caller_type).map_err(|e| format!("message caller: {e}"))?;
        Some(Address::new(t, m.caller_id))
    };
    Ok(Envelope {
        target: Address::new(target, m.target_id),
        caller,
        value: Value::new(m.typename, m.value),
        dedup: (!m.dedup.is_empty()).then(|| m.dedup.into()),
    })
}

fn spec_to(s: &StateSpec) -> proto::Spec {
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

fn spec_from(s: proto::Spec) -> StateSpec {
    let ttl = std::time::Duration::from_millis(s.ttl_ms);
    StateSpec {
        name: s.name.into(),
        typename: s.typename,
        expiration: match s.expire_mode {
            1 => Expiration::AfterWrite(ttl),
            2 => Expiration::AfterInvoke(ttl),
            _ => Expiration::Never,
        },
    }
}

impl Snapshot {
    /// The part as written to storage.
    pub fn encode(&self, meta: &PartMeta) -> Bytes {
        let specs = self
            .specs
            .iter()
            .map(|(t, specs)| proto::TypeSpecs {
                typename: t.to_string(),
                specs: specs.iter().map(spec_to).collect(),
            })
            .collect();
        let part = proto::Part {
            application: meta.application.clone(),
            checkpoint: self.checkpoint,
            generation: meta.generation,
            worker: meta.worker,
            workers: meta.workers,
            key_groups: meta.key_groups,
            state: Vec::new(),
            specs,
            messages: self.messages.iter().map(message_to).collect(),
            recorded: self.recorded.iter().map(message_to).collect(),
            delayed: self
                .delayed
                .iter()
                .map(|(due, env, token)| proto::Delayed {
                    due_ms: *due,
                    message: Some(message_to(env)),
                    token: token.as_deref().unwrap_or("").to_string(),
                })
                .collect(),
            egress: Vec::new(),
            seen: self
                .seen
                .entries()
                .map(|(a, key, at)| proto::Seen {
                    target_type: a.typename.to_string(),
                    target_id: a.id.to_string(),
                    key: key.to_string(),
                    at_ms: at,
                })
                .collect(),
            positions: self
                .positions
                .iter()
                .map(|(source, next)| proto::Position {
                    source: source.to_string(),
                    next: *next,
                })
                .collect(),
        };
        // The state and the egress records, the bulk of a part, are appended directly;
        // entries of a repeated field may come in any position.
        let mut buf = Vec::with_capacity(part.encoded_len() + self.state.addresses() * 96 + self.egress.len() * 128);
        part.encode(&mut buf).expect("a Vec grows as needed");
        super::direct_encoding::append_state(&self.state, &mut buf);
        super::direct_encoding::append_egress(&self.egress, &mut buf);
        Bytes::from(buf)
    }
}

/// What one worker resumes with: the entries of its key groups from every part of a checkpoint.
#[derive(Debug)]
pub struct Restored {
    pub checkpoint: u64,
    pub state: StateStore,
    pub specs: SpecRegistry,
    /// Messages to process, in order (snapshot messages first, then recorded channel state).
    pub messages: Vec<Envelope>,
    pub delayed: Vec<(u64, Envelope, Option<Arc<str>>)>,
    /// Output of completed epochs that may not have left yet: released again, same keys.
    pub egress: Vec<PendingEgress>,
    pub seen: SeenKeys,
    /// Every source's position (the highest any part holds): each worker resumes the sources
    /// it reads from here.
    pub positions: BTreeMap<Arc<str>, i64>,
}

impl Default for Restored {
    fn default() -> Self {
        Restored {
            checkpoint: 0,
            state: StateStore::default(),
            specs: SpecRegistry::default(),
            messages: Vec::new(),
            delayed: Vec::new(),
            egress: Vec::new(),
            seen: SeenKeys::new(DEDUP_WINDOW_MS),
            positions: BTreeMap::new(),
        }
    }
}

/// Who owns what under the current layout.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub worker: u32,
    pub workers: u32,
    pub key_groups: u32,
}

impl Layout {
    pub fn owns(&self, addr: &Address) -> bool {
        self.workers <= 1 || worker_of(key_group(addr, self.key_groups), self.workers, self.key_groups) == self.worker
    }
}

impl Restored {
    /// Decodes `parts` (all parts of one checkpoint) and keeps what `layout` owns: state,
    /// messages and delayed messages by address (a delayed message by its sender, which owns
    /// its cancellation token); pending egress of old worker `w` goes to `w % workers`.
    pub fn decode(application: &str, parts: &[Bytes], layout: Layout) -> Result<Restored, DecodeError> {
        let mut out = Restored::default();
        let mut messages = Vec::new();
        let mut recorded = Vec::new();
        for bytes in parts {
            let part = proto::Part::decode(bytes.as_ref())?;
            let checkpoint = part.checkpoint;
            out.checkpoint = checkpoint;
            let bad = |reason: String| DecodeError::Entry { checkpoint, reason };
            if part.application != application {
                return Err(DecodeError::OtherApplication {
                    checkpoint,
                    found: part.application,
                    expected: application.to_string(),
                });
            }
            if part.key_groups != layout.key_groups {
                return Err(DecodeError::KeyGroups {
                    checkpoint,
                    found: part.key_groups,
                    expected: layout.key_groups,
                });
            }
            for s in part.state {
                let t = TypeName::parse(&s.typename).map_err(|e| bad(format!("state address: {e}")))?;
                let addr = Address::new(t, s.id);
                if !layout.owns(&addr) {
                    continue;
                }
                for c in s.cells {
                    let exp = (c.expires_at_ms != 0).then_some(c.expires_at_ms);
                    out.state
                        .restore(addr.clone(), &c.name, Value::new(c.typename, c.value), exp);
                }
            }
            // Every worker learns every type's specs: they are per type, not per address.
            for ts in part.specs {
                let t = TypeName::parse(&ts.typename).map_err(|e| bad(format!("state spec type: {e}")))?;
                out.specs.register(&t, ts.specs.into_iter().map(spec_from));
            }
            for m in part.messages {
                let env = message_from(m).map_err(bad)?;
                if layout.owns(&env.target) {
                    messages.push(env);
                }
            }
            for m in part.recorded {
                let env = message_from(m).map_err(bad)?;
                if layout.owns(&env.target) {
                    recorded.push(env);
                }
            }
            for d in part.delayed {
                let env = message_from(d.message.unwrap_or_default()).map_err(bad)?;
                let sender = env.caller.as_ref().unwrap_or(&env.target);
                if layout.owns(sender) {
                    let token = (!d.token.is_empty()).then(|| Arc::from(d.token));
                    out.delayed.push((d.due_ms, env, token));
                }
            }
            let mut seen: Vec<_> = Vec::new();
            for s in part.seen {
                let t = TypeName::parse(&s.target_type).map_err(|e| bad(format!("idempotency key target: {e}")))?;
                let addr = Address::new(t, s.target_id);
                if layout.owns(&addr) {
                    seen.push((s.at_ms, addr, Arc::<str>::from(s.key)));
                }
            }
            // Oldest first, so that expiry keeps working in order.
            seen.sort_by_key(|s| s.0);
            for (at, addr, key) in seen {
                out.seen.insert(&addr, &key, at);
            }
            // A source is read by one worker, which moves it forward; the others hold the
            // position they restored, which is never ahead of it.
            for p in part.positions {
                let e = out.positions.entry(Arc::from(p.source)).or_insert(p.next);
                *e = (*e).max(p.next);
            }
            if part.worker % layout.workers.max(1) == layout.worker {
                for e in part.egress {
                    let egress = TypeName::parse(&e.egress).map_err(|err| bad(format!("egress: {err}")))?;
                    let source_type =
                        TypeName::parse(&e.source_type).map_err(|err| bad(format!("egress source: {err}")))?;
                    out.egress.push(PendingEgress {
                        epoch: e.epoch,
                        key: e.key.into(),
                        record: EgressRecord {
                            egress,
                            value: Value::new(e.typename, e.value),
                            source: Address::new(source_type, e.source_id),
                            key: None,
                        },
                    });
                }
            }
        }
        // Per address, snapshot messages precede recorded ones: they arrived earlier.
        messages.append(&mut recorded);
        out.messages = messages;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(id: &str) -> Address {
        Address::new(TypeName::parse("t/f").unwrap(), id)
    }

    fn env(to: &str, v: &str) -> Envelope {
        Envelope {
            target: addr(to),
            caller: Some(addr("caller")),
            value: Value::new("t/v", Bytes::from(v.to_string())),
            dedup: None,
        }
    }

    fn meta(worker: u32, workers: u32) -> PartMeta {
        PartMeta {
            application: "app".into(),
            generation: 1,
            worker,
            workers,
            key_groups: 16,
        }
    }

    #[test]
    fn a_part_round_trips_and_rescales_by_address() {
        let mut snap = Snapshot {
            checkpoint: 7,
            ..Snapshot::default()
        };
        let ids: Vec<String> = (0..40).map(|i| format!("k{i}")).collect();
        for id in &ids {
            snap.state
                .restore(addr(id), "n", Value::new("t/n", Bytes::from(id.clone())), Some(99));
            snap.messages.push(env(id, "m1"));
            snap.recorded.push(env(id, "m2"));
        }
        snap.specs.register(
            &TypeName::parse("t/f").unwrap(),
            [StateSpec {
                name: "n".into(),
                typename: "t/n".into(),
                expiration: Expiration::AfterWrite(std::time::Duration::from_millis(5)),
            }],
        );
        snap.delayed.push((123, env("k1", "d"), Some("tok".into())));
        snap.egress.push(PendingEgress {
            epoch: 7,
            key: "app/7/0/1".into(),
            record: EgressRecord {
                egress: TypeName::parse("t/out").unwrap(),
                value: Value::new("t/v", Bytes::from_static(b"x")),
                source: addr("k1"),
                key: None,
            },
        });
        snap.positions.insert("kafka/k/t/0".into(), 41);
        let mut other = Snapshot {
            checkpoint: 7,
            ..Snapshot::default()
        };
        other.positions.insert("kafka/k/t/0".into(), 12);
        other.positions.insert("nats/n".into(), 5);
        let merged = Restored::decode(
            "app",
            &[snap.encode(&meta(0, 2)), other.encode(&meta(1, 2))],
            Layout {
                worker: 0,
                workers: 1,
                key_groups: 16,
            },
        )
        .unwrap();
        assert_eq!(
            merged.positions.get("kafka/k/t/0"),
            Some(&41),
            "the highest position wins"
        );
        assert_eq!(merged.positions.get("nats/n"), Some(&5));
        let bytes = snap.encode(&meta(0, 1));
        // Restoring with 3 workers: every address lands at exactly one, messages in order.
        let mut seen = 0;
        let mut egress = 0;
        for w in 0..3 {
            let layout = Layout {
                worker: w,
                workers: 3,
                key_groups: 16,
            };
            let r = Restored::decode("app", std::slice::from_ref(&bytes), layout).unwrap();
            assert_eq!(r.checkpoint, 7);
            assert_eq!(r.specs.specs(&TypeName::parse("t/f").unwrap()).len(), 1);
            for (a, _) in r.state.iter() {
                assert!(layout.owns(a));
                seen += 1;
            }
            for id in &ids {
                let mine: Vec<_> = r.messages.iter().filter(|e| *e.target.id == **id).collect();
                if layout.owns(&addr(id)) {
                    let vals: Vec<_> = mine.iter().map(|e| &e.value.bytes[..]).collect();
                    assert_eq!(
                        vals,
                        [b"m1".as_slice(), b"m2"],
                        "snapshot messages before recorded ones"
                    );
                } else {
                    assert!(mine.is_empty());
                }
            }
            egress += r.egress.len();
            if layout.owns(&addr("caller")) {
                assert_eq!(r.delayed.len(), 1);
                assert_eq!(r.delayed[0].2.as_deref(), Some("tok"));
            }
        }
        assert_eq!(seen, ids.len());
        assert_eq!(egress, 1, "pending egress is restored once");
    }

    #[test]
    fn parts_of_another_application_or_layout_are_refused() {
        let bytes = Snapshot::default().encode(&meta(0, 1));
        let layout = Layout {
            worker: 0,
            workers: 1,
            key_groups: 16,
        };
        assert!(matches!(
            Restored::decode("other", std::slice::from_ref(&bytes), layout),
            Err(DecodeError::OtherApplication { .. })
        ));
        let layout = Layout {
            worker: 0,
            workers: 1,
            key_groups: 8,
        };
        assert!(matches!(
            Restored::decode("app", std::slice::from_ref(&bytes), layout),
            Err(DecodeError::KeyGroups { .. })
        ));
        assert!(Restored::decode("app", &[Bytes::from_static(b"\xff\xff")], layout).is_err());
    }
}
