//! NATS JetStream ingress: one worker reads the stream through an ordered consumer (no acks,
//! no server-side state to clean up) starting at an explicit stream sequence — the one the
//! generation restored, or the startup position — and moves the sequence forward only together
//! with the messages it hands to the partition. The last subject token is the function id.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull::OrderedConfig};
use spindle_spec::{NatsIngress, StartupPosition, parse_utc_millis};
use tokio_stream::StreamExt;

use super::route::{Route, TARGET_HEADER};
use super::sources::{SourceContext, Taken};
use crate::brokers::nats::connect;
use crate::inbox::Positions;
use crate::metrics::KindLabels;

/// Most messages handed over in one step, and how long to wait to fill it.
const BATCH: usize = 512;
const BATCH_WAIT: Duration = Duration::from_millis(2);

/// The checkpoint key of a stream's position.
pub fn position_key(ingress: &str) -> String {
    format!("nats/{ingress}")
}

/// True when `subject` matches the filter (`*` one token, `>` the rest).
pub fn subject_matches(filter: &str, subject: &str) -> bool {
    let mut s = subject.split('.');
    for f in filter.split('.') {
        match (f, s.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (f, Some(t)) if f == t => {}
            _ => return false,
        }
    }
    s.next().is_none()
}

pub struct NatsSource {
    ctx: SourceContext,
    spec: NatsIngress,
    routes: Vec<(String, Route)>,
    key: Arc<str>,
    restored: Option<i64>,
}

impl NatsSource {
    pub fn new(ctx: SourceContext, name: &str, spec: &NatsIngress, positions: &Positions) -> NatsSource {
        let key: Arc<str> = position_key(name).into();
        NatsSource {
            ctx,
            routes: spec
                .subjects
                .iter()
                .map(|s| (s.subject.clone(), Route::new(&s.value_type, &s.targets, s.value_format)))
                .collect(),
            spec: spec.clone(),
            restored: positions.get(&key).copied(),
            key,
        }
    }

    pub async fn run(self) {
        let mut failing = None;
        // `next`: the next stream sequence to read, once known.
        let mut next = self.restored;
        let mut reported = false;
        loop {
            if self.ctx.stopped() {
                return;
            }
            let stop = self.ctx.stop.clone();
            // Raced against the generation's end: a rollback must never wait for a broker.
            let result = tokio::select! {
                r = self.read(&mut next, &mut reported) => r,
                _ = stop.cancelled() => return,
            };
            match result {
                Ok(()) => return,
                Err(reason) => {
                    self.ctx
                        .metrics
                        .connector_errors
                        .get_or_create(&KindLabels { kind: "nats_read" })
                        .inc();
                    let now = Instant::now();
                    if failing.is_none_or(|t: Instant| now.duration_since(t) > Duration::from_secs(30)) {
                        tracing::warn!(source = %self.key, reason, "JetStream reader: retrying");
                        failing = Some(now);
                    }
                }
            }
            if !self.ctx.pause(Duration::from_millis(500)).await {
                return;
            }
        }
    }

