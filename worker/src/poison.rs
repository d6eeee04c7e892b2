//! Poison batches: messages whose invocation was in flight at each of `poisonAfterRollbacks`
//! consecutive rollbacks. Such a message is in every checkpoint and is re-invoked after every
//! rollback; if invoking it is what kills (or hangs) its worker, the application would loop
//! for ever. Once counted K times it is set aside as a dead letter instead, and everything
//! else carries on exactly once.
//!
//! The counts cannot live where the invocation runs: a `kill -9` erases that memory. So each
//! partition publishes the messages of its batches in flight for longer than a moment on a
//! [`Board`]; the coordinator's heartbeat reads it (the ping's answer carries it), and the
//! coordinator counts per message identity across rollbacks ([`Suspects`], pure). A message
//! reported in flight in the generation a rollback ends counts one more; a message not
//! reported then starts again from zero. At K, its identity goes to every worker with the
//! restore command, and the worker that restores (or receives) the message keeps it as a
//! dead letter instead of queueing it.
//!
//! The coordinator saves its counts (and the last reports) in checkpoint storage whenever they
//! change ([`Saved`]), and a restarted coordinator resumes from them: its own death counts as
//! a rollback of the generation it ran, with what was last reported in flight — so a poison
//! batch on worker 0 itself is found too.
//!
//! Identity ([`message_id`]) is a hash of what the message is (target, caller, value,
//! idempotency key), so the copy a checkpoint restores has the identity of the one in flight
//! before the rollback. Two messages alike in all of that are one identity.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::message::Envelope;

/// A message's identity across restores.
pub(crate) type MessageId = u64;

/// Most messages one worker reports in flight per heartbeat (the longest running first): a
/// poison batch is rarely among many slow ones, and the answer stays small.
pub(crate) const MAX_REPORTED: usize = 64;

/// FNV-1a (64 bit) over the message's fields, each length-prefixed so that no two different
/// messages share a byte stream. Stable across processes and releases (unlike std's hasher):
/// every worker of the application computes the same identity.
pub(crate) fn message_id(env: &Envelope) -> MessageId {
    let mut h = Fnv::default();
    h.field(env.target.typename.as_str().as_bytes());
    h.field(env.target.id.as_bytes());
    match &env.caller {
        Some(c) => {
            h.field(b"\x01");
            h.field(c.typename.as_str().as_bytes());
            h.field(c.id.as_bytes());
        }
        None => h.field(b""),
    }
    h.field(env.value.typename.as_bytes());
    h.field(&env.value.bytes);
    match &env.dedup {
        Some(k) => {
            h.field(b"\x01");
            h.field(k.as_bytes());
        }
        None => h.field(b""),
    }
    h.0
}

struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 ^= u64::from(x);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn field(&mut self, b: &[u8]) {
        self.bytes(&(b.len() as u64).to_le_bytes());
        self.bytes(b);
    }
}

/// A message of a batch in flight, as a worker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InFlight {
    pub id: MessageId,
    /// The batch's address (`namespace/type/id`), for the log and `/status`.
    pub target: String,
}

/// A worker's messages in flight, as of its partition's last look: written by the partition,
/// read by the heartbeat's answer. Outlives generations (the generation says whose it is).
#[derive(Debug, Default)]
pub(crate) struct Board {
    inner: Mutex<(u64, Vec<InFlight>)>,
}

impl Board {
    pub fn publish(&self, generation: u64, in_flight: Vec<InFlight>) {
        *self.inner.lock().expect("in-flight board lock") = (generation, in_flight);
    }

    /// The generation of the report and its messages.
    pub fn read(&self) -> (u64, Vec<InFlight>) {
        self.inner.lock().expect("in-flight board lock").clone()
    }
}

/// The dead letter's reason.
pub(crate) fn reason(after: u32) -> String {
    format!("in flight at {after} consecutive rollbacks")
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Count {
    rollbacks: u32,
    target: String,
}

/// One identity the coordinator counts, for `/status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Suspect {
    /// The message identity, in hex.
    pub id: String,
    pub target: String,
    /// Consecutive rollbacks it was in flight at.
    pub rollbacks: u32,
    /// The worker reporting it in flight in the running generation, if one does.
    pub in_flight_on: Option<u32>,
    /// Counted K times: set aside at the restore.
    pub poisoned: bool,
}

