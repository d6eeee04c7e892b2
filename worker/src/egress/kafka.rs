//! Kafka egress: produces each released record to its topic, with the idempotency key in the
//! `idempotency-key` header. A StateFun `KafkaProducerRecord` value (what the SDKs'
//! `kafka_egress_message` builds) names its own topic, key and value; any other record goes to
//! the egress's topic, keyed by the sending function's id, its typename in `spindle-typename`.
//! Partitions are chosen like Kafka's default partitioner (murmur2 of the key), so Java
//! consumers see the usual placement; a record without a key is placed by its idempotency key,
//! so a re-send lands where the first one did. Failed produces are retried within `timeout`,
//! then the records become dead letters.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use rskafka::client::Client;
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::record::Record;
use spindle_protocol::egress::KafkaProducerRecord;
use spindle_protocol::typenames::KAFKA_PRODUCER_RECORD;
use spindle_spec::KafkaEgress;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::retrying::{self, Attempt};
use super::{Closing, EgressRecord, SinkContext};
use crate::brokers::kafka::client_builder;
use crate::stop::CancellationToken;

/// Longest a single request to the broker may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub struct KafkaSink {
    spec: KafkaEgress,
    name: String,
    /// Where relative TLS file paths start.
    base_dir: std::path::PathBuf,
    ctx: SinkContext,
    client: Option<Arc<Client>>,
    partitions: HashMap<String, i32>,
    producers: HashMap<(String, i32), Arc<PartitionClient>>,
    round_robin: u32,
}

/// A record on its way out.
pub(crate) struct Out {
    topic: String,
    /// Chosen once the topic's partition count is known.
    partition: Option<i32>,
    record: Record,
    source: EgressRecord,
}

impl KafkaSink {
    pub fn new(spec: KafkaEgress, name: String, base_dir: std::path::PathBuf, ctx: SinkContext) -> KafkaSink {
        KafkaSink {
            spec,
            name,
            base_dir,
            ctx,
            client: None,
            partitions: HashMap::new(),
            producers: HashMap::new(),
            round_robin: 0,
        }
    }

    pub async fn run(mut self, rx: mpsc::UnboundedReceiver<super::SinkItem>, stop: CancellationToken) {
        let mut rx = Closing::new(rx, stop);
        let mut batch = Vec::with_capacity(512);
        while rx.recv_many(&mut batch, 512).await > 0 {
            let records = std::mem::take(&mut batch);
            self.send(records).await;
        }
    }

    async fn send(&mut self, records: Vec<EgressRecord>) {
        let mut outs = Vec::with_capacity(records.len());
        for r in records {
            match self.to_kafka(r) {
                Ok(o) => outs.push(o),
                Err(refused) => {
                    let (r, reason) = *refused;
                    self.done(vec![r], Err(reason))
                }
            }
        }
        let (timeout, ctx, name) = (
            self.spec.timeout.map(spindle_spec::HumanDuration::as_duration),
            self.ctx.clone(),
            self.name.clone(),
        );
        if let Some((failed, reason)) = retrying::within(self, outs, timeout, &ctx, &name, "kafka_produce").await {
            self.done(failed.into_iter().map(|o| o.source).collect(), Err(reason));
        }
    }

    fn to_kafka(&self, r: EgressRecord) -> Result<Out, Box<(EgressRecord, String)>> {
        let mut headers = BTreeMap::new();
        if let Some(key) = &r.key {
            headers.insert("idempotency-key".to_string(), key.as_bytes().to_vec());
        }
        headers.insert("spindle-source".to_string(), r.source.to_string().into_bytes());
        let (topic, key, value) = if &*r.value.typename == KAFKA_PRODUCER_RECORD {
            let p = match KafkaProducerRecord::decode(r.value.bytes.as_ref()) {
                Ok(p) => p,
                Err(e) => return Err(Box::new((r, format!("the value is not a KafkaProducerRecord: {e}")))),
            };
            let topic = if p.topic.is_empty() {
                self.spec.topic.clone()
            } else {
                Some(p.topic)
            };
            (
                topic,
                (!p.key.is_empty()).then(|| p.key.into_bytes()),
                p.value_bytes.to_vec(),
            )
        } else {
            headers.insert("spindle-typename".to_string(), r.value.typename.as_bytes().to_vec());
            (
                self.spec.topic.clone(),
                Some(r.source.id.as_bytes().to_vec()),
                r.value.bytes.to_vec(),
            )
        };
        let Some(topic) = topic else {
            return Err(Box::new((
                r,
                "the record names no topic and the egress has no `topic`".into(),
            )));
        };
        let timestamp = chrono::DateTime::from_timestamp_millis(crate::clock::now_ms() as i64).unwrap_or_default();
        Ok(Out {
            topic,
            partition: None,
            record: Record {
                key,
                value: Some(value),
                headers,
                timestamp,
            },
            source: r,
        })
    }

    fn done(&self, records: Vec<EgressRecord>, result: Result<(), String>) {
        self.ctx.finish(&self.name, &records, result);
    }
}