    /// Reads until the generation stops (`Ok`) or something fails (`Err`, to retry from `next`).
    async fn read(&self, next: &mut Option<i64>, reported: &mut bool) -> Result<(), String> {
        let client = connect(
            &self.spec.servers,
            self.spec.auth.as_ref(),
            self.spec.tls.as_ref(),
            &self.ctx.app.base_dir,
        )
        .await?;
        let js = jetstream::new(client);
        let mut stream = js
            .get_stream(&self.spec.stream)
            .await
            .map_err(|e| format!("stream {}: {e}", self.spec.stream))?;
        let info = stream
            .info()
            .await
            .map_err(|e| format!("stream {}: {e}", self.spec.stream))?
            .clone();
        let start = match *next {
            Some(n) => DeliverPolicy::ByStartSequence {
                start_sequence: n.max(1) as u64,
            },
            None => match self.spec.startup_position {
                StartupPosition::Latest => DeliverPolicy::ByStartSequence {
                    start_sequence: info.state.last_sequence + 1,
                },
                StartupPosition::Timestamp => {
                    let t = parse_utc_millis(self.spec.startup_timestamp.as_deref().unwrap_or(""))?;
                    let start_time = chrono::DateTime::from_timestamp_millis(t).ok_or("timestamp out of range")?;
                    DeliverPolicy::ByStartTime { start_time }
                }
                // Earliest (group offsets are refused for NATS by validation).
                _ => DeliverPolicy::ByStartSequence {
                    start_sequence: info.state.first_sequence.max(1),
                },
            },
        };
        if let DeliverPolicy::ByStartSequence { start_sequence } = start {
            next.get_or_insert(start_sequence as i64);
        }
        if !*reported && let Some(n) = *next {
            // Report the start at once: a snapshot from now on holds it.
            if !self.ctx.deliver(&self.key, Vec::new(), n).await {
                return Ok(());
            }
            *reported = true;
        }
        tracing::info!(source = %self.key, stream = %self.spec.stream, ?start, "JetStream reader started");
        let filters: Vec<String> = self.spec.subjects.iter().map(|s| s.subject.clone()).collect();
        let config = OrderedConfig {
            filter_subjects: if filters.len() > 1 { filters.clone() } else { Vec::new() },
            filter_subject: if filters.len() == 1 {
                filters[0].clone()
            } else {
                String::new()
            },
            deliver_policy: start,
            ..OrderedConfig::default()
        };
        let consumer = stream
            .create_consumer(config)
            .await
            .map_err(|e| format!("creating a consumer: {e}"))?;
        let messages = consumer
            .messages()
            .await
            .map_err(|e| format!("reading the stream: {e}"))?;
        let batches = messages.chunks_timeout(BATCH, BATCH_WAIT);
        tokio::pin!(batches);
        let app = self.ctx.app.clone();
        let stop = self.ctx.stop.clone();
        loop {
            let batch = tokio::select! {
                b = batches.next() => b.ok_or("the stream of messages ended")?,
                _ = stop.cancelled() => return Ok(()),
            };
            let mut records = Vec::with_capacity(batch.len());
            let mut reached = *next;
            let mut failure = None;
            let mut pending = None;
            for m in batch {
                let m = match m {
                    Ok(m) => m,
                    Err(e) => {
                        failure = Some(format!("reading the stream: {e}"));
                        break;
                    }
                };
                let info = m.info().map_err(|e| format!("message metadata: {e}"))?;
                let seq = info.stream_sequence as i64;
                // The consumer's count of messages after this one: the stream's lag.
                pending = Some(info.pending as i64);
                if next.is_some_and(|n| seq < n) {
                    continue;
                }
                reached = Some(seq + 1);
                let subject = m.subject.as_str();
                let Some((_, route)) = self.routes.iter().find(|(f, _)| subject_matches(f, subject)) else {
                    continue;
                };
                let id = subject.rsplit('.').next().map(str::as_bytes);
                let target = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(TARGET_HEADER))
                    .map(|v| v.as_str().as_bytes());
                match route.envelopes(&app, id, Some(m.payload.clone()), target) {
                    Ok(envs) => records.push((Taken::Messages(envs), seq + 1)),
                    Err(refusal) => {
                        let at = format!("JetStream message {}#{seq} ({subject})", self.spec.stream);
                        records.push((self.ctx.refusal(route, &at, refusal, id, Some(&m.payload)), seq + 1));
                    }
                }
            }
            // The records read are lag until the partition took them (delivery may wait for
            // admission); then what the consumer has pending is.
            if let Some(p) = pending {
                self.ctx.metrics.set_ingress_lag(&self.key, p + records.len() as i64);
            }
            if let Some(n) = reached
                && Some(n) != *next
            {
                *next = Some(n);
                if !self.ctx.deliver(&self.key, records, n).await {
                    return Ok(());
                }
            }
            if let Some(p) = pending {
                self.ctx.metrics.set_ingress_lag(&self.key, p);
            }
            if let Some(f) = failure {
                return Err(f);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::subject_matches;

    #[test]
    fn subject_filters_match_like_nats() {
        assert!(subject_matches("in.>", "in.a.b"));
        assert!(!subject_matches("in.>", "in"));
        assert!(subject_matches("in.*", "in.a"));
        assert!(!subject_matches("in.*", "in.a.b"));
        assert!(subject_matches("in.a", "in.a"));
        assert!(!subject_matches("in.a", "in.b"));
    }
}
