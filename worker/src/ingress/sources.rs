//! What the readers of sources — ingresses that read from a log with positions (Kafka
//! partitions, a JetStream stream) — share: a [`SourceContext`]. Readers belong to a
//! generation: `ingress::start_sources` runs when the generation starts, with the positions it
//! restored, and the readers stop with it — a rollback rewinds them by starting new readers
//! from the checkpoint's positions.
//!
//! A reader hands records to its partition's inbox (`Inbox::source`) together with the
//! position they bring the source to, so the partition's snapshot holds exactly the positions
//! of the records it has taken in (see docs/connectors.md).

use std::sync::Arc;
use std::time::Duration;

use super::route::{Refusal, Route, dead_message};
use crate::app::AppConfig;
use crate::deadletter::Payload;
use crate::inbox::{Admission, Inbox, IngressAdmission, Refused};
use crate::message::Envelope;
use crate::metrics::Metrics;
use crate::stop::CancellationToken;

/// What every reader of a generation needs.
#[derive(Clone)]
pub struct SourceContext {
    pub app: Arc<AppConfig>,
    pub metrics: Arc<Metrics>,
    /// The ingresses' admission (`maxBufferedMessages`, `spec.memory`), shared with the HTTP
    /// ingress.
    pub admission: IngressAdmission,
    pub inbox: Inbox,
    /// This worker's index and the worker count: who reads which partition.
    pub me: u32,
    pub workers: u32,
    /// The generation's end.
    pub stop: CancellationToken,
}

/// Most messages handed over at once (and admission permits asked for at once).
const CHUNK: usize = 256;

