//! Invocation batches: at most one batch per address in flight, at most `maxInFlight` per
//! function entry (addresses waiting for a slot in FIFO order), a batch of up to
//! `maxBatchSize` messages in arrival order; completions apply the effects and reschedule the
//! address when more arrived meanwhile.

use std::time::Instant;

use super::mailbox::{Batch, Pending};
use super::{Completion, Partition};
use crate::clock::now_ms;
use crate::deadletter::{Payload, kind};
use crate::invoker::{Call, Outcome};
use crate::message::Address;
use crate::metrics::{FunctionLabels, OutcomeLabels, outcome};

/// Most `IncompleteInvocationContext` answers for one batch: the first declares the specs;
/// more means the function keeps asking for what it was given.
const MAX_INCOMPLETE_ROUNDS: u32 = 3;

impl Partition {
    /// Starts a batch for `addr` now, or queues it behind the others waiting for a slot.
    pub(super) fn schedule(&mut self, addr: Address, function: usize) {
        let max = self.app.functions[function].max_in_flight;
        let slots = &mut self.slots[function];
        if slots.in_flight < max && slots.waiting.is_empty() {
            self.start(addr, function);
        } else {
            slots.waiting.push_back(addr);
        }
    }

    fn fill_slots(&mut self, function: usize) {
        let max = self.app.functions[function].max_in_flight;
        while self.slots[function].in_flight < max {
            let Some(addr) = self.slots[function].waiting.pop_front() else {
                break;
            };
            self.start(addr, function);
        }
    }

    fn start(&mut self, target: Address, function: usize) {
        let max_batch = self.app.functions[function].max_batch_size;
        let mailbox = self
            .mailboxes
            .get_mut(&target)
            .expect("a scheduled address has a mailbox");
        let n = mailbox.queue.len().min(max_batch);
        let messages: Vec<Pending> = mailbox.queue.drain(..n).collect();
        self.metrics.messages_queued.dec_by(n as i64);
        self.launch(Batch {
            target,
            function,
            messages,
            incomplete_rounds: 0,
            since: Instant::now(),
            ids: None,
            span: None,
        });
    }

    fn launch(&mut self, mut batch: Batch) {
        batch.span = self.invocation_span(&batch);
        let specs = self.specs.specs(&batch.target.typename);
        let call = Call {
            function: batch.function,
            target: batch.target.clone(),
            state: self.state.values_for_invocation(&batch.target, specs, now_ms()),
            messages: batch
                .messages
                .iter()
                .map(|p| (p.env.caller.clone(), p.env.value.clone()))
                .collect(),
        };
        self.slots[batch.function].in_flight += 1;
        self.metrics.batches_in_flight.inc();
        self.metrics.messages_in_flight.inc_by(batch.messages.len() as i64);
        let target = batch.target.clone();
        self.in_flight.insert(target.clone(), batch);
        let invocation = self.invoker.invoke(call);
        self.invocations.spawn(async move {
            let started = Instant::now();
            let result = invocation.await;
            Completion {
                target,
                result,
                elapsed: started.elapsed(),
            }
        });
    }

    pub(super) fn on_completion(&mut self, c: Completion) {
        let Completion {
            target,
            result,
            elapsed,
        } = c;
        let Some(mut batch) = self.in_flight.remove(&target) else {
            tracing::error!(%target, "an invocation completed for an address with no batch in flight");
            return;
        };
        self.metrics.messages_in_flight.dec_by(batch.messages.len() as i64);
        let mut result = result;
        if let Some(mut span) = batch.span.take() {
            match &mut result {
                Ok(Outcome::Effects(effects)) => {
                    // What the function sends continues its trace.
                    let ctx = Some(span.ctx);
                    for env in effects.messages.iter_mut().flatten() {
                        env.trace = ctx;
                    }
                    for d in effects.delayed.iter_mut().flatten() {
                        if let crate::invoker::Delayed::Send { env, .. } = d {
                            env.trace = ctx;
                        }
                    }
                    span.str("spindle.outcome", outcome::OK)
                        .int("spindle.messages.sent", effects.messages.len() as i64)
                        .int("spindle.egress.records", effects.egress.len() as i64);
                }
                Ok(Outcome::Incomplete(_)) => {
                    span.str("spindle.outcome", outcome::INCOMPLETE);
                }
                Err(failure) => {
                    span.str("spindle.outcome", outcome::FAILED);
                    span.error = Some(format!("{}: {}", failure.kind, failure.reason));
                }
            }
            self.tracer.end(span);
        }
        let function = batch.function;
        let label = self.metrics.function_label(batch.target.typename.as_str());
        self.metrics
            .invocation_seconds
            .get_or_create(&FunctionLabels {
                function: label.clone(),
            })
            .observe(elapsed.as_secs_f64());
        let count = |outcome| OutcomeLabels {
            function: label.clone(),
            outcome,
        };
        match result {
            Ok(Outcome::Effects(effects)) => {
                self.metrics.invocations.get_or_create(&count(outcome::OK)).inc();
                self.metrics
                    .invocation_messages
                    .get_or_create(&FunctionLabels {
                        function: label.clone(),
                    })
                    .inc_by(batch.messages.len() as u64);
                self.metrics.messages_invoked.inc_by(batch.messages.len() as u64);
                self.apply(&batch.target, effects);
            }
            Ok(Outcome::Incomplete(missing)) => {
                self.metrics
                    .invocations
                    .get_or_create(&count(outcome::INCOMPLETE))
                    .inc();
                let names: Vec<String> = missing.iter().map(|s| s.name.to_string()).collect();
                // Several batches of one type may ask at once; the first registers, the others
                // just re-send. Only a function that keeps asking hits the round limit.
                self.specs.register(&batch.target.typename, missing);
                batch.incomplete_rounds += 1;
                if batch.incomplete_rounds < MAX_INCOMPLETE_ROUNDS {
                    tracing::debug!(target = %batch.target, specs = names.len(), "registered state specs; re-sending the batch");
                    // Launch before releasing the slot, so that gauges never read idle between.
                    self.launch(batch);
                    self.release_slot(function);
                    return;
                }
                let reason = format!(
                    "function `{}` asked again for state {names:?} that it was already given",
                    batch.target.typename
                );
                self.metrics.invocations.get_or_create(&count(outcome::FAILED)).inc();
                self.dead_letter_batch(&batch, kind::BAD_REPLY, reason);
            }
            Err(failure) => {
                self.metrics.invocations.get_or_create(&count(outcome::FAILED)).inc();
                let reason = format!(
                    "invoking {} failed ({}, {} attempts): {}",
                    batch.target, failure.kind, failure.attempts, failure.reason
                );
                self.dead_letter_batch(&batch, kind::INVOCATION_FAILED, reason);
            }
        }
        self.finish(batch);
        self.release_slot(function);
    }

