//! The dead letters a partition keeps: part of its state, so of every checkpoint — a rollback
//! brings back exactly those of the restored checkpoint, a replay takes one out and delivers
//! its messages in the same step (exactly once), and the bound is in bytes.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::clock::now_ms;
use crate::deadletter::{Entry, Payload};

pub(crate) struct DeadLetterBox {
    entries: BTreeMap<Arc<str>, Entry>,
    bytes: usize,
    max_bytes: usize,
    /// `{worker}-{generation}`: ids are unique across workers and generations.
    prefix: String,
    seq: u64,
}

/// Why a dead letter was not kept.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Full {
    pub bytes: usize,
    pub max_bytes: usize,
}

impl DeadLetterBox {
    pub fn new(worker: u32, generation: u64, max_bytes: usize) -> DeadLetterBox {
        DeadLetterBox {
            entries: BTreeMap::new(),
            bytes: 0,
            max_bytes,
            prefix: format!("{worker}-{generation}"),
            seq: 0,
        }
    }

    /// Puts back what a checkpoint held (the bound does not refuse what was kept before).
    pub fn restore(&mut self, entries: Vec<Entry>) {
        for e in entries {
            self.bytes += e.size();
            self.entries.insert(e.id.clone(), e);
        }
    }

    /// Keeps a new dead letter, unless the bound is reached (then `Full` says so; the entry
    /// is returned either way, for the log).
    pub fn keep(&mut self, kind: &str, reason: String, payload: Payload) -> (Entry, Option<Full>) {
        self.seq += 1;
        let entry = Entry {
            id: format!("{}-{}", self.prefix, self.seq).into(),
            at_ms: now_ms(),
            kind: kind.to_string(),
            reason,
            payload,
        };
        let size = entry.size();
        if self.bytes + size > self.max_bytes {
            let full = Full {
                bytes: self.bytes,
                max_bytes: self.max_bytes,
            };
            return (entry, Some(full));
        }
        self.bytes += size;
        self.entries.insert(entry.id.clone(), entry.clone());
        (entry, None)
    }

    /// Takes a dead letter out (to replay or drop it).
    pub fn take(&mut self, id: &str) -> Option<Entry> {
        let e = self.entries.remove(id)?;
        self.bytes -= e.size();
        Some(e)
    }

    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl super::Partition {
    /// Keeps a dead letter (logged and counted too); past the bound it is only logged.
    pub(super) fn dead(&mut self, kind: &'static str, reason: String, payload: Payload) {
        let (entry, full) = self.dead.keep(kind, reason, payload);
        if let Some(full) = full {
            self.metrics.dead_letters_overflow.inc();
            tracing::warn!(
                kept_bytes = full.bytes,
                max_bytes = full.max_bytes,
                "dead letters are full (deadLetters.maxBytes): this one is only logged"
            );
        }
        self.dead_letters.record_entry(&entry, kind);
        self.metrics.dead_letter_bytes.set(self.dead.bytes() as i64);
    }

    /// Takes in what the sinks gave up on (they logged it already).
    pub(super) fn take_sink_dead(&mut self, taken: Vec<crate::egress::SinkDead>) {
        for d in taken {
            if let (_, Some(full)) = self.dead.keep(
                crate::deadletter::kind::EGRESS_FAILED,
                d.reason,
                Payload::Egress(d.records),
            ) {
                self.metrics.dead_letters_overflow.inc();
                tracing::warn!(
                    kept_bytes = full.bytes,
                    max_bytes = full.max_bytes,
                    "dead letters are full (deadLetters.maxBytes): an egress dead letter is only logged"
                );
            }
        }
        self.metrics.dead_letter_bytes.set(self.dead.bytes() as i64);
    }

    pub(super) fn on_dead_letters(&mut self, op: crate::inbox::DeadLetterOp) {
        use crate::inbox::DeadLetterOp;
        let taken = self.egress.unconfirmed.take_dead();
        self.take_sink_dead(taken);
        match op {
            DeadLetterOp::List(reply) => {
                let _ = reply.send(self.dead.entries().cloned().collect());
            }
            DeadLetterOp::Drop(id, reply) => {
                let result = match self.dead.take(&id) {
                    Some(_) => {
                        tracing::info!(id, "dead letter dropped");
                        Ok(())
                    }
                    None => Err(format!("no dead letter `{id}` here")),
                };
                self.metrics.dead_letter_bytes.set(self.dead.bytes() as i64);
                let _ = reply.send(result);
            }
            DeadLetterOp::Replay(id, reply) => {
                let result = match self.dead.take(&id) {
                    None => Err(format!("no dead letter `{id}` here")),
                    Some(entry) => self.replay(entry),
                };
                self.metrics.dead_letter_bytes.set(self.dead.bytes() as i64);
                let _ = reply.send(result);
            }
        }
    }

    /// Delivers a dead letter's messages (or releases its egress records) again, in the step
    /// that took it out: a checkpoint holds either the dead letter or what it became.
    fn replay(&mut self, entry: Entry) -> Result<(), String> {
        let id = entry.id.clone();
        match entry.payload {
            Payload::Messages(messages) => {
                tracing::info!(%id, messages = messages.len(), "dead letter replayed");
                for mut env in messages {
                    // Asked for explicitly: not a repeat of the ingress record it came from.
                    env.dedup = None;
                    self.deliver(env, None, true);
                }
                Ok(())
            }
            Payload::Egress(records) => {
                tracing::info!(%id, records = records.len(), "dead letter replayed");
                for r in records {
                    let record = crate::egress::EgressRecord {
                        egress: r.egress,
                        value: r.value,
                        source: r.source,
                        key: None,
                    };
                    let key = (!r.key.is_empty()).then_some(r.key);
                    match self.epochs.as_mut() {
                        Some(epochs) => epochs.hold_keyed(record, key),
                        None => {
                            let _ = self.egress.emit(crate::egress::EgressRecord { key, ..record });
                        }
                    }
                }
                Ok(())
            }
            payload @ (Payload::Record { .. } | Payload::Nothing) => {
                let why = format!(
                    "dead letter `{id}` ({}) holds no message to deliver: drop it instead",
                    entry.kind
                );
                self.dead.restore(vec![Entry { payload, ..entry }]);
                Err(why)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_the_bound_is_in_bytes() {
        let mut b = DeadLetterBox::new(2, 9, 300);
        let (first, full) = b.keep("bad_reply", "x".repeat(50), Payload::Nothing);
        assert_eq!(full, None);
        assert_eq!(&*first.id, "2-9-1");
        let (second, _) = b.keep("bad_reply", "y".repeat(50), Payload::Nothing);
        assert_eq!(&*second.id, "2-9-2");
        let (refused, full) = b.keep("bad_reply", "z".repeat(200), Payload::Nothing);
        assert_eq!(full.map(|f| f.max_bytes), Some(300));
        assert_eq!(&*refused.id, "2-9-3", "a refused one is still named, for the log");
        assert_eq!(b.entries().count(), 2);
        let before = b.bytes();
        assert_eq!(b.take("2-9-1"), Some(first));
        assert!(b.bytes() < before);
        assert_eq!(b.take("2-9-1"), None, "taken once");
    }
}
