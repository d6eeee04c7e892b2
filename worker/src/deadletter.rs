//! Dead letters: what could not be delivered, kept with the reason — never dropped silently.
//!
//! - [`Entry`]: a dead letter as the partition keeps it, in its state and so in every
//!   checkpoint — a rollback neither loses nor repeats one — with everything needed to replay
//!   it (`/dead-letters`, `spindle dead-letters list|replay|drop`).
//! - [`DeadLetters`]: the log of them as they happen: counted, logged, appended (and synced) as
//!   a JSON line to `dead-letters.jsonl` in the data directory, the latest in memory. A log,
//!   not the record: a replay after a rollback may log one again; the checkpointed entries
//!   are the exactly-once list.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use serde::Serialize;
use spindle_spec::TypeName;

use crate::message::{Address, Envelope, Value};
use crate::metrics::{KindLabels, Metrics};

/// How many records `/dead-letters` shows.
const RECENT: usize = 1_000;

/// Kinds of dead letter (a fixed label set).
pub mod kind {
    /// The function failed the batch for good (non-retryable status, bad reply, timeout).
    pub const INVOCATION_FAILED: &str = "invocation_failed";
    /// A message addressed a type no function serves.
    pub const UNKNOWN_FUNCTION: &str = "unknown_function";
    /// A message addressed an egress the application does not declare.
    pub const UNKNOWN_EGRESS: &str = "unknown_egress";
    /// An egress could not write a record within its timeout.
    pub const EGRESS_FAILED: &str = "egress_failed";
    /// A function's reply was unusable (e.g. asks again for state it was given).
    pub const BAD_REPLY: &str = "bad_reply";
    /// A Kafka record or JetStream message that cannot become a message (no key, a value
    /// that does not decode); its source keeps flowing.
    pub const BAD_RECORD: &str = "bad_record";
    /// A message or reply larger than what may travel (between workers, from a function).
    pub const TOO_LARGE: &str = "too_large";
    /// A message in flight at `poisonAfterRollbacks` consecutive rollbacks (its invocation
    /// kills or hangs its worker, so each restore would re-invoke it for ever).
    pub const POISON: &str = "poison";
}

/// What a dead letter holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Messages for functions (a failed batch, an unknown target): a replay delivers them.
    Messages(Vec<Envelope>),
    /// Egress records a sink gave up on: a replay releases them again, with their keys.
    Egress(Vec<DeadEgress>),
    /// A record that never became a message (a Kafka record without a key, a malformed
    /// envelope): kept to be seen, not replayable.
    Record {
        target: String,
        typename: String,
        value: Bytes,
    },
    /// Nothing to keep but the reason (a reply entry that made no sense).
    Nothing,
}

/// An egress record, as a dead letter keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadEgress {
    pub egress: TypeName,
    pub key: Arc<str>,
    pub epoch: u64,
    pub source: Address,
    pub value: Value,
}

/// A dead letter as the partition keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Unique in the application: `{worker}-{generation}-{sequence}`.
    pub id: Arc<str>,
    pub at_ms: u64,
    pub kind: String,
    pub reason: String,
    pub payload: Payload,
}

impl Entry {
    /// The address whose worker keeps it (after a rescale too): the first message's target,
    /// or the function that emitted the first egress record.
    pub fn owner(&self) -> Option<&Address> {
        match &self.payload {
            Payload::Messages(m) => m.first().map(|e| &e.target),
            Payload::Egress(e) => e.first().map(|e| &e.source),
            _ => None,
        }
    }

    /// Bytes it takes, roughly: what the dead-letter bound counts.
    pub fn size(&self) -> usize {
        let payload: usize = match &self.payload {
            Payload::Messages(m) => m.iter().map(|e| 64 + e.value.bytes.len() + e.target.id.len()).sum(),
            Payload::Egress(e) => e.iter().map(|e| 96 + e.value.bytes.len() + e.key.len()).sum(),
            Payload::Record {
                target,
                typename,
                value,
            } => target.len() + typename.len() + value.len(),
            Payload::Nothing => 0,
        };
        64 + self.id.len() + self.kind.len() + self.reason.len() + payload
    }

