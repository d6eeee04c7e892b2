//! A partition's capture: everything a worker must resume from, as of its snapshot for one
//! checkpoint. The partition takes one at each barrier (`epochs`); the checkpoint codec writes
//! it as a part and reads parts back into one (keeping what the reader owns), which the next
//! generation's partition resumes from.

use std::collections::BTreeMap;
use std::sync::Arc;

use spindle_spec::TypeName;

use crate::egress::PendingEgress;
use crate::inbox::Positions;
use crate::message::Envelope;
use crate::state::{SpecRegistry, StateStore};

use super::{DEDUP_WINDOW_MS, SeenKeys};

#[derive(Debug)]
pub(crate) struct Capture {
    pub checkpoint: u64,
    pub state: StateStore,
    pub specs: SpecRegistry,
    /// Not fully processed at the snapshot, per address in processing order: the batch in
    /// flight (re-invoked after a restore), then the mailbox.
    pub messages: Vec<Envelope>,
    /// Arrived on an input channel after the snapshot, before that channel's barrier
    /// (Chandy–Lamport channel state); processed after `messages`.
    pub recorded: Vec<Envelope>,
    /// Due time (epoch ms), message and cancellation token.
    pub delayed: Vec<(u64, Envelope, Option<Arc<str>>)>,
    /// Egress output not known to be written: held for its checkpoint, or released and not
    /// yet confirmed by its sink. Restored ones are released again, with the same keys.
    pub egress: Vec<PendingEgress>,
    /// Per egress whose sink can read its output back (a file): a position before which none
    /// of `egress`'s records can have been written (`egress::Unconfirmed`). Restored: the
    /// lowest of every part's.
    pub sink_marks: BTreeMap<TypeName, u64>,
    pub seen: SeenKeys,
    /// Dead letters kept, not yet replayed or dropped.
    pub dead_letters: Vec<crate::deadletter::Entry>,
    /// Source positions: the next offset or sequence to read per source.
    pub positions: Positions,
}

impl Default for Capture {
    fn default() -> Self {
        Capture {
            checkpoint: 0,
            state: StateStore::default(),
            specs: SpecRegistry::default(),
            messages: Vec::new(),
            recorded: Vec::new(),
            delayed: Vec::new(),
            egress: Vec::new(),
            sink_marks: BTreeMap::new(),
            seen: SeenKeys::new(DEDUP_WINDOW_MS),
            dead_letters: Vec::new(),
            positions: Positions::new(),
        }
    }
}
