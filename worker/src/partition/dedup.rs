//! Idempotency keys of ingress records, remembered per target address for a window: a caller
//! that retries a record with the same key after an unclear answer has it applied once. The
//! keys are part of the checkpoint, so a rollback forgets exactly the records it undoes.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::message::Address;

#[derive(Debug, Clone)]
pub(crate) struct SeenKeys {
    window_ms: u64,
    at: HashMap<(Address, Arc<str>), u64>,
    /// Insertion order, for expiry.
    order: VecDeque<(u64, Address, Arc<str>)>,
}

impl SeenKeys {
    pub fn new(window_ms: u64) -> SeenKeys {
        SeenKeys {
            window_ms,
            at: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Remembers `key` for `addr`; false when it was seen within the window.
    pub fn insert(&mut self, addr: &Address, key: &Arc<str>, now_ms: u64) -> bool {
        self.expire(now_ms);
        let k = (addr.clone(), key.clone());
        if self.at.contains_key(&k) {
            return false;
        }
        self.at.insert(k, now_ms);
        self.order.push_back((now_ms, addr.clone(), key.clone()));
        true
    }

    fn expire(&mut self, now_ms: u64) {
        while let Some((at, _, _)) = self.order.front()
            && at.saturating_add(self.window_ms) <= now_ms
        {
            let (at, addr, key) = self.order.pop_front().expect("checked");
            let k = (addr, key);
            if self.at.get(&k) == Some(&at) {
                self.at.remove(&k);
            }
        }
    }

    /// Every key with its address and time, oldest first.
    pub fn entries(&self) -> impl Iterator<Item = (&Address, &str, u64)> {
        self.order.iter().map(|(at, a, k)| (a, &**k, *at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spindle_spec::TypeName;

    #[test]
    fn a_key_counts_once_per_address_within_the_window() {
        let mut s = SeenKeys::new(100);
        let a = Address::new(TypeName::parse("t/f").unwrap(), "a");
        let b = Address::new(TypeName::parse("t/f").unwrap(), "b");
        let k: Arc<str> = "k".into();
        assert!(s.insert(&a, &k, 1_000));
        assert!(!s.insert(&a, &k, 1_050));
        assert!(s.insert(&b, &k, 1_050), "keys are scoped to the target");
        assert!(s.insert(&a, &k, 1_100), "forgotten after the window");
        assert_eq!(s.entries().count(), 2);
    }
}