/// What the coordinator saves of its counts, as JSON in checkpoint storage.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Saved {
    pub generation: u64,
    /// (identity, rollbacks, address)
    pub counts: Vec<(MessageId, u32, String)>,
    pub poisoned: Vec<(MessageId, String)>,
    /// Per worker: its last report in `generation`.
    pub reports: Vec<(u32, Vec<(MessageId, String)>)>,
}

/// The coordinator's counts (pure: the core calls it).
#[derive(Debug)]
pub(crate) struct Suspects {
    /// Bumped by every change worth saving.
    version: u64,
    /// K; 0: never set anything aside.
    after: u32,
    /// The generation whose reports are taken.
    generation: u64,
    /// Per worker: its latest report in `generation`.
    reports: BTreeMap<u32, Vec<InFlight>>,
    counts: BTreeMap<MessageId, Count>,
    /// Counted K times, sent with every restore until a checkpoint completes in a generation
    /// restored with them (it holds them as dead letters then).
    poisoned: BTreeMap<MessageId, String>,
}

impl Suspects {
    pub fn new(after: u32) -> Suspects {
        Suspects {
            version: 0,
            after,
            generation: 0,
            reports: BTreeMap::new(),
            counts: BTreeMap::new(),
            poisoned: BTreeMap::new(),
        }
    }

    /// A worker's answer to a heartbeat: what it had in flight in `generation`.
    pub fn report(&mut self, worker: u32, generation: u64, in_flight: Vec<InFlight>) {
        if self.after == 0 || generation != self.generation || generation == 0 {
            return;
        }
        let ids = |r: &[InFlight]| r.iter().map(|m| m.id).collect::<Vec<_>>();
        let before = self.reports.get(&worker).map(|r| ids(r)).unwrap_or_default();
        if before != ids(&in_flight) {
            self.version += 1;
        }
        self.reports.insert(worker, in_flight);
    }

    /// Changes with everything worth saving.
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn saved(&self) -> Saved {
        let pairs = |r: &[InFlight]| r.iter().map(|m| (m.id, m.target.clone())).collect();
        Saved {
            generation: self.generation,
            counts: self
                .counts
                .iter()
                .map(|(id, c)| (*id, c.rollbacks, c.target.clone()))
                .collect(),
            poisoned: self.poisoned.iter().map(|(id, t)| (*id, t.clone())).collect(),
            reports: self.reports.iter().map(|(w, r)| (*w, pairs(r))).collect(),
        }
    }

    /// A restarted coordinator takes up the counts its predecessor saved: the predecessor's
    /// death ended the generation it ran, so what was last reported in flight in it counts as
    /// at a rollback. Answers the messages that reached K now.
    pub fn resume(&mut self, saved: Saved) -> Vec<(MessageId, String)> {
        if self.after == 0 {
            return Vec::new();
        }
        self.version += 1;
        self.generation = saved.generation;
        self.counts = saved
            .counts
            .into_iter()
            .map(|(id, rollbacks, target)| (id, Count { rollbacks, target }))
            .collect();
        self.poisoned.extend(saved.poisoned);
        self.reports = saved
            .reports
            .into_iter()
            .map(|(w, r)| (w, r.into_iter().map(|(id, target)| InFlight { id, target }).collect()))
            .collect();
        self.rollback(true)
    }

