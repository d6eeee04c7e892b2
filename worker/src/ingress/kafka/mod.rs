//! Kafka ingress: topics → function types, StateFun's mapping (record key = function id).
//!
//! Partitions are assigned to workers explicitly — every partition of the ingress's topics,
//! in order, dealt round-robin over the workers (starting at the ingress's index, so several
//! ingresses spread) — never by consumer-group rebalancing: the assignment must not change
//! behind the checkpoint's back. Each assigned partition has a reader ([`reader`]) that starts
//! at the position the generation restored, or at the startup position, and moves the
//! position forward only together with the records it hands to the partition.
//!
//! The client is `rskafka` (pure Rust, explicit partitions, headers); consumer-group offsets,
//! which it does not speak, are a few requests of our own ([`group`]), written back after every
//! completed checkpoint ([`commit`]). docs/connectors.md says why.

pub mod commit;
pub mod group;
mod reader;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rskafka::client::Client;
use spindle_spec::KafkaIngress;
use tokio::task::JoinSet;

use super::route::Route;
use super::sources::SourceContext;
use crate::brokers::kafka::client_builder;
use crate::inbox::Positions;
use crate::metrics::KindLabels;

/// How long a request to a broker may take before it is retried.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The checkpoint key of a partition's position.
pub fn position_key(ingress: &str, topic: &str, partition: i32) -> String {
    format!("kafka/{ingress}/{topic}/{partition}")
}

/// `(ingress, topic, partition)` of a position key.
pub fn parse_position_key(key: &str) -> Option<(&str, &str, i32)> {
    let rest = key.strip_prefix("kafka/")?;
    let mut it = rest.rsplitn(3, '/');
    let partition = it.next()?.parse().ok()?;
    let topic = it.next()?;
    let ingress = it.next()?;
    Some((ingress, topic, partition))
}

/// The partitions worker `me` of `workers` reads: the `j`-th of all partitions (topics in spec
/// order, partitions ascending) goes to worker `(j + first) % workers`.
pub fn assign(topics: &[(String, Vec<i32>)], first: usize, me: u32, workers: u32) -> Vec<(String, i32)> {
    topics
        .iter()
        .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
        .enumerate()
        .filter(|(j, _)| ((j + first) % workers.max(1) as usize) as u32 == me)
        .map(|(_, tp)| tp)
        .collect()
}

pub struct KafkaSource {
    ctx: SourceContext,
    name: Arc<str>,
    spec: Arc<KafkaIngress>,
    index: usize,
    positions: Positions,
}

impl KafkaSource {
    pub fn new(
        ctx: SourceContext,
        name: &str,
        spec: &KafkaIngress,
        index: usize,
        positions: &Positions,
    ) -> KafkaSource {
        let prefix = format!("kafka/{name}/");
        KafkaSource {
            ctx,
            name: name.into(),
            spec: Arc::new(spec.clone()),
            index,
            positions: positions
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
        }
    }

    /// Learns the partitions, starts a reader for each one this worker owns, and waits for them
    /// (they stop with the generation).
    pub async fn run(self) {
        let Some(client) = connect(&self.ctx, &self.spec, &self.name).await else {
            return;
        };
        let Some(topics) = self.partitions(&client).await else {
            return;
        };
        let mine = assign(&topics, self.index, self.ctx.me, self.ctx.workers);
        tracing::info!(ingress = %self.name, partitions = ?mine, "reading Kafka partitions");
        let mut readers = JoinSet::new();
        for (topic, partition) in mine {
            let t = self
                .spec
                .topics
                .iter()
                .find(|t| t.topic == topic)
                .expect("assigned from the spec's topics");
            let key: Arc<str> = position_key(&self.name, &topic, partition).into();
            let reader = reader::PartitionReader {
                ctx: self.ctx.clone(),
                spec: self.spec.clone(),
                route: Route::new(&t.value_type, &t.targets, t.value_format),
                restored: self.positions.get(&key).copied(),
                key,
                topic,
                partition,
            };
            readers.spawn(reader.run());
        }
        while readers.join_next().await.is_some() {}
    }

