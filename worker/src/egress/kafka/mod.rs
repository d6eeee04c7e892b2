//! Kafka egress: produces each released record to its topic, with the idempotency key in the
//! `idempotency-key` header. A StateFun `KafkaProducerRecord` value (what the SDKs'
//! `kafka_egress_message` builds) names its own topic, key and value; any other record goes to
//! the egress's topic, keyed by the sending function's id, its typename in `spindle-typename`.
//! Partitions are chosen like Kafka's default partitioner (murmur2 of the key), so Java
//! consumers see the usual placement; a record without a key is placed by its idempotency key,
//! so a re-send lands where the first one did. Failed produces are retried within `timeout`,
//! then the records become dead letters.
//!
//! Two delivery semantics (`deliverySemantic`): *at-least-once* produces plainly, so a record
//! released again after a crash may be in the topic twice (same key); *exactly-once* writes
//! each burst in a Kafka transaction of this worker's transactional id ([`txn`]), and after a
//! restore (or a commit whose outcome is unknown) first fences that id and reads the topic
//! back ([`read_back`]) to confirm, not re-send, what an earlier transaction committed.

mod murmur2;
mod read_back;
mod txn;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use rskafka::client::Client;
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::record::Record;
use spindle_protocol::egress::KafkaProducerRecord;
use spindle_protocol::typenames::KAFKA_PRODUCER_RECORD;
use spindle_spec::{KafkaEgress, TypeName};

use tokio::task::JoinSet;

use super::retrying::{self, Attempt};
use super::{Closing, EgressRecord, SinkContext, SinkItem};
use crate::app::AppConfig;
use crate::brokers::kafka::client_builder;
use crate::stop::CancellationToken;

pub use murmur2::murmur2;

/// Longest a single request to the broker may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Records taken from the queue at once (one transaction at most).
const BURST: usize = 512;

pub struct KafkaSink {
    spec: KafkaEgress,
    name: String,
    egress: TypeName,
    /// Where relative TLS file paths start.
    base_dir: std::path::PathBuf,
    ctx: SinkContext,
    client: Option<Arc<Client>>,
    partitions: HashMap<String, i32>,
    producers: HashMap<(String, i32), Arc<PartitionClient>>,
    round_robin: u32,
    /// Exactly-once: this worker's transactions.
    txn: Option<txn::Transactions>,
}

/// A record on its way out.
pub(crate) struct Out {
    topic: String,
    /// Chosen once the topic's partition count is known.
    partition: Option<i32>,
    record: Record,
    source: EgressRecord,
}

/// Records placed on their partitions, and those whose topic is not known (yet).
type Placed = (BTreeMap<(String, i32), Vec<Out>>, Vec<Out>);

impl KafkaSink {
    pub fn new(spec: KafkaEgress, name: String, app: &AppConfig, ctx: SinkContext) -> KafkaSink {
        let egress = TypeName::parse(&name).expect("an egress is named by its typename");
        let txn = spec.exactly_once().then(|| {
            let mut prefix = String::from("spindle");
            for part in [app.namespace.as_deref(), Some(&app.name), Some(&name)]
                .into_iter()
                .flatten()
            {
                prefix.push('/');
                prefix.push_str(part);
            }
            txn::Transactions::new(prefix, ctx.worker, ctx.workers, spec.transaction_timeout())
        });
        if txn.is_some() {
            // Before this sink writes anything: its first snapshot's mark (a time).
            ctx.unconfirmed.confirm_at(&[], &egress, crate::clock::now_ms());
        }
        KafkaSink {
            spec,
            name,
            egress,
            base_dir: app.base_dir.clone(),
            ctx,
            client: None,
            partitions: HashMap::new(),
            producers: HashMap::new(),
            round_robin: 0,
            txn,
        }
    }

    pub async fn run(mut self, rx: super::SinkQueue, stop: CancellationToken) {
        let mut rx = Closing::new(rx, stop);
        let mut items = Vec::with_capacity(BURST);
        while rx.recv_items(&mut items, BURST).await > 0 {
            let mut records = Vec::with_capacity(items.len());
            for item in items.drain(..) {
                match item {
                    SinkItem::Record(r) => records.push(r),
                    SinkItem::Resume { mark } => {
                        self.send(std::mem::take(&mut records)).await;
                        // Records released again may be in the topic already (exactly-once
                        // reads it back from `mark` first; at-least-once sends them again).
                        if let Some(t) = &mut self.txn {
                            t.recover_from(mark);
                        }
                    }
                }
            }
            self.send(records).await;
        }
    }

