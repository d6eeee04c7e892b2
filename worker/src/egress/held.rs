//! Egress records between their epoch and their sink: held until the checkpoint of their epoch
//! completes ([`PendingEgress`], kept by the partition's epochs), then released to a sink and
//! kept as [`Unconfirmed`] until the sink has written them — both kinds are in every snapshot,
//! so a failure anywhere between produces them again after a restore, with the same keys.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use spindle_spec::TypeName;

use super::EgressRecord;

/// An egress record held until the checkpoint of its epoch completes.
#[derive(Debug, Clone)]
pub struct PendingEgress {
    pub epoch: u64,
    /// `{application}/{generation}/{epoch}/{worker}/{sequence}`: the same after any number of restores, so a
    /// receiver can drop a re-send.
    pub key: Arc<str>,
    pub record: EgressRecord,
}

/// Released egress records that their sink has not written yet, by idempotency key, and for
/// each sink that has one its *mark*: a position in its output before which none of these
/// records can be (a file sink's length after its last confirmed write). They stay in every
/// snapshot until written: a worker that dies between release and write has them re-sent, with
/// the same keys, after a restore from any later checkpoint too — and a sink with a mark reads
/// its output past the mark to skip what it wrote already. Shared by the partition (which adds
/// on release and reads at snapshots) and the sinks (which confirm); outlives generations.
#[derive(Clone, Default)]
pub struct Unconfirmed(Arc<Mutex<Held>>);

#[derive(Default)]
struct Held {
    pending: HashMap<Arc<str>, PendingEgress>,
    marks: BTreeMap<TypeName, u64>,
}

impl Unconfirmed {
    pub fn add(&self, released: &[PendingEgress]) {
        let mut held = self.0.lock().expect("unconfirmed egress lock");
        for p in released {
            held.pending.insert(p.key.clone(), p.clone());
        }
    }

    /// True while a record with this key is released and not yet written by its sink (it is
    /// on its way in this process).
    pub fn contains(&self, key: &str) -> bool {
        self.0
            .lock()
            .expect("unconfirmed egress lock")
            .pending
            .contains_key(key)
    }

    /// The sink is done with these records (written, or dead letters).
    pub fn confirm(&self, records: &[EgressRecord]) {
        let mut held = self.0.lock().expect("unconfirmed egress lock");
        for r in records {
            if let Some(k) = &r.key {
                held.pending.remove(k);
            }
        }
    }

    /// As [`confirm`](Self::confirm), and `egress`'s mark moves to `mark` in the same step, so
    /// a snapshot sees both or neither.
    pub fn confirm_at(&self, records: &[EgressRecord], egress: &TypeName, mark: u64) {
        let mut held = self.0.lock().expect("unconfirmed egress lock");
        for r in records {
            if let Some(k) = &r.key {
                held.pending.remove(k);
            }
        }
        held.marks.insert(egress.clone(), mark);
    }

    /// What a snapshot must hold: the records, oldest epoch first, and the sinks' marks.
    pub fn snapshot(&self) -> (Vec<PendingEgress>, BTreeMap<TypeName, u64>) {
        let held = self.0.lock().expect("unconfirmed egress lock");
        let mut v: Vec<PendingEgress> = held.pending.values().cloned().collect();
        v.sort_by(|a, b| (a.epoch, &a.key).cmp(&(b.epoch, &b.key)));
        (v, held.marks.clone())
    }
}
