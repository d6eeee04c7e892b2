//! Reading an output topic back (exactly-once recovery): the idempotency keys of the committed
//! records written since a time.
//!
//! The start per partition is ListOffsets by time, a margin before the mark: every copy of a
//! pending record was stamped (CreateTime) after the mark by the worker that wrote it, and the
//! broker's time index finds the first batch whose newest timestamp is at or after a time,
//! so no such copy is before it. The margin covers topics that keep the broker's append time
//! instead. The end is the high watermark once the fenced producers' transactions are decided:
//! a `read_committed` fetch stops at the last stable offset, so the read waits (within the
//! request timeout) until that offset passes the high watermark seen at the start.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rskafka::client::Client;
use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};

use super::REQUEST_TIMEOUT;

/// The header that carries a record's idempotency key.
pub(super) const KEY_HEADER: &str = "idempotency-key";

/// How far before the mark the read starts (clock differences, broker append time).
const MARGIN_MS: u64 = 10_000;

/// Idempotency keys of the committed records of `topic` (`partitions` partitions) stamped at or
/// after `since_ms` (less the margin).
pub(super) async fn keys_since(
    client: &Client,
    topic: &str,
    partitions: i32,
    since_ms: u64,
) -> Result<HashSet<String>, String> {
    let mut keys = HashSet::new();
    let since = chrono::DateTime::from_timestamp_millis(since_ms.saturating_sub(MARGIN_MS) as i64).unwrap_or_default();
    for p in 0..partitions {
        let at = |what: &str, e: String| format!("reading {topic}/{p} back ({what}): {e}");
        let pc = tokio::time::timeout(
            REQUEST_TIMEOUT,
            client.partition_client(topic.to_string(), p, UnknownTopicHandling::Retry),
        )
        .await
        .map_err(|_| at("leader", "no answer".into()))?
        .map_err(|e| at("leader", e.to_string()))?;
        let start = tokio::time::timeout(REQUEST_TIMEOUT, pc.get_offset(OffsetAt::Timestamp(since)))
            .await
            .map_err(|_| at("offset by time", "no answer".into()))?
            .map_err(|e| at("offset by time", e.to_string()))?;
        if start < 0 {
            continue; // nothing stamped since then
        }
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let mut next = start;
        let mut end = None;
        loop {
            let f = tokio::time::timeout(REQUEST_TIMEOUT, pc.fetch(next, 1..4_000_000, 100))
                .await
                .map_err(|_| at("fetch", "no answer".into()))?
                .map_err(|e| at("fetch", e.to_string()))?;
            let end = *end.get_or_insert(f.high_watermark);
            for r in f.records {
                if let Some(k) = r.record.headers.get(KEY_HEADER) {
                    keys.insert(String::from_utf8_lossy(k).into_owned());
                }
            }
            if f.next_offset >= end {
                break;
            }
            if f.next_offset == next {
                // At the last stable offset: an open transaction (another worker's, or one a
                // fenced producer left, being aborted) holds the read back for a moment.
                if Instant::now() > deadline {
                    return Err(at(
                        "fetch",
                        format!(
                            "transactions still open at offset {next} (stable end {}), high watermark {end}",
                            f.last_stable_offset
                        ),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            next = f.next_offset;
        }
    }
    Ok(keys)
}