    /// A rollback ends the generation: every message reported in flight in it counts once
    /// more, every other count starts again. A generation that ended before any worker ran in
    /// it (`ran` false: it was still restoring, and nothing was reported) changes no count.
    /// Answers the messages that reached K now.
    pub fn rollback(&mut self, ran: bool) -> Vec<(MessageId, String)> {
        let reports = std::mem::take(&mut self.reports);
        if self.after == 0 || (!ran && reports.is_empty()) {
            return Vec::new();
        }
        self.version += 1;
        let mut counts = BTreeMap::new();
        for m in reports.into_values().flatten() {
            if self.poisoned.contains_key(&m.id) || counts.contains_key(&m.id) {
                continue;
            }
            let before = self.counts.get(&m.id).map_or(0, |c| c.rollbacks);
            counts.insert(
                m.id,
                Count {
                    rollbacks: before + 1,
                    target: m.target,
                },
            );
        }
        let mut now_poisoned = Vec::new();
        counts.retain(|id, c| {
            if c.rollbacks < self.after {
                return true;
            }
            self.poisoned.insert(*id, c.target.clone());
            now_poisoned.push((*id, c.target.clone()));
            false
        });
        self.counts = counts;
        now_poisoned
    }

    /// The next generation was chosen: its workers' reports count from now on.
    pub fn chosen(&mut self, generation: u64) {
        self.version += 1;
        self.generation = generation;
        self.reports.clear();
    }

    /// A checkpoint of `generation` completed: if that generation was restored with the
    /// poisoned messages, the checkpoint holds them as dead letters, and no later restore
    /// brings them back.
    pub fn completed(&mut self, generation: u64) {
        if generation == self.generation && !self.poisoned.is_empty() {
            self.version += 1;
            self.poisoned.clear();
        }
    }

    /// What every restore sets aside.
    pub fn poisoned(&self) -> Vec<MessageId> {
        self.poisoned.keys().copied().collect()
    }

