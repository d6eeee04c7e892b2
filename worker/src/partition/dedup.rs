//! Idempotency keys of ingress records, remembered per target address for a window: a caller
//! that retries a record with the same key after an unclear answer has it applied once. The
//! keys are part of the checkpoint, so a rollback forgets exactly the records it undoes.
//!
//! A key whose record waited for its reply also remembers the reply (the first the target's
//! owner saw pass), and the reply addresses of retries that came before it: a retry gets the
//! same reply the first request got, or would have got, and the function ran once.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::memory::key_bytes;
use crate::message::{Address, Value};

#[derive(Debug, Clone)]
pub(crate) struct SeenKeys {
    window_ms: u64,
    at: HashMap<(Address, Arc<str>), Seen>,
    /// Insertion order, for expiry.
    order: VecDeque<(u64, Address, Arc<str>)>,
    /// What the remembered keys cost (`spec.memory.idempotencyKeyBytes`).
    bytes: u64,
}

fn cost(addr: &Address, key: &str, seen: &Seen) -> u64 {
    key_bytes(addr, key, seen.reply.as_ref(), seen.waiting.len())
}

/// What is remembered of one key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Seen {
    pub at_ms: u64,
    /// The reply to the key's record, once one passed.
    pub reply: Option<Value>,
    /// Reply addresses of retries waiting for it.
    pub waiting: Vec<Address>,
}

impl SeenKeys {
    pub fn new(window_ms: u64) -> SeenKeys {
        SeenKeys {
            window_ms,
            at: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
        }
    }

    /// What the remembered keys cost, in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Remembers `key` for `addr`; false when it was seen within the window.
    pub fn insert(&mut self, addr: &Address, key: &Arc<str>, now_ms: u64) -> bool {
        self.restore(
            addr,
            key,
            Seen {
                at_ms: now_ms,
                ..Seen::default()
            },
        )
    }

    /// As [`insert`](Self::insert), with what a checkpoint remembered of the key.
    pub fn restore(&mut self, addr: &Address, key: &Arc<str>, seen: Seen) -> bool {
        self.expire(seen.at_ms);
        let k = (addr.clone(), key.clone());
        if self.at.contains_key(&k) {
            return false;
        }
        self.order.push_back((seen.at_ms, addr.clone(), key.clone()));
        self.bytes += cost(addr, key, &seen);
        self.at.insert(k, seen);
        true
    }

    /// A reply to the record `key` of `addr` passes: kept (the first one), and the retries
    /// that waited for it are returned — each gets it too.
    pub fn remember_reply(&mut self, addr: &Address, key: &Arc<str>, reply: &Value) -> Vec<Address> {
        let Some(seen) = self.at.get_mut(&(addr.clone(), key.clone())) else {
            // Forgotten: the window passed (a retry now would be a new record anyway).
            return Vec::new();
        };
        let before = cost(addr, key, seen);
        seen.reply.get_or_insert_with(|| reply.clone());
        let waiting = std::mem::take(&mut seen.waiting);
        self.bytes = self.bytes - before + cost(addr, key, seen);
        waiting
    }

    /// A retry of the record `key` of `addr` (seen already) wants its reply at `reply_to`: the
    /// reply if it passed already, otherwise `reply_to` waits for it.
    pub fn retry(&mut self, addr: &Address, key: &Arc<str>, reply_to: Address) -> Option<Value> {
        let seen = self.at.get_mut(&(addr.clone(), key.clone()))?;
        if let Some(reply) = &seen.reply {
            return Some(reply.clone());
        }
        if !seen.waiting.contains(&reply_to) {
            let before = cost(addr, key, seen);
            seen.waiting.push(reply_to);
            self.bytes = self.bytes - before + cost(addr, key, seen);
        }
        None
    }

    fn expire(&mut self, now_ms: u64) {
        while let Some((at, _, _)) = self.order.front()
            && at.saturating_add(self.window_ms) <= now_ms
        {
            let (at, addr, key) = self.order.pop_front().expect("checked");
            let k = (addr, key);
            if self.at.get(&k).map(|s| s.at_ms) == Some(at)
                && let Some(seen) = self.at.remove(&k)
            {
                self.bytes -= cost(&k.0, &k.1, &seen);
            }
        }
    }

    /// Every key with its address and what is remembered of it, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = (&Address, &str, &Seen)> {
        self.order.iter().filter_map(|(at, a, k)| {
            let seen = self.at.get(&(a.clone(), k.clone())).filter(|s| s.at_ms == *at)?;
            Some((a, &**k, seen))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use spindle_spec::TypeName;

    fn addr(id: &str) -> Address {
        Address::new(TypeName::parse("t/f").unwrap(), id)
    }

    #[test]
    fn a_key_counts_once_per_address_within_the_window() {
        let mut s = SeenKeys::new(100);
        let (a, b) = (addr("a"), addr("b"));
        let k: Arc<str> = "k".into();
        assert!(s.insert(&a, &k, 1_000));
        assert!(!s.insert(&a, &k, 1_050));
        assert!(s.insert(&b, &k, 1_050), "keys are scoped to the target");
        assert!(s.insert(&a, &k, 1_100), "forgotten after the window");
        assert_eq!(s.entries().count(), 2);
        assert_eq!(
            s.bytes(),
            2 * key_bytes(&a, "k", None, 0),
            "the expired key gave its bytes back"
        );
        s.insert(&b, &"k2".into(), 5_000);
        assert_eq!(s.bytes(), key_bytes(&b, "k2", None, 0));
    }

    #[test]
    fn retries_get_the_first_reply_whether_they_come_before_or_after_it() {
        let mut s = SeenKeys::new(100);
        let a = addr("a");
        let k: Arc<str> = "k".into();
        let (r1, r2) = (addr("reply-1"), addr("reply-2"));
        assert!(s.insert(&a, &k, 1_000));
        assert_eq!(s.retry(&a, &k, r1.clone()), None, "no reply yet: the retry waits");
        assert_eq!(s.retry(&a, &k, r1.clone()), None);
        let v1 = Value::new("t/V", Bytes::from_static(b"1"));
        assert_eq!(s.remember_reply(&a, &k, &v1), vec![r1], "waiting once each");
        let v2 = Value::new("t/V", Bytes::from_static(b"2"));
        assert_eq!(s.remember_reply(&a, &k, &v2), vec![]);
        assert_eq!(s.retry(&a, &k, r2), Some(v1.clone()), "the first reply is kept");
        let (_, _, seen) = s.entries().next().unwrap();
        assert_eq!(seen.reply, Some(v1.clone()));
        assert_eq!(s.remember_reply(&addr("other"), &k, &v2), vec![]);
        assert_eq!(s.bytes(), key_bytes(&a, "k", Some(&v1), 0), "the kept reply counts");
    }
}