    async fn send(&mut self, records: Vec<EgressRecord>) {
        if records.is_empty() {
            return;
        }
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
            headers.insert(read_back::KEY_HEADER.to_string(), key.as_bytes().to_vec());
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
        Ok(Out {
            topic,
            partition: None,
            record: Record {
                key,
                value: Some(value),
                headers,
                timestamp: now(),
            },
            source: r,
        })
    }

    fn done(&self, records: Vec<EgressRecord>, result: Result<(), String>) {
        self.ctx.finish(&self.name, &records, result);
    }

    /// Written, and no pending record of this sink has a copy in the topic from before `mark`
    /// (a time): the snapshot's mark moves there in the same step.
    fn done_at(&self, records: Vec<EgressRecord>, mark: u64) {
        self.ctx.unconfirmed.confirm_at(&records, &self.egress, mark);
        self.done(records, Ok(()));
    }

    async fn connect(&mut self) -> Result<Arc<Client>, String> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
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
        Ok(c)
    }

    /// Learns the partition counts of topics not seen yet.
    async fn learn_partitions(&mut self, client: &Client, outs: &[Out]) -> Result<(), String> {
        if outs.iter().all(|o| self.partitions.contains_key(&o.topic)) {
            return Ok(());
        }
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
        Ok(())
    }

    /// Places every record whose topic is known on its partition.
    fn place(&mut self, outs: &mut Vec<Out>) -> Placed {
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
        (groups, unknown)
    }

    /// Records of topics that do not exist stay pending, and the topics are looked up again
    /// next round (they may be created meanwhile).
    fn unknown_topics(&mut self, unknown: Vec<Out>, outs: &mut Vec<Out>) -> Option<String> {
        if unknown.is_empty() {
            return None;
        }
        let topics: Vec<&str> = unknown.iter().map(|o| o.topic.as_str()).collect();
        let error = format!("topics {topics:?} do not exist");
        for o in &unknown {
            self.partitions.remove(&o.topic);
        }
        outs.extend(unknown);
        Some(error)
    }

    async fn partition_client(&mut self, client: &Client, topic: &str, p: i32) -> Result<Arc<PartitionClient>, String> {
        if let Some(pc) = self.producers.get(&(topic.to_string(), p)) {
            return Ok(pc.clone());
        }
        let pc = tokio::time::timeout(
            REQUEST_TIMEOUT,
            client.partition_client(topic.to_string(), p, UnknownTopicHandling::Error),
        )
        .await
        .map_err(|_| "no answer".to_string())?
        .map_err(|e| e.to_string())?;
        let pc = Arc::new(pc);
        self.producers.insert((topic.to_string(), p), pc.clone());
        Ok(pc)
    }

    /// At-least-once: every record whose partition is known is produced, one request per
    /// partition, all at once. What is left in `outs` failed.
    async fn attempt_plain(&mut self, outs: &mut Vec<Out>) -> Result<(), String> {
        let client = self.connect().await?;
        self.learn_partitions(&client, outs).await?;
        let (groups, unknown) = self.place(outs);
        let mut produces = JoinSet::new();
        for ((topic, p), group) in groups {
            let pc = match self.partition_client(&client, &topic, p).await {
                Ok(pc) => pc,
                Err(e) => {
                    tracing::debug!(egress = %self.name, %topic, p, error = %e, "no producer for the partition yet");
                    outs.extend(group);
                    continue;
                }
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
        if let Some(e) = self.unknown_topics(unknown, outs) {
            error.get_or_insert(e);
        }
        match error {
            None if outs.is_empty() => Ok(()),
            None => Err("partitions without a leader".into()),
            Some(e) => Err(e),
        }
    }
}

impl Attempt for KafkaSink {
    type Pending = Out;

    async fn attempt(&mut self, outs: &mut Vec<Out>) -> Result<(), String> {
        if self.txn.is_some() {
            self.attempt_transactional(outs).await
        } else {
            self.attempt_plain(outs).await
        }
    }
}

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(crate::clock::now_ms() as i64).unwrap_or_default()
}