impl SourceContext {
    /// True once the generation stops.
    pub fn stopped(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Waits `d`, or less if the generation stops; false if it stopped.
    pub async fn pause(&self, d: Duration) -> bool {
        crate::stop::pause(&self.stop, d).await
    }

    /// Hands the messages of `records` (what each record became, and the position after it)
    /// over in chunks, each taking its admission permits first (back-pressure), then tells the
    /// partition the source is at `next`. A record's messages always travel in one chunk, so
    /// a snapshot never holds half a record; a refused record's dead letter travels in the
    /// chunk whose position passes it. False once the generation stops.
    pub(crate) async fn deliver(&self, source: &Arc<str>, records: Vec<(Taken, i64)>, next: i64) -> bool {
        let cap = CHUNK.min(self.app.max_buffered_messages).max(1);
        let mut rest = records.into_iter().peekable();
        loop {
            let mut chunk = Vec::new();
            let mut refused = Vec::new();
            let mut at = next;
            let mut taken_records = 0;
            while let Some((taken, _)) = rest.peek() {
                let n = match taken {
                    Taken::Messages(envs) => envs.len(),
                    Taken::Refused(_) => 0,
                };
                if !chunk.is_empty() && chunk.len() + n > cap {
                    break;
                }
                let (taken, after) = rest.next().expect("peeked");
                taken_records += 1;
                match taken {
                    Taken::Messages(envs) => chunk.extend(envs),
                    Taken::Refused(r) => refused.push(r),
                }
                at = after;
            }
            if rest.peek().is_none() {
                at = next;
            }
            let Some(records) = self.admit(chunk).await else {
                return false;
            };
            let n = records.len() as u64;
            if self.inbox.source(source.clone(), at, records, refused).is_err() {
                return false;
            }
            self.metrics.ingress_accepted.inc_by(n);
            // The reader counted these as lag until the partition has them.
            self.metrics.take_from_lag(source, taken_records);
            if rest.peek().is_none() {
                return true;
            }
        }
    }

    async fn admit(&self, chunk: Vec<Envelope>) -> Option<Vec<(Envelope, Option<Admission>)>> {
        if chunk.is_empty() {
            return Some(Vec::new());
        }
        let sem = self.admission.slots.clone();
        // While a queue is at its memory bound the reader waits here: it fetches nothing more
        // until the queue drains (what it read already is admitted after the wait).
        if let Some(full) = self.admission.full() {
            tracing::debug!(%full, "source paused: memory bound reached");
            self.metrics.ingress_paused.inc();
            tokio::select! {
                _ = self.admission.room() => {}
                _ = self.stop.cancelled() => return None,
            }
        }
        // Never more than the whole budget (a record with more targets than that still goes).
        let want = chunk.len().min(self.app.max_buffered_messages.max(1));
        let mut permit = tokio::select! {
            p = sem.clone().acquire_many_owned(want as u32) => p.ok()?,
            _ = self.stop.cancelled() => return None,
        };
        tracing::trace!(permits = want, left = sem.available_permits(), "admitted");
        let gauge = &self.metrics.ingress_in_process;
        Some(
            chunk
                .into_iter()
                .map(|env| {
                    let admission = permit.split(1).map(|one| Admission::new(one, gauge.clone()));
                    (env, admission)
                })
                .collect(),
        )
    }

    /// A record that cannot become messages: a dead letter (kept by the partition together
    /// with the position past it) — and the source flows on.
    pub(crate) fn refusal(
        &self,
        route: &Route,
        at: &str,
        refusal: Refusal,
        id: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Taken {
        let dead = dead_message(route, id, value);
        Taken::Refused(Refused {
            kind: refusal.kind,
            reason: format!("{at}: {}", refusal.reason),
            payload: Payload::Record {
                target: dead.target,
                typename: dead.typename,
                value: bytes::Bytes::copy_from_slice(value.unwrap_or_default()),
            },
        })
    }
}

/// What a record read from a source became.
pub(crate) enum Taken {
    Messages(Vec<Envelope>),
    Refused(Refused),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{Limits, Memory, Queue};
    use crate::message::{Address, Value};

    fn context(memory: Arc<Memory>) -> (SourceContext, crate::inbox::InboxReceiver) {
        let yaml = "apiVersion: spindle.dev/v1alpha1\nkind: StatefulApplication\nmetadata: {name: t}\nspec:\n  functions:\n    - {typename: t/*, endpoint: 'http://f/'}\n";
        let app = AppConfig::resolve(
            &spindle_spec::from_yaml_str(yaml, "t").unwrap(),
            std::path::Path::new("."),
        );
        let (inbox, rx) = Inbox::channel();
        let ctx = SourceContext {
            admission: IngressAdmission::new(app.max_buffered_messages, memory),
            app: Arc::new(app),
            metrics: Arc::new(Metrics::new()),
            inbox,
            me: 0,
            workers: 1,
            stop: CancellationToken::new(),
        };
        (ctx, rx)
    }

    fn record(id: &str) -> (Taken, i64) {
        let env = Envelope {
            target: Address::new(spindle_spec::TypeName::parse("t/f").unwrap(), id),
            caller: None,
            value: Value::new("t/v", bytes::Bytes::from_static(b"x")),
            dedup: None,
            trace: None,
        };
        (Taken::Messages(vec![env]), 1)
    }

    #[tokio::test]
    async fn a_reader_pauses_while_a_queue_is_at_its_bound_and_resumes_when_it_drains() {
        let limits = Limits::from_spec(&spindle_spec::MemorySpec {
            delayed_message_bytes: 1 << 16,
            ..Default::default()
        });
        let memory = Arc::new(Memory::new(limits, &Default::default(), &Default::default()));
        let full = memory.charge(Queue::Delayed, 1 << 16);
        let (ctx, mut rx) = context(memory.clone());
        let source: Arc<str> = "kafka/in/t/0".into();
        let reader = tokio::spawn({
            let (ctx, source) = (ctx.clone(), source.clone());
            async move { ctx.deliver(&source, vec![record("a")], 1).await }
        });
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while ctx.metrics.ingress_paused.get() == 0 {
            assert!(std::time::Instant::now() < deadline, "the reader never paused");
            tokio::task::yield_now().await;
        }
        assert!(
            rx.try_recv().is_err(),
            "nothing is handed over while the bound is reached"
        );
        assert!(!reader.is_finished());
        drop(full);
        let delivered = tokio::time::timeout(std::time::Duration::from_secs(5), reader)
            .await
            .expect("resumed once the queue drained")
            .unwrap();
        assert!(delivered);
        assert!(matches!(rx.try_recv(), Ok(crate::inbox::Input::Source { .. })));
    }
}
