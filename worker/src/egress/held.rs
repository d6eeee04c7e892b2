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
    /// Per egress, the mark of a restored checkpoint while records it released again are not
    /// yet confirmed: their earlier copies may lie anywhere after it, so no snapshot may hold
    /// a later mark until the sink has dealt with them (a sink's own mark only says where its
    /// *own* writes start).
    floors: BTreeMap<TypeName, Floor>,
}

struct Floor {
    mark: u64,
    /// The records released again, until confirmed or given up on.
    keys: std::collections::HashSet<Arc<str>>,
    /// Set by [`Unconfirmed::resume_from`]: the next [`Unconfirmed::add`] is the release of
    /// the restored records (the partition releases them in one step right after).
    armed: bool,
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
            if let Some(f) = held.floors.get_mut(&p.record.egress)
                && f.armed
            {
                f.keys.insert(p.key.clone());
            }
        }
        held.floors.retain(|_, f| {
            f.armed = false;
            !f.keys.is_empty()
        });
    }

    /// A restore is about to release `egress`'s records again, which may have been written
    /// anywhere after `mark` (the restored checkpoint's): until they are confirmed, snapshots
    /// hold no later mark for `egress`.
    pub fn resume_from(&self, egress: &TypeName, mark: u64) {
        let mut held = self.0.lock().expect("unconfirmed egress lock");
        let f = held.floors.entry(egress.clone()).or_insert_with(|| Floor {
            mark,
            keys: Default::default(),
            armed: true,
        });
        f.mark = f.mark.min(mark);
        f.armed = true;
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
        held.forget(records);
    }

    /// As [`confirm`](Self::confirm), and `egress`'s mark moves to `mark` in the same step, so
    /// a snapshot sees both or neither.
    pub fn confirm_at(&self, records: &[EgressRecord], egress: &TypeName, mark: u64) {
        let mut held = self.0.lock().expect("unconfirmed egress lock");
        held.forget(records);
        held.marks.insert(egress.clone(), mark);
    }

    /// The sink cannot write these records (a timeout passed, a record it cannot encode):
    /// they leave `pending` and become dead letters in the same step.
    pub fn give_up(&self, records: &[EgressRecord], reason: String) {
        let mut held = self.0.lock().expect("unconfirmed egress lock");
        held.unfloor(records);
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
        let mut marks = held.marks.clone();
        for (egress, f) in &held.floors {
            let m = marks.entry(egress.clone()).or_insert(f.mark);
            *m = (*m).min(f.mark);
        }
        HeldSnapshot {
            pending,
            marks,
            dead: std::mem::take(&mut held.dead),
        }
    }
}

impl Held {
    /// Written: out of `pending` and of any floor.
    fn forget(&mut self, records: &[EgressRecord]) {
        for r in records {
            if let Some(k) = &r.key {
                self.pending.remove(k);
            }
        }
        self.unfloor(records);
    }

    fn unfloor(&mut self, records: &[EgressRecord]) {
        if self.floors.is_empty() {
            return;
        }
        for r in records {
            if let (Some(k), Some(f)) = (&r.key, self.floors.get_mut(&r.egress)) {
                f.keys.remove(k);
            }
        }
        self.floors.retain(|_, f| f.armed || !f.keys.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Address, Value};

    fn pending(egress: &TypeName, key: &str) -> PendingEgress {
        PendingEgress {
            epoch: 1,
            key: key.into(),
            record: EgressRecord {
                egress: egress.clone(),
                value: Value::new("t/v", bytes::Bytes::new()),
                source: Address::new(TypeName::parse("f/g").unwrap(), "x"),
                key: Some(key.into()),
            },
        }
    }

    #[test]
    fn records_released_again_keep_the_restored_mark_until_confirmed() {
        let (out, other) = (TypeName::parse("e/out").unwrap(), TypeName::parse("e/other").unwrap());
        let u = Unconfirmed::default();
        // The sink starts and sets its own mark (its writes start there).
        u.confirm_at(&[], &out, 500);
        // A restore of a checkpoint with mark 100 releases a and b again.
        u.resume_from(&out, 100);
        let (a, b) = (pending(&out, "a"), pending(&out, "b"));
        u.add(&[a.clone(), b.clone(), pending(&other, "c")]);
        assert_eq!(u.snapshot().marks[&out], 100, "a and b may have copies after 100");
        // A record released later is not held to the floor.
        u.add(&[pending(&out, "d")]);
        u.confirm_at(std::slice::from_ref(&a.record), &out, 600);
        assert_eq!(u.snapshot().marks[&out], 100, "b still waits");
        u.give_up(std::slice::from_ref(&b.record), "gone".into());
        assert_eq!(u.snapshot().marks[&out], 600, "both dealt with: the sink's own mark");
        assert!(!u.snapshot().marks.contains_key(&other));
    }
}
