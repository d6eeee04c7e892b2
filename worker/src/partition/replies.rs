//! Replies to waiting HTTP requests, inside the partition. A message to a reply address
//! (`crate::reply`) is not a function call: it goes, first, to the worker owning the target of
//! the request's message when the request has an idempotency key — which remembers the reply
//! with the key (`SeenKeys`) and sends it to retries that wait for it — and then to the worker
//! holding the request, which holds it like an egress record until the checkpoint of its epoch
//! completes and then hands it to the request (`reply::Replies`). Held replies are in every
//! snapshot (as egress records of the reserved typename), so a rollback neither loses nor
//! repeats one; a rollback to before a reply's epoch produces it again by replay.

use super::Partition;
use crate::deadletter::{Payload, kind};
use crate::egress::{EgressRecord, PendingEgress};
use crate::inbox::Admission;
use crate::message::Envelope;
use crate::reply::ReplyTo;

impl Partition {
    /// Routes a message whose target is in the reply namespace.
    pub(super) fn route_reply(&mut self, env: Envelope, admission: Option<Admission>) {
        let reply = match ReplyTo::parse(&env.target).expect("called for the reply namespace only") {
            Ok(r) => r,
            Err(malformed) => {
                self.dead(
                    kind::UNKNOWN_FUNCTION,
                    malformed.to_string(),
                    Payload::Messages(vec![env]),
                );
                return;
            }
        };
        let me = self.outbound.me();
        if let Some((target, key)) = &reply.memo {
            let owner = self.outbound.owner(target);
            if owner != me {
                self.outbound.forward(owner, env, admission);
                return;
            }
            for waiting in self.seen.remember_reply(target, key, &env.value) {
                let copy = Envelope {
                    target: waiting,
                    caller: env.caller.clone(),
                    value: env.value.clone(),
                    dedup: None,
                    trace: None,
                };
                self.route_reply(copy, None);
            }
            let plain = Envelope {
                target: reply.plain().address(),
                ..env
            };
            self.route_reply(plain, admission);
            return;
        }
        if reply.worker >= self.outbound.workers() {
            // The application was rescaled since the request was made: its worker restarted,
            // and the request died with it.
            tracing::debug!(reply_to = %env.target, "dropped a reply to a worker that no longer exists");
            return;
        }
        if reply.worker != me {
            self.outbound.forward(reply.worker, env, admission);
            return;
        }
        match self.epochs.as_mut() {
            Some(epochs) => epochs.hold(EgressRecord {
                egress: env.target.typename.clone(),
                value: env.value,
                source: env.target,
                key: None,
            }),
            // Without checkpoints nothing becomes durable: the reply goes out at once.
            None => {
                self.replies.complete(&reply.request, env.value, 0);
            }
        }
    }

    /// A message for the record `key` of `env.target` came again (a retry): when it waits for
    /// its reply, it gets the one remembered, or waits for it.
    pub(super) fn answer_retry(&mut self, env: &Envelope, key: &std::sync::Arc<str>) {
        let Some(Ok(reply_to)) = env.caller.as_ref().and_then(ReplyTo::parse) else {
            return;
        };
        let plain = reply_to.plain().address();
        if let Some(value) = self.seen.retry(&env.target, key, plain.clone()) {
            let reply = Envelope {
                target: plain,
                caller: Some(env.target.clone()),
                value,
                dedup: None,
                trace: None,
            };
            self.route_reply(reply, None);
        }
    }

    /// Released records that are replies go to their waiting requests (checkpoint `n` made
    /// them durable); the others are returned, for their sinks.
    pub(super) fn release_replies(&mut self, released: Vec<PendingEgress>, n: u64) -> Vec<PendingEgress> {
        let (replies, egress): (Vec<_>, Vec<_>) =
            released.into_iter().partition(|p| ReplyTo::is_reply(&p.record.source));
        for p in replies {
            // Counted as pending egress while held.
            self.metrics.egress_pending.dec();
            if let Some(Ok(to)) = ReplyTo::parse(&p.record.source) {
                let answered = self.replies.complete(&to.request, p.record.value, n);
                tracing::trace!(request = %to.request, answered, "reply released");
            }
        }
        egress
    }
}