    /// Every topic's partitions, waiting (and saying so) while a topic does not exist.
    async fn partitions(&self, client: &Client) -> Option<Vec<(String, Vec<i32>)>> {
        let mut noted = Instant::now() - Duration::from_secs(60);
        loop {
            let listed = tokio::time::timeout(REQUEST_TIMEOUT, client.list_topics()).await;
            let problem = match listed {
                Ok(Ok(listed)) => {
                    let found: Vec<(String, Vec<i32>)> = self
                        .spec
                        .topics
                        .iter()
                        .filter_map(|t| {
                            let l = listed.iter().find(|l| l.name == t.topic)?;
                            Some((t.topic.clone(), l.partitions.iter().copied().collect()))
                        })
                        .collect();
                    if found.len() == self.spec.topics.len() {
                        return Some(found);
                    }
                    let missing: Vec<&str> = self
                        .spec
                        .topics
                        .iter()
                        .map(|t| t.topic.as_str())
                        .filter(|t| !found.iter().any(|(f, _)| f == t))
                        .collect();
                    format!("topics {missing:?} do not exist (yet)")
                }
                Ok(Err(e)) => format!("listing topics: {e}"),
                Err(_) => format!("listing topics: no answer within {REQUEST_TIMEOUT:?}"),
            };
            self.ctx
                .metrics
                .connector_errors
                .get_or_create(&KindLabels { kind: "kafka_metadata" })
                .inc();
            if noted.elapsed() > Duration::from_secs(30) {
                tracing::warn!(ingress = %self.name, problem, "Kafka ingress waiting; retrying every second");
                noted = Instant::now();
            }
            if !self.ctx.pause(Duration::from_secs(1)).await {
                return None;
            }
        }
    }
}

/// A client for the ingress's brokers, retrying until it connects or the generation stops.
pub(crate) async fn connect(ctx: &SourceContext, spec: &KafkaIngress, what: &str) -> Option<Client> {
    let brokers = &spec.brokers;
    let mut noted = Instant::now() - Duration::from_secs(60);
    loop {
        let problem = match client_builder(brokers, spec.tls.as_ref(), spec.sasl.as_ref(), &ctx.app.base_dir) {
            Err(e) => e,
            Ok(builder) => match tokio::time::timeout(REQUEST_TIMEOUT, builder.build()).await {
                Ok(Ok(c)) => return Some(c),
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer within {REQUEST_TIMEOUT:?}"),
            },
        };
        ctx.metrics
            .connector_errors
            .get_or_create(&KindLabels { kind: "kafka_connect" })
            .inc();
        if noted.elapsed() > Duration::from_secs(30) {
            tracing::warn!(
                what,
                ?brokers,
                problem,
                "cannot reach the Kafka brokers; retrying every second"
            );
            noted = Instant::now();
        }
        if !ctx.pause(Duration::from_secs(1)).await {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_dealt_round_robin_and_keys_parse_back() {
        let topics = vec![("a".to_string(), vec![0, 1, 2]), ("b".to_string(), vec![0, 1])];
        let all: Vec<Vec<(String, i32)>> = (0..2).map(|w| assign(&topics, 1, w, 2)).collect();
        assert_eq!(all[1], [("a".into(), 0), ("a".into(), 2), ("b".into(), 1)]);
        assert_eq!(all[0], [("a".into(), 1), ("b".into(), 0)]);
        assert_eq!(assign(&topics, 0, 0, 1).len(), 5);
        let key = position_key("in/x", "t.1", 7);
        assert_eq!(parse_position_key(&key), Some(("in/x", "t.1", 7)));
        assert_eq!(parse_position_key("nats/in"), None);
    }
}
