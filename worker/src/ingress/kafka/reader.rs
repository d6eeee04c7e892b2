//! One Kafka partition's reader: fetch from the position, turn records into messages (or dead
//! letters), hand them to the partition with the position after them, repeat. It has its own
//! connection, so an idle partition's long poll never holds up a busy one's fetch.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use spindle_spec::{KafkaIngress, StartupPosition, parse_utc_millis};

use super::{REQUEST_TIMEOUT, connect, group};
use crate::ingress::route::{Route, TARGET_HEADER};
use crate::ingress::sources::{SourceContext, Taken};
use crate::metrics::KindLabels;

/// How long a fetch waits at the end of the partition for records to arrive.
const FETCH_WAIT_MS: i32 = 250;

pub struct PartitionReader {
    pub ctx: SourceContext,
    pub spec: Arc<KafkaIngress>,
    pub route: Route,
    pub key: Arc<str>,
    pub topic: String,
    pub partition: i32,
    /// The position the generation restored, if the checkpoint has one.
    pub restored: Option<i64>,
}

impl PartitionReader {
    pub async fn run(self) {
        let what = format!("kafka {}/{}", self.topic, self.partition);
        let Some(client) = connect(&self.ctx, &self.spec, &what).await else {
            return;
        };
        let Some(pc) = self
            .retry("kafka_partition", || async {
                client
                    .partition_client(self.topic.clone(), self.partition, UnknownTopicHandling::Error)
                    .await
                    .map_err(|e| e.to_string())
            })
            .await
        else {
            return;
        };
        let (mut next, mut skip_before) = match self.restored {
            Some(p) => (p, None),
            None => match self.retry("kafka_startup", || self.startup(&pc)).await {
                Some(s) => s,
                None => return,
            },
        };
        tracing::info!(source = %self.key, next, restored = self.restored.is_some(), "Kafka partition reader started");
        // Report the start at once: a snapshot from now on holds it, even before any record.
        if !self.ctx.deliver(&self.key, Vec::new(), next).await {
            return;
        }
        let app = self.ctx.app.clone();
        let max_bytes = self.spec.fetch_max_bytes as i32;
        let mut failing = None;
        loop {
            let stop = self.ctx.stop.clone();
            let fetched = tokio::select! {
                r = tokio::time::timeout(REQUEST_TIMEOUT, pc.fetch(next, 1..max_bytes, FETCH_WAIT_MS)) => r,
                _ = stop.cancelled() => return,
            };
            let (records, after_batches, stable) = match fetched {
                Ok(Ok(f)) => {
                    failing = None;
                    (f.records, f.next_offset, f.last_stable_offset)
                }
                Ok(Err(rskafka::client::error::Error::ServerError {
                    protocol_error: rskafka::client::error::ProtocolError::OffsetOutOfRange,
                    ..
                })) => {
                    // The position is gone (retention deleted it) or ahead of the partition.
                    let Some(moved) = self.out_of_range(&pc, next).await else {
                        return;
                    };
                    next = moved;
                    if !self.ctx.deliver(&self.key, Vec::new(), next).await {
                        return;
                    }
                    continue;
                }
                failure => {
                    let reason = match failure {
                        Ok(Err(e)) => e.to_string(),
                        _ => format!("no answer within {REQUEST_TIMEOUT:?}"),
                    };
                    self.failed("kafka_fetch", &mut failing, &reason);
                    if !self.ctx.pause(Duration::from_millis(200)).await {
                        return;
                    }
                    continue;
                }
            };
            let mut batch = Vec::with_capacity(records.len());
            let mut reached = next;
            for r in records {
                if r.offset < next {
                    continue;
                }
                reached = r.offset + 1;
                let rec = r.record;
                if let Some(t) = skip_before {
                    // Brokers answer timestamp look-ups approximately; records before the
                    // startup time are skipped here until the first one at or after it.
                    if rec.timestamp.timestamp_millis() < t {
                        continue;
                    }
                    skip_before = None;
                }
                let target = rec.headers.get(TARGET_HEADER).map(Vec::as_slice);
                let value = rec.value.as_deref().map(Bytes::copy_from_slice);
                match self.route.envelopes(&app, rec.key.as_deref(), value, target) {
                    Ok(envs) => batch.push((Taken::Messages(envs), reached)),
                    Err(refusal) => {
                        let at = format!("kafka record {}/{}@{}", self.topic, self.partition, r.offset);
                        let dead =
                            self.ctx
                                .refusal(&self.route, &at, refusal, rec.key.as_deref(), rec.value.as_deref());
                        batch.push((dead, reached));
                    }
                }
            }
            // Transaction markers and aborted records (which the client drops) move the
            // position on too, or a partition ending in a marker would be fetched forever.
            let reached = reached.max(after_batches);
            tracing::trace!(source = %self.key, next, reached, messages = batch.len(), "fetched");
            if reached == next {
                if stable > next {
                    // Records are there but no whole batch came back (one larger than
                    // `fetchMaxBytes`?): say so, and do not spin.
                    self.failed("kafka_fetch", &mut failing, &format!("a fetch at offset {next} returned no complete record batch (the partition's stable end is {stable}); is fetchMaxBytes smaller than a batch?"));
                    if !self.ctx.pause(Duration::from_millis(200)).await {
                        return;
                    }
                }
                continue;
            }
            // The fetched records are lag until the partition took them (delivery may wait for
            // admission), then the rest to the stable end is.
            self.ctx.metrics.set_ingress_lag(&self.key, stable - next);
            next = reached;
            if !self.ctx.deliver(&self.key, batch, next).await {
                return;
            }
            self.ctx.metrics.set_ingress_lag(&self.key, stable - next);
        }
    }

