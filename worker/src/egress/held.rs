//! Egress records between their epoch and their sink: held until the checkpoint of their epoch
//! completes ([`PendingEgress`], kept by the partition's epochs), then released to a sink and
//! kept as [`Unconfirmed`] until the sink has written them — both kinds are in every snapshot,
//! so a failure anywhere between produces them again after a restore, with the same keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::EgressRecord;

/// An egress record held until the checkpoint of its epoch completes.
#[derive(Debug, Clone)]
pub struct PendingEgress {
    pub epoch: u64,
    /// `{application}/{epoch}/{worker}/{sequence}`: the same after any number of restores, so a
    /// receiver can drop a re-send.
    pub key: Arc<str>,
    pub record: EgressRecord,
}

/// Released egress records that their sink has not written yet, by idempotency key. They stay
/// in every snapshot until written: a worker that dies between release and write has them
/// re-sent, with the same keys, after a restore from any later checkpoint too. Shared by the
/// partition (which adds on release) and the sinks (which confirm); outlives generations.
#[derive(Clone, Default)]
pub struct Unconfirmed(Arc<Mutex<HashMap<Arc<str>, PendingEgress>>>);

impl Unconfirmed {
    pub fn add(&self, released: &[PendingEgress]) {
        let mut map = self.0.lock().expect("unconfirmed egress lock");
        for p in released {
            map.insert(p.key.clone(), p.clone());
        }
    }

    /// The sink is done with these records (written, or dead letters).
    pub fn confirm(&self, records: &[EgressRecord]) {
        let mut map = self.0.lock().expect("unconfirmed egress lock");
        for r in records {
            if let Some(k) = &r.key {
                map.remove(k);
            }
        }
    }

    /// What a snapshot must hold, oldest epoch first.
    pub fn pending(&self) -> Vec<PendingEgress> {
        let mut v: Vec<PendingEgress> = self
            .0
            .lock()
            .expect("unconfirmed egress lock")
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| (a.epoch, &a.key).cmp(&(b.epoch, &b.key)));
        v
    }
}