    /// The entry as `/dead-letters` and the CLI show it.
    pub fn to_json(&self) -> serde_json::Value {
        let mut obj = serde_json::Map::new();
        obj.insert("id".into(), (*self.id).into());
        obj.insert("atMs".into(), self.at_ms.into());
        obj.insert("kind".into(), self.kind.clone().into());
        obj.insert("reason".into(), self.reason.clone().into());
        let (what, list): (&str, Vec<serde_json::Value>) = match &self.payload {
            Payload::Messages(m) => (
                "messages",
                m.iter()
                    .map(|e| {
                        let mut o = serde_json::Map::new();
                        o.insert("target".into(), e.target.to_string().into());
                        if let Some(c) = &e.caller {
                            o.insert("caller".into(), c.to_string().into());
                        }
                        o.insert("typename".into(), (*e.value.typename).into());
                        crate::json::insert_value(&mut o, &e.value);
                        o.into()
                    })
                    .collect(),
            ),
            Payload::Egress(e) => (
                "egress",
                e.iter()
                    .map(|e| {
                        let mut o = serde_json::Map::new();
                        o.insert("egress".into(), e.egress.as_str().into());
                        o.insert("key".into(), (*e.key).into());
                        o.insert("source".into(), e.source.to_string().into());
                        o.insert("typename".into(), (*e.value.typename).into());
                        crate::json::insert_value(&mut o, &e.value);
                        o.into()
                    })
                    .collect(),
            ),
            Payload::Record {
                target,
                typename,
                value,
            } => {
                let mut o = serde_json::Map::new();
                o.insert("target".into(), target.clone().into());
                o.insert("typename".into(), typename.clone().into());
                crate::json::insert_value(&mut o, &Value::new(typename.as_str(), value.clone()));
                ("record", vec![o.into()])
            }
            Payload::Nothing => ("messages", Vec::new()),
        };
        obj.insert(what.into(), list.into());
        obj.insert(
            "replayable".into(),
            matches!(self.payload, Payload::Messages(_) | Payload::Egress(_)).into(),
        );
        obj.into()
    }

    /// The messages as the log shows them.
    pub fn dead_messages(&self) -> Vec<DeadMessage> {
        match &self.payload {
            Payload::Messages(m) => m.iter().map(DeadMessage::from_envelope).collect(),
            Payload::Egress(e) => e
                .iter()
                .map(|e| DeadMessage {
                    target: e.egress.to_string(),
                    caller: Some(e.source.to_string()),
                    typename: e.value.typename.to_string(),
                    value_base64: base64::engine::general_purpose::STANDARD.encode(&e.value.bytes),
                })
                .collect(),
            Payload::Record {
                target,
                typename,
                value,
            } => vec![DeadMessage {
                target: target.clone(),
                caller: None,
                typename: typename.clone(),
                value_base64: base64::engine::general_purpose::STANDARD.encode(value),
            }],
            Payload::Nothing => Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadMessage {
    pub target: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub caller: Option<String>,
    pub typename: String,
    pub value_base64: String,
}

impl DeadMessage {
    pub fn from_envelope(e: &Envelope) -> DeadMessage {
        DeadMessage {
            target: e.target.to_string(),
            caller: e.caller.as_ref().map(ToString::to_string),
            typename: e.value.typename.to_string(),
            value_base64: base64::engine::general_purpose::STANDARD.encode(&e.value.bytes),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// The id of the checkpointed entry (`/dead-letters`), when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub at_ms: u64,
    pub kind: &'static str,
    pub reason: String,
    pub messages: Vec<DeadMessage>,
}

pub struct DeadLetters {
    file: Option<Mutex<File>>,
    recent: Mutex<VecDeque<DeadLetter>>,
    metrics: Arc<Metrics>,
}

impl DeadLetters {
    /// `dir`: where `dead-letters.jsonl` goes; `None` keeps them in memory (and the log) only.
    pub fn open(dir: Option<&Path>, metrics: Arc<Metrics>) -> std::io::Result<DeadLetters> {
        let file = match dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.join("dead-letters.jsonl"))?;
                Some(Mutex::new(f))
            }
            None => None,
        };
        Ok(DeadLetters {
            file,
            recent: Mutex::new(VecDeque::new()),
            metrics,
        })
    }

    pub fn record(&self, kind: &'static str, reason: String, messages: Vec<DeadMessage>) {
        self.log(None, kind, reason, messages);
    }

    /// Logs a dead letter the partition keeps as `entry` (its kind is one of [`kind`]'s).
    pub fn record_entry(&self, entry: &Entry, kind: &'static str) {
        self.log(
            Some(entry.id.to_string()),
            kind,
            entry.reason.clone(),
            entry.dead_messages(),
        );
    }

    fn log(&self, id: Option<String>, kind: &'static str, reason: String, messages: Vec<DeadMessage>) {
        tracing::error!(kind, id, messages = messages.len(), %reason, "dead letter");
        self.metrics.dead_letters.get_or_create(&KindLabels { kind }).inc();
        self.metrics.dead_letters_written.inc();
        let letter = DeadLetter {
            id,
            at_ms: crate::clock::now_ms(),
            kind,
            reason,
            messages,
        };
        if let Some(file) = &self.file {
            let mut line = serde_json::to_vec(&letter).expect("dead letters serialize");
            line.push(b'\n');
            // Dead letters are rare; a small blocking append keeps them ordered and durable.
            let mut f = file.lock().expect("dead-letter file lock");
            if let Err(e) = f.write_all(&line).and_then(|()| f.sync_data()) {
                tracing::error!(error = %e, "cannot append to dead-letters.jsonl; record kept in memory");
            }
        }
        let mut recent = self.recent.lock().expect("dead-letter list lock");
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(letter);
    }

    /// The latest records, oldest first.
    pub fn recent(&self) -> Vec<DeadLetter> {
        self.recent
            .lock()
            .expect("dead-letter list lock")
            .iter()
            .cloned()
            .collect()
    }
}
