//! A partition's capture: everything a worker must resume from, as of its snapshot for one
//! checkpoint. The partition takes one at each barrier (`epochs`); the checkpoint codec writes
//! it as a part and reads parts back into one (keeping what the reader owns), which the next
//! generation's partition resumes from.
//!
//! State goes one of two ways: a snapshot holds what *changed* since the previous snapshot
//! (`changes`: per key group the changed addresses, or a whole group the uploader asked for,
//! see [`Compaction`]); a restore yields the whole state this worker owns (`state`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use spindle_spec::TypeName;

use crate::egress::PendingEgress;
use crate::inbox::Positions;
use crate::message::Envelope;
use crate::state::{SpecRegistry, StateChanges, StateStore};

use super::{DEDUP_WINDOW_MS, SeenKeys};

/// The key groups the partition captures whole at its next snapshot: set by the uploader
/// after each part (compaction), taken by the partition at the snapshot. A lock rather than a
/// channel because only the latest plan matters and the partition takes it once.
pub(crate) type Compaction = Arc<Mutex<Vec<u32>>>;

#[derive(Debug)]
pub(crate) struct Capture {
    pub checkpoint: u64,
    /// Restored: the state of every address this worker owns. Empty in a snapshot.
    pub state: StateStore,
    /// Snapshot: what changed since the previous snapshot.
    pub changes: StateChanges,
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

impl Capture {
    /// An empty capture of an application with `key_groups` key groups.
    pub fn new(key_groups: u32) -> Capture {
        Capture {
            checkpoint: 0,
            state: StateStore::new(key_groups),
            changes: StateChanges::default(),
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