    /// The span of one invocation (one call to the function): the child of the first traced
    /// message's span, linked to the other traced messages' spans (a batch can hold messages
    /// of several traces). `None` when tracing is off or no message is traced.
    fn invocation_span(&self, batch: &Batch) -> Option<crate::trace::Span> {
        if !self.tracer.is_on() {
            return None;
        }
        let mut traced = batch.messages.iter().filter_map(|p| p.env.trace);
        let parent = traced.next()?;
        let mut span = self
            .tracer
            .start_span("spindle.invoke", crate::trace::Kind::Client, Some(parent))?;
        span.links = traced.filter(|t| *t != parent).collect();
        span.links.dedup();
        span.str("statefun.function.type", batch.target.typename.as_str())
            .str("statefun.function.id", batch.target.id.as_ref())
            .int("spindle.batch.size", batch.messages.len() as i64)
            .int("spindle.worker", self.outbound.me() as i64);
        if batch.incomplete_rounds > 0 {
            span.int("spindle.batch.incomplete_rounds", batch.incomplete_rounds as i64);
        }
        Some(span)
    }

    fn dead_letter_batch(&mut self, batch: &Batch, kind: &'static str, reason: String) {
        let messages = batch.messages.iter().map(|p| p.env.clone()).collect();
        self.dead(kind, reason, Payload::Messages(messages));
    }

    /// The batch is done: its messages (and their ingress admissions) are released and the
    /// address is rescheduled if more arrived meanwhile.
    fn finish(&mut self, batch: Batch) {
        let Batch {
            target,
            function,
            messages,
            ..
        } = batch;
        drop(messages);
        let more = self.mailboxes.get(&target).is_some_and(|m| !m.queue.is_empty());
        if more {
            self.schedule(target, function);
        } else {
            self.mailboxes.remove(&target);
        }
    }

    /// Shows the batches in flight for at least `SHOW_IN_FLIGHT_EVERY` (oldest first, at most
    /// `poison::MAX_REPORTED` messages) to the coordinator's heartbeat: it counts them across
    /// rollbacks to find poison batches.
    pub(super) fn show_in_flight(&mut self) {
        let now = Instant::now();
        let mut long: Vec<&mut Batch> = self
            .in_flight
            .values_mut()
            .filter(|b| now.duration_since(b.since) >= super::SHOW_IN_FLIGHT_EVERY)
            .collect();
        long.sort_by_key(|b| b.since);
        let mut shown = Vec::new();
        for b in long {
            if shown.len() >= crate::poison::MAX_REPORTED {
                break;
            }
            let ids = b
                .ids
                .get_or_insert_with(|| b.messages.iter().map(|p| crate::poison::message_id(&p.env)).collect());
            let target = b.target.to_string();
            for id in ids.iter() {
                shown.push(crate::poison::InFlight {
                    id: *id,
                    target: target.clone(),
                });
            }
        }
        shown.truncate(crate::poison::MAX_REPORTED);
        self.in_flight_board.publish(self.generation, shown);
    }

    fn release_slot(&mut self, function: usize) {
        self.slots[function].in_flight -= 1;
        self.fill_slots(function);
        self.metrics.batches_in_flight.dec();
    }
}
