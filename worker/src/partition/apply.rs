//! A function's answer, applied: state first, then messages, delayed messages (or their
//! cancellation), egress records; and delayed messages that fall due.

use super::Partition;
use crate::clock::now_ms;
use crate::deadletter::{DeadEgress, Payload, kind};
use crate::egress::EgressRecord;
use crate::invoker::{Delayed, Effects};
use crate::message::Address;

impl Partition {
    pub(super) fn apply(&mut self, source: &Address, effects: Effects) {
        let now = now_ms();
        let specs = self.specs.specs(&source.typename);
        self.state.apply(source, effects.mutations, specs, now);
        for m in effects.messages {
            match m {
                Ok(env) => self.deliver(env, None, true),
                Err(reason) => self.bad_reply(source, reason),
            }
        }
        for d in effects.delayed {
            match d {
                Ok(Delayed::Cancel { token }) => {
                    if self.delayed.cancel(source, &token) {
                        self.metrics.delayed_cancelled.inc();
                    }
                }
                Ok(Delayed::Send { env, delay_ms, token }) => {
                    self.delayed.schedule(now.saturating_add(delay_ms), env, Some(&token));
                }
                Err(reason) => self.bad_reply(source, reason),
            }
        }
        self.metrics.delayed_pending.set(self.delayed.len() as i64);
        for e in effects.egress {
            let record = match e {
                Ok(e) => EgressRecord {
                    egress: e.egress,
                    value: e.value,
                    source: source.clone(),
                    key: None,
                },
                Err(reason) => {
                    self.bad_reply(source, reason);
                    continue;
                }
            };
            if !self.egress.has(&record.egress) {
                let reason = format!(
                    "{source} sent to egress `{}`, which the application does not declare",
                    record.egress
                );
                let dead = DeadEgress {
                    egress: record.egress,
                    key: "".into(),
                    epoch: 0,
                    source: record.source,
                    value: record.value,
                };
                self.dead(kind::UNKNOWN_EGRESS, reason, Payload::Egress(vec![dead]));
                continue;
            }
            match self.epochs.as_mut() {
                Some(epochs) => epochs.hold(record),
                None => {
                    let _ = self.egress.emit(record);
                }
            }
        }
    }

    fn bad_reply(&mut self, source: &Address, reason: String) {
        self.dead(
            kind::BAD_REPLY,
            format!("reply of {source}: {reason}"),
            Payload::Nothing,
        );
    }

    pub(super) fn fire_due(&mut self) {
        for env in self.delayed.take_due(now_ms()) {
            self.deliver(env, None, true);
        }
        self.metrics.delayed_pending.set(self.delayed.len() as i64);
    }
}