impl Attempt for KafkaSink {
    type Pending = Out;

    /// One round: every record whose partition is known is produced, one request per
    /// partition, all at once. What is left in `outs` failed.
    async fn attempt(&mut self, outs: &mut Vec<Out>) -> Result<(), String> {
        let client = match &self.client {
            Some(c) => c.clone(),
            None => {
                let builder = client_builder(
                    &self.spec.brokers,
                    self.spec.tls.as_ref(),
                    self.spec.sasl.as_ref(),
                    &self.base_dir,
                )?;
                let c = tokio::time::timeout(REQUEST_TIMEOUT, builder.build())
                    .await
                    .map_err(|_| format!("no answer from {:?}", self.spec.brokers))?
                    .map_err(|e| format!("connecting to {:?}: {e}", self.spec.brokers))?;
                let c = Arc::new(c);
                self.client = Some(c.clone());
                c
            }
        };
        if outs.iter().any(|o| !self.partitions.contains_key(&o.topic)) {
            let topics = tokio::time::timeout(REQUEST_TIMEOUT, client.list_topics())
                .await
                .map_err(|_| "listing topics: no answer".to_string())?
                .map_err(|e| {
                    self.client = None;
                    format!("listing topics: {e}")
                })?;
            for t in topics {
                self.partitions.insert(t.name, t.partitions.len() as i32);
            }
        }
        let mut groups: BTreeMap<(String, i32), Vec<Out>> = BTreeMap::new();
        let mut unknown = Vec::new();
        for mut o in outs.drain(..) {
            match self.partitions.get(&o.topic).copied().filter(|n| *n > 0) {
                None => unknown.push(o),
                Some(n) => {
                    let p = *o.partition.get_or_insert_with(|| {
                        let key = o.record.key.as_deref().or(o.source.key.as_deref().map(str::as_bytes));
                        match key {
                            Some(k) => (murmur2(k) & 0x7fff_ffff) % n,
                            None => {
                                self.round_robin = self.round_robin.wrapping_add(1);
                                (self.round_robin % n as u32) as i32
                            }
                        }
                    });
                    groups.entry((o.topic.clone(), p)).or_default().push(o);
                }
            }
        }
        let mut produces = JoinSet::new();
        for ((topic, p), group) in groups {
            let pc = match self.producers.get(&(topic.clone(), p)) {
                Some(pc) => pc.clone(),
                None => match tokio::time::timeout(
                    REQUEST_TIMEOUT,
                    client.partition_client(topic.clone(), p, UnknownTopicHandling::Error),
                )
                .await
                .unwrap_or_else(|_| Err(rskafka::client::error::Error::InvalidResponse("no answer".into())))
                {
                    Ok(pc) => {
                        let pc = Arc::new(pc);
                        self.producers.insert((topic.clone(), p), pc.clone());
                        pc
                    }
                    Err(e) => {
                        tracing::debug!(egress = %self.name, %topic, p, error = %e, "no producer for the partition yet");
                        outs.extend(group);
                        continue;
                    }
                },
            };
            produces.spawn(async move {
                let records: Vec<Record> = group.iter().map(|o| o.record.clone()).collect();
                let r = tokio::time::timeout(REQUEST_TIMEOUT, pc.produce(records, Compression::NoCompression)).await;
                let r = match r {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("no answer".to_string()),
                };
                (topic, p, group, r)
            });
        }
        let mut error = None;
        while let Some(joined) = produces.join_next().await {
            let Ok((topic, p, group, result)) = joined else {
                continue;
            };
            match result {
                Ok(()) => self.done(group.into_iter().map(|o| o.source).collect(), Ok(())),
                Err(e) => {
                    self.producers.remove(&(topic.clone(), p));
                    error = Some(format!("producing to {topic}/{p}: {e}"));
                    outs.extend(group);
                }
            }
        }
        if !unknown.is_empty() {
            let topics: Vec<&str> = unknown.iter().map(|o| o.topic.as_str()).collect();
            error.get_or_insert(format!("topics {topics:?} do not exist"));
            // Learn again next round: the topic may be created meanwhile.
            for o in &unknown {
                self.partitions.remove(&o.topic);
            }
            outs.extend(unknown);
        }
        match error {
            None if outs.is_empty() => Ok(()),
            None => Err("partitions without a leader".into()),
            Some(e) => Err(e),
        }
    }
}

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), which the default
/// partitioner uses.
pub fn murmur2(data: &[u8]) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let tail = chunks.remainder();
    if tail.len() == 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

#[cfg(test)]
mod tests {
    use super::murmur2;

    #[test]
    fn murmur2_matches_kafkas() {
        // Kafka's own test vectors (UtilsTest.testMurmur2).
        for (input, want) in [
            (&b"21"[..], -973932308),
            (b"foobar", -790332482),
            (b"a-little-bit-long-string", -985981536),
            (b"a-little-bit-longer-string", -1486304829),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
            (b"abc", 479470107),
        ] {
            assert_eq!(murmur2(input), want, "{}", String::from_utf8_lossy(input));
        }
    }
}