    /// The start when the checkpoint has no position: `(offset, skip records before this
    /// time)`.
    async fn startup(&self, pc: &PartitionClient) -> Result<(i64, Option<i64>), String> {
        let offset = |at| async move {
            tokio::time::timeout(REQUEST_TIMEOUT, pc.get_offset(at))
                .await
                .map_err(|_| format!("no answer within {REQUEST_TIMEOUT:?}"))?
                .map_err(|e| e.to_string())
        };
        let earliest = offset(OffsetAt::Earliest).await?;
        // The end from a fetch's high watermark: brokers differ in what "latest" means in
        // ListOffsets (tansu answers the last offset, Kafka the one after it). A small wait:
        // tansu answers a fetch with no wait at all without the partition.
        let end = || async {
            tokio::time::timeout(REQUEST_TIMEOUT, pc.fetch_records(earliest, 1..1024, 10))
                .await
                .map_err(|_| format!("no answer within {REQUEST_TIMEOUT:?}"))?
                .map(|(_, hw)| hw)
                .map_err(|e| e.to_string())
        };
        Ok(match self.spec.startup_position {
            StartupPosition::Earliest => (earliest, None),
            StartupPosition::Latest => (end().await?, None),
            StartupPosition::GroupOffsets => {
                let group = self
                    .spec
                    .consumer_group_id
                    .clone()
                    .unwrap_or_else(|| self.ctx.app.name.clone());
                let mut conn = group::coordinator(&self.spec.brokers, &group, REQUEST_TIMEOUT)
                    .await
                    .map_err(|e| e.to_string())?;
                let committed = conn
                    .fetch(&group, &self.topic, &[self.partition])
                    .await
                    .map_err(|e| e.to_string())?;
                match committed.first() {
                    Some(&(_, o)) if o >= 0 => (o.max(earliest), None),
                    _ => (earliest, None),
                }
            }
            StartupPosition::Timestamp => {
                let t = parse_utc_millis(self.spec.startup_timestamp.as_deref().unwrap_or(""))?;
                let at = chrono::DateTime::from_timestamp_millis(t).ok_or("timestamp out of range")?;
                match offset(OffsetAt::Timestamp(at)).await? {
                    o if o < 0 => (end().await?, None),
                    o => (o.max(earliest), Some(t)),
                }
            }
        })
    }

    /// Where to go on from a position the partition no longer has: the earliest record when
    /// retention deleted it (data loss: logged with the offsets skipped, counted), the end when
    /// it is past the end (the partition was recreated). `None` once the generation stops.
    async fn out_of_range(&self, pc: &PartitionClient, next: i64) -> Option<i64> {
        let earliest = self
            .retry("kafka_offsets", || async {
                pc.get_offset(OffsetAt::Earliest).await.map_err(|e| e.to_string())
            })
            .await?;
        let end = self
            .retry("kafka_offsets", || async {
                pc.fetch_records(earliest, 1..1024, 10)
                    .await
                    .map(|(_, hw)| hw)
                    .map_err(|e| e.to_string())
            })
            .await?;
        let (moved, lost) = clamp(next, earliest, end);
        if lost > 0 {
            self.ctx.metrics.source_records_lost.inc_by(lost as u64);
            tracing::error!(
                source = %self.key,
                skipped_from = next,
                skipped_to = moved - 1,
                lost,
                "DATA LOSS: the checkpoint's position was deleted by the topic's retention; reading on from the earliest record"
            );
        } else {
            tracing::warn!(source = %self.key, position = next, end, "the position is past the partition's end (was it recreated?); reading on from the end");
        }
        Some(moved)
    }

    /// Retries `f` (each attempt within the request timeout) every 500 ms until it succeeds;
    /// `None` once the generation stops, even in the middle of an attempt.
    async fn retry<T, F, Fut>(&self, kind: &'static str, mut f: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, String>>,
    {
        let mut failing = None;
        loop {
            let stop = self.ctx.stop.clone();
            let attempt = tokio::select! {
                r = tokio::time::timeout(REQUEST_TIMEOUT, f()) => r.unwrap_or_else(|_| Err(format!("no answer within {REQUEST_TIMEOUT:?}"))),
                _ = stop.cancelled() => return None,
            };
            match attempt {
                Ok(v) => return Some(v),
                Err(reason) => self.failed(kind, &mut failing, &reason),
            }
            if !self.ctx.pause(Duration::from_millis(500)).await {
                return None;
            }
        }
    }

    /// Counts a failure; logs the first of a run, then every 30 s.
    fn failed(&self, kind: &'static str, since: &mut Option<Instant>, reason: &str) {
        self.ctx
            .metrics
            .connector_errors
            .get_or_create(&KindLabels { kind })
            .inc();
        let now = Instant::now();
        if since.is_none_or(|t| now.duration_since(t) > Duration::from_secs(30)) {
            tracing::warn!(source = %self.key, kind, reason, "Kafka partition reader: retrying");
            *since = Some(now);
        }
    }
}

/// Where a reader at `next` goes on when the partition holds `earliest..end`, and how many
/// records it skipped (deleted before they were read).
fn clamp(next: i64, earliest: i64, end: i64) -> (i64, i64) {
    if next < earliest {
        (earliest, earliest - next)
    } else if next > end {
        (end, 0)
    } else {
        (next, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::clamp;

    #[test]
    fn a_deleted_position_moves_to_the_earliest_and_counts_what_was_skipped() {
        assert_eq!(clamp(100, 150, 200), (150, 50));
        assert_eq!(clamp(300, 150, 200), (200, 0), "past the end: the end, nothing lost");
        assert_eq!(clamp(160, 150, 200), (160, 0));
    }
}
