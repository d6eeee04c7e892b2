//! Egress records between their epoch and their sink: held until the checkpoint of their epoch
//! completes ([`PendingEgress`], kept by the partition's epochs), then released to a sink and
//! kept as [`Unconfirmed`] until the sink has written them — both kinds are in every snapshot,
//! so a failure anywhere between produces them again after a restore, with the same keys.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use spindle_spec::TypeName;

use super::EgressRecord;
use crate::deadletter::DeadEgress;

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
    /// Records sinks gave up on, on their way into the partition's dead letters (taken with
    /// the next snapshot, in the same step as `pending`, so a record is in exactly one).
    dead: Vec<SinkDead>,
}

/// Records a sink gave up on, and why.
#[derive(Debug, Clone)]
pub struct SinkDead {
    pub reason: String,
    pub records: Vec<DeadEgress>,
}

/// What a snapshot takes from the sinks' side.
pub struct HeldSnapshot {
    pub pending: Vec<PendingEgress>,
    pub marks: BTreeMap<TypeName, u64>,
    pub dead: Vec<SinkDead>,
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

    /// The sink cannot write these records (a timeout passed, a record it cannot encode):
    /// they leave `pending` and become dead letters in the same step.
    pub fn give_up(&self, records: &[EgressRecord], reason: String) {
        let mut held = self.0.lock().expect("unconfirmed egress lock");
        let dead: Vec<DeadEgress> = records
            .iter()
            .map(|r| {
                let epoch = r
                    .key
                    .as_ref()
                    .and_then(|k| held.pending.remove(k))
                    .map_or(0, |p| p.epoch);
                DeadEgress {
                    egress: r.egress.clone(),
                    key: r.key.clone().unwrap_or_else(|| "".into()),
                    epoch,
                    source: r.source.clone(),
                    value: r.value.clone(),
                }
            })
            .collect();
        held.dead.push(SinkDead { reason, records: dead });
    }

    /// Takes the dead letters of the sinks (the partition keeps them from then on).
    pub fn take_dead(&self) -> Vec<SinkDead> {
        std::mem::take(&mut self.0.lock().expect("unconfirmed egress lock").dead)
    }

    /// Forgets the sinks' dead letters not yet taken: a restore brings their records back as
    /// pending (they are retried).
    pub fn clear_dead(&self) {
        self.0.lock().expect("unconfirmed egress lock").dead.clear();
    }

    /// What a snapshot must hold: the records, oldest epoch first, the sinks' marks, and the
    /// sinks' dead letters (taken: the partition keeps them from now on) — in one step.
    pub fn snapshot(&self) -> HeldSnapshot {
        let mut held = self.0.lock().expect("unconfirmed egress lock");
        let mut pending: Vec<PendingEgress> = held.pending.values().cloned().collect();
        pending.sort_by(|a, b| (a.epoch, &a.key).cmp(&(b.epoch, &b.key)));
        HeldSnapshot {
            pending,
            marks: held.marks.clone(),
            dead: std::mem::take(&mut held.dead),
        }
    }
}
