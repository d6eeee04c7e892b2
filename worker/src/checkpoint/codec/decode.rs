//! Parts back into a capture, section by section. Each entry names its address, so a restore
//! onto another worker count keeps exactly the entries of the key groups it owns: state,
//! messages and delayed messages by address (a delayed message by its sender, which owns its
//! cancellation token); every type's specs and every source's position go to every worker;
//! held egress of old worker `w` goes to `w % workers`.

use std::sync::Arc;

use bytes::Bytes;
use prost::Message as _;
use spindle_spec::TypeName;

use super::DecodeError;
use crate::app::AppIdentity;
use crate::deadletter::{DeadEgress, Entry, Payload};
use crate::egress::{EgressRecord, PendingEgress};
use crate::keygroup::Layout;
use crate::message::{Address, Value};
use crate::partition::{Capture, Seen};
use crate::proto::checkpoint as proto;
use crate::proto::from_wire;
use crate::state::{Expiration, StateSpec};

/// Decodes `parts` (all parts of one checkpoint of `application`) into what `layout` owns.
pub(crate) fn decode(application: &AppIdentity, parts: &[Bytes], layout: Layout) -> Result<Capture, DecodeError> {
    let mut out = Capture::new(layout.key_groups);
    let mut seen = Vec::new();
    for bytes in parts {
        let part = proto::Part::decode(bytes.as_ref())?;
        let checkpoint = part.checkpoint;
        out.checkpoint = checkpoint;
        check(application, &part, layout)?;
        let bad = |reason: String| DecodeError::Entry { checkpoint, reason };
        state(&mut out, part.state, layout).map_err(bad)?;
        specs(&mut out, part.specs).map_err(bad)?;
        out.messages.extend(owned_messages(part.messages, layout).map_err(bad)?);
        out.recorded.extend(owned_messages(part.recorded, layout).map_err(bad)?);
        delayed(&mut out, part.delayed, layout).map_err(bad)?;
        seen.extend(seen_keys(part.seen, layout).map_err(bad)?);
        positions(&mut out, part.positions);
        sink_marks(&mut out, part.sink_marks).map_err(bad)?;
        let mine = part.worker % layout.workers.max(1) == layout.worker;
        for d in part.dead_letters {
            let entry = dead_letter(d).map_err(bad)?;
            let keep = match entry.owner() {
                Some(owner) => layout.owns(owner),
                None => mine,
            };
            if keep {
                out.dead_letters.push(entry);
            }
        }
        if part.worker % layout.workers.max(1) == layout.worker {
            egress(&mut out, part.egress).map_err(bad)?;
        }
    }
    // Oldest first, so that expiry keeps working in order.
    seen.sort_by_key(|s| s.2.at_ms);
    for (addr, key, entry) in seen {
        out.seen.restore(&addr, &key, entry);
    }
    Ok(out)
}

fn check(application: &AppIdentity, part: &proto::Part, layout: Layout) -> Result<(), DecodeError> {
    let writer = AppIdentity {
        namespace: Some(part.namespace.clone()).filter(|n| !n.is_empty()),
        name: part.application.clone(),
        uid: Some(part.uid.clone()).filter(|u| !u.is_empty()),
    };
    if writer.name != application.name || writer.namespace != application.namespace {
        return Err(DecodeError::OtherApplication {
            checkpoint: part.checkpoint,
            found: writer.to_string(),
            expected: application.to_string(),
        });
    }
    // Same name and namespace, another UID: the application was deleted and created again,
    // and `retentionPolicy: Retain` promises that it resumes. Said, not refused.
    if let (Some(was), Some(now)) = (&writer.uid, &application.uid)
        && was != now
    {
        tracing::info!(checkpoint = part.checkpoint, written_by = %was, now = %now, "restoring a checkpoint of an earlier StatefulApplication of the same name and namespace");
    }
    if part.key_groups != layout.key_groups {
        return Err(DecodeError::KeyGroups {
            checkpoint: part.checkpoint,
            found: part.key_groups,
            expected: layout.key_groups,
        });
    }
    Ok(())
}

