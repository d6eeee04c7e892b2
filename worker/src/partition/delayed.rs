//! Delayed messages (`send_after`), ordered by due time, cancellable by token.
//!
//! Tokens are scoped to the sending address, as in StateFun, where the delayed-message buffer
//! is keyed state of the sender: only the address that sent a message can cancel it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::memory::envelope_bytes;
use crate::message::{Address, Envelope};

type Key = (u64, u64); // (due time in epoch ms, sequence number for FIFO among equal times)
type Token = (Address, Arc<str>);

#[derive(Debug, Default, Clone)]
pub(crate) struct DelayedMessages {
    by_due: BTreeMap<Key, (Envelope, Option<Token>)>,
    by_token: HashMap<Token, Key>,
    seq: u64,
    /// What the pending messages cost (`spec.memory.delayedMessageBytes`).
    bytes: u64,
}

impl DelayedMessages {
    /// Schedules `env` at `due_ms`. A token already in use by the same sender moves to the new
    /// message; the older one is still delivered but can no longer be cancelled.
    pub fn schedule(&mut self, due_ms: u64, env: Envelope, token: Option<&str>) {
        self.seq += 1;
        let key = (due_ms, self.seq);
        let token = token.filter(|t| !t.is_empty()).map(|t| {
            let sender = env.caller.clone().unwrap_or_else(|| env.target.clone());
            (sender, Arc::<str>::from(t))
        });
        if let Some(token) = &token
            && let Some(old) = self.by_token.insert(token.clone(), key)
            && let Some(entry) = self.by_due.get_mut(&old)
        {
            entry.1 = None;
        }
        self.bytes += envelope_bytes(&env);
        self.by_due.insert(key, (env, token));
    }

    /// What the pending messages cost, in bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Cancels the message `sender` scheduled with `token`; false when there is none (already
    /// delivered, or never sent): cancellation is best effort, as in StateFun.
    pub fn cancel(&mut self, sender: &Address, token: &str) -> bool {
        let Some(key) = self.by_token.remove(&(sender.clone(), Arc::from(token))) else {
            return false;
        };
        let Some((env, _)) = self.by_due.remove(&key) else {
            return false;
        };
        self.bytes -= envelope_bytes(&env);
        true
    }

    pub fn next_due(&self) -> Option<u64> {
        self.by_due.keys().next().map(|k| k.0)
    }

    /// Removes and returns every message due at or before `now_ms`, in due order.
    pub fn take_due(&mut self, now_ms: u64) -> Vec<Envelope> {
        let later = self.by_due.split_off(&(now_ms.saturating_add(1), 0));
        let due = std::mem::replace(&mut self.by_due, later);
        due.into_values()
            .map(|(env, token)| {
                if let Some(token) = token {
                    self.by_token.remove(&token);
                }
                self.bytes -= envelope_bytes(&env);
                env
            })
            .collect()
    }

    /// Every pending message with its due time and live cancellation token, in due order.
    pub fn entries(&self) -> impl Iterator<Item = (u64, &Envelope, Option<&str>)> {
        self.by_due
            .iter()
            .map(|(k, (env, token))| (k.0, env, token.as_ref().map(|t| &*t.1)))
    }

    pub fn len(&self) -> usize {
        self.by_due.len()
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.by_due.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Value;
    use bytes::Bytes;
    use spindle_spec::TypeName;

    fn env(n: u8) -> Envelope {
        let a = Address::new(TypeName::parse("t/f").unwrap(), "a");
        Envelope {
            target: a.clone(),
            caller: Some(a),
            value: Value::new("t/v", Bytes::from(vec![n])),
            dedup: None,
            trace: None,
        }
    }

    #[test]
    fn delivers_in_due_order_and_cancels_by_token() {
        let mut d = DelayedMessages::default();
        d.schedule(200, env(2), Some("x"));
        d.schedule(100, env(1), None);
        d.schedule(200, env(3), None);
        assert_eq!(d.next_due(), Some(100));
        let sender = env(0).caller.unwrap();
        assert!(d.cancel(&sender, "x"));
        assert!(!d.cancel(&sender, "x"), "a token cancels once");
        assert_eq!(
            d.bytes(),
            2 * envelope_bytes(&env(1)),
            "the cancelled one gave its bytes back"
        );
        let due: Vec<u8> = d.take_due(200).into_iter().map(|e| e.value.bytes[0]).collect();
        assert_eq!(due, [1, 3]);
        assert!(d.is_empty());
        assert_eq!(d.bytes(), 0);
    }

    #[test]
    fn tokens_belong_to_their_sender() {
        let mut d = DelayedMessages::default();
        d.schedule(100, env(1), Some("x"));
        let other = Address::new(TypeName::parse("t/f").unwrap(), "b");
        assert!(!d.cancel(&other, "x"));
        assert_eq!(d.take_due(99).len(), 0);
        assert_eq!(d.take_due(100).len(), 1);
        assert!(!d.cancel(&env(0).caller.unwrap(), "x"), "delivered: nothing to cancel");
    }
}
