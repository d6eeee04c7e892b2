//! Dead letters: what could not be delivered, kept with the reason — never dropped silently.
//! Each record is appended as a JSON line to `dead-letters.jsonl` in the data directory (when
//! there is one), counted, logged, and the latest are kept in memory for `/dead-letters`.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine;
use serde::Serialize;

use crate::message::Envelope;
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
        tracing::error!(kind, messages = messages.len(), %reason, "dead letter");
        self.metrics.dead_letters.get_or_create(&KindLabels { kind }).inc();
        let letter = DeadLetter {
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
            if let Err(e) = f.write_all(&line) {
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