fn state(out: &mut Capture, entries: Vec<proto::AddressState>, layout: Layout) -> Result<(), String> {
    for s in entries {
        let t = TypeName::parse(&s.typename).map_err(|e| format!("state address: {e}"))?;
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
    Ok(())
}

/// Every worker learns every type's specs: they are per type, not per address.
fn specs(out: &mut Capture, entries: Vec<proto::TypeSpecs>) -> Result<(), String> {
    for ts in entries {
        let t = TypeName::parse(&ts.typename).map_err(|e| format!("state spec type: {e}"))?;
        out.specs.register(&t, ts.specs.into_iter().map(spec_from_wire));
    }
    Ok(())
}

fn spec_from_wire(s: proto::Spec) -> StateSpec {
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

fn owned_messages(
    entries: Vec<crate::proto::common::Envelope>,
    layout: Layout,
) -> Result<Vec<crate::message::Envelope>, String> {
    let mut out = Vec::new();
    for m in entries {
        let env = from_wire(&m)?;
        if layout.owns(&env.target) {
            out.push(env);
        }
    }
    Ok(out)
}

fn delayed(out: &mut Capture, entries: Vec<proto::Delayed>, layout: Layout) -> Result<(), String> {
    for d in entries {
        let env = from_wire(&d.message.unwrap_or_default())?;
        let sender = env.caller.as_ref().unwrap_or(&env.target);
        if layout.owns(sender) {
            let token = (!d.token.is_empty()).then(|| Arc::from(d.token));
            out.delayed.push((d.due_ms, env, token));
        }
    }
    Ok(())
}

fn seen_keys(entries: Vec<proto::Seen>, layout: Layout) -> Result<Vec<(Address, Arc<str>, Seen)>, String> {
    let mut out = Vec::new();
    for s in entries {
        let t = TypeName::parse(&s.target_type).map_err(|e| format!("idempotency key target: {e}"))?;
        let addr = Address::new(t, s.target_id);
        if !layout.owns(&addr) {
            continue;
        }
        let reply = (!s.reply_typename.is_empty()).then(|| Value::new(s.reply_typename, s.reply_value));
        let waiting = s
            .waiting
            .iter()
            .map(|w| {
                let (t, id) = w
                    .rsplit_once('/')
                    .ok_or_else(|| format!("waiting reply address `{w}`"))?;
                let t = TypeName::parse(t).map_err(|e| format!("waiting reply address: {e}"))?;
                Ok(Address::new(t, id))
            })
            .collect::<Result<_, String>>()?;
        let seen = Seen {
            at_ms: s.at_ms,
            reply,
            waiting,
        };
        out.push((addr, Arc::<str>::from(s.key), seen));
    }
    Ok(out)
}

/// A source is read by one worker, which moves it forward; the others hold the position they
/// restored, which is never ahead of it: the highest wins.
fn positions(out: &mut Capture, entries: Vec<proto::Position>) {
    for p in entries {
        let e = out.positions.entry(Arc::from(p.source)).or_insert(p.next);
        *e = (*e).max(p.next);
    }
}

/// Any part's sink may have written any restored record (held egress moves between workers on
/// a rescale, and local workers share files): the lowest mark of an egress is safe for all.
fn sink_marks(out: &mut Capture, entries: Vec<proto::SinkMark>) -> Result<(), String> {
    for m in entries {
        let egress = TypeName::parse(&m.egress).map_err(|err| format!("sink mark: {err}"))?;
        let e = out.sink_marks.entry(egress).or_insert(m.mark);
        *e = (*e).min(m.mark);
    }
    Ok(())
}

fn dead_letter(d: proto::DeadLetter) -> Result<Entry, String> {
    let payload = if !d.messages.is_empty() {
        Payload::Messages(d.messages.iter().map(from_wire).collect::<Result<_, _>>()?)
    } else if !d.egress.is_empty() {
        let records = d
            .egress
            .into_iter()
            .map(|e| {
                Ok(DeadEgress {
                    egress: TypeName::parse(&e.egress).map_err(|err| format!("dead letter egress: {err}"))?,
                    key: e.key.into(),
                    epoch: e.epoch,
                    source: Address::new(
                        TypeName::parse(&e.source_type).map_err(|err| format!("dead letter source: {err}"))?,
                        e.source_id,
                    ),
                    value: Value::new(e.typename, e.value),
                })
            })
            .collect::<Result<_, String>>()?;
        Payload::Egress(records)
    } else if let Some(r) = d.record {
        Payload::Record {
            target: r.target,
            typename: r.typename,
            value: r.value,
        }
    } else {
        Payload::Nothing
    };
    Ok(Entry {
        id: d.id.into(),
        at_ms: d.at_ms,
        kind: d.kind,
        reason: d.reason,
        payload,
    })
}

fn egress(out: &mut Capture, entries: Vec<proto::EgressOut>) -> Result<(), String> {
    for e in entries {
        let egress = TypeName::parse(&e.egress).map_err(|err| format!("egress: {err}"))?;
        let source_type = TypeName::parse(&e.source_type).map_err(|err| format!("egress source: {err}"))?;
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
    Ok(())
}