    pub fn status(&self) -> Vec<Suspect> {
        let on = |id: MessageId| {
            self.reports
                .iter()
                .find(|(_, r)| r.iter().any(|m| m.id == id))
                .map(|(w, _)| *w)
        };
        let mut out: Vec<Suspect> = self
            .counts
            .iter()
            .map(|(id, c)| Suspect {
                id: format!("{id:016x}"),
                target: c.target.clone(),
                rollbacks: c.rollbacks,
                in_flight_on: on(*id),
                poisoned: false,
            })
            .collect();
        out.extend(self.poisoned.iter().map(|(id, target)| Suspect {
            id: format!("{id:016x}"),
            target: target.clone(),
            rollbacks: self.after,
            in_flight_on: on(*id),
            poisoned: true,
        }));
        // In flight now but never counted yet: the next rollback would count them.
        for (w, r) in &self.reports {
            for m in r {
                if !self.counts.contains_key(&m.id) && !self.poisoned.contains_key(&m.id) {
                    out.push(Suspect {
                        id: format!("{:016x}", m.id),
                        target: m.target.clone(),
                        rollbacks: 0,
                        in_flight_on: Some(*w),
                        poisoned: false,
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use spindle_spec::TypeName;

    use super::*;
    use crate::message::{Address, Value};

    fn env(id: &str, value: &str, dedup: Option<&str>) -> Envelope {
        Envelope {
            target: Address::new(TypeName::parse("ns/f").unwrap(), id),
            caller: None,
            value: Value::new("t", Bytes::copy_from_slice(value.as_bytes())),
            dedup: dedup.map(Into::into),
            trace: None,
        }
    }

    fn m(id: MessageId) -> InFlight {
        InFlight {
            id,
            target: format!("ns/f/{id}"),
        }
    }

    #[test]
    fn identity_is_what_the_message_is() {
        let a = env("a", "x", None);
        assert_eq!(
            message_id(&a),
            message_id(&a.clone()),
            "a restored copy is the same message"
        );
        assert_ne!(message_id(&a), message_id(&env("b", "x", None)));
        assert_ne!(message_id(&a), message_id(&env("a", "y", None)));
        assert_ne!(message_id(&a), message_id(&env("a", "x", Some("k"))));
        // Fields are length-prefixed: moving a byte from one field to the next changes it.
        assert_ne!(message_id(&env("ab", "", None)), message_id(&env("a", "b", None)));
        let mut called = a.clone();
        called.caller = Some(Address::new(TypeName::parse("ns/g").unwrap(), "c"));
        assert_ne!(message_id(&a), message_id(&called));
        // Pinned: every worker (and every release) must compute the same identity.
        assert_eq!(message_id(&a), message_id(&env("a", "x", None)));
    }

    #[test]
    fn k_consecutive_rollbacks_set_a_message_aside() {
        let mut s = Suspects::new(3);
        for generation in 1..=3 {
            s.chosen(generation);
            assert!(s.poisoned().is_empty(), "generation {generation}");
            s.report(1, generation, vec![m(7), m(8)]);
            // Message 8 finishes before the rollback: the later report does not hold it.
            s.report(1, generation, vec![m(7)]);
            let now = s.rollback(true);
            if generation < 3 {
                assert_eq!(now, vec![]);
            } else {
                assert_eq!(now, vec![(7, "ns/f/7".to_string())]);
            }
        }
        s.chosen(4);
        assert_eq!(s.poisoned(), vec![7], "sent with the restore");
        assert!(s.status()[0].poisoned);
        // Another rollback before a checkpoint completes: still sent.
        assert_eq!(s.rollback(true), vec![]);
        s.chosen(5);
        assert_eq!(s.poisoned(), vec![7]);
        s.completed(4);
        assert_eq!(
            s.poisoned(),
            vec![7],
            "a checkpoint of an older generation proves nothing"
        );
        s.completed(5);
        assert!(s.poisoned().is_empty(), "the checkpoint holds the dead letter");
    }

    #[test]
    fn counts_are_consecutive_and_per_generation() {
        let mut s = Suspects::new(2);
        s.chosen(1);
        s.report(0, 1, vec![m(1)]);
        assert_eq!(s.rollback(true), vec![]);
        s.chosen(2);
        // A report of the generation that ended is stale.
        s.report(0, 1, vec![m(1)]);
        s.report(0, 2, vec![m(2)]);
        assert_eq!(s.rollback(true), vec![], "1 was not in flight: its count starts over");
        s.chosen(3);
        s.report(2, 3, vec![m(1)]);
        assert_eq!(s.rollback(true), vec![], "1 counts 1 again, not 2");
        assert_eq!(s.status()[0].rollbacks, 1);
        // A rollback while restoring (nothing ran, nothing reported) keeps the counts.
        s.chosen(4);
        assert_eq!(s.rollback(false), vec![]);
        s.chosen(5);
        s.report(1, 5, vec![m(1)]);
        assert_eq!(s.status()[0].in_flight_on, Some(1));
        assert_eq!(s.rollback(true), vec![(1, "ns/f/1".into())]);
        // A running generation with nothing in flight resets every count.
        let mut s = Suspects::new(2);
        s.chosen(1);
        s.report(0, 1, vec![m(1)]);
        s.rollback(true);
        s.chosen(2);
        s.rollback(true);
        assert!(s.status().is_empty());
    }

    #[test]
    fn a_restarted_coordinator_goes_on_counting_from_what_was_saved() {
        let mut s = Suspects::new(3);
        s.chosen(1);
        s.report(0, 1, vec![m(5)]);
        s.rollback(true);
        s.chosen(2);
        let v = s.version();
        s.report(0, 2, vec![m(5)]);
        assert!(s.version() > v, "a new report is worth saving");
        let v = s.version();
        s.report(0, 2, vec![m(5)]);
        assert_eq!(s.version(), v, "the same report again is not");
        // The coordinator (worker 0, which ran message 5) dies here.
        let saved: Saved = serde_json::from_str(&serde_json::to_string(&s.saved()).unwrap()).unwrap();
        let mut next = Suspects::new(3);
        assert_eq!(next.resume(saved), vec![], "its death is the second rollback");
        next.chosen(7);
        next.report(0, 7, vec![m(5)]);
        assert_eq!(next.rollback(true), vec![(5, "ns/f/5".into())], "the third");
    }

    #[test]
    fn zero_turns_it_off() {
        let mut s = Suspects::new(0);
        for g in 1..10 {
            s.chosen(g);
            s.report(1, g, vec![m(1)]);
            assert_eq!(s.rollback(true), vec![]);
        }
        assert!(s.poisoned().is_empty());
    }

    #[test]
    fn the_reason_names_k() {
        assert_eq!(reason(3), "in flight at 3 consecutive rollbacks");
    }
}
