//! After every completed checkpoint, the positions of the partitions this worker reads are
//! committed to the ingress's consumer group — for lag monitoring and the `group-offsets`
//! startup position. Exactly-once never depends on them (the checkpoint holds the positions),
//! so a failed commit is logged, counted and superseded by the next one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use spindle_spec::KafkaIngress;
use tokio::sync::mpsc;

use super::group::{self, Conn};
use super::{REQUEST_TIMEOUT, parse_position_key};
use crate::inbox::Positions;
use crate::metrics::{KindLabels, Metrics};
use crate::stop::CancellationToken;

/// Fresh coordinator look-ups before a commit meeting `coordinator_moving` counts as failed
/// (waits of 0.2, 0.4, 0.8, 1.6, 3.2 s).
const COORDINATOR_RETRIES: u32 = 5;

/// Topic → `(partition, next offset)` of one ingress.
type ByTopic<'a> = BTreeMap<&'a str, Vec<(i32, i64)>>;

pub async fn run(
    application: String,
    ingresses: Vec<(String, KafkaIngress)>,
    mut rx: mpsc::UnboundedReceiver<Positions>,
    stop: CancellationToken,
    metrics: Arc<Metrics>,
) {
    let mut conns: HashMap<String, Conn> = HashMap::new();
    loop {
        let mut positions = tokio::select! {
            p = rx.recv() => match p {
                Some(p) => p,
                None => return,
            },
            _ = stop.cancelled() => return,
        };
        // Only the newest matters: each map holds every partition this worker reads.
        while let Ok(newer) = rx.try_recv() {
            positions = newer;
        }
        // ingress → topic → [(partition, offset)]
        let mut by_ingress: BTreeMap<&str, ByTopic> = BTreeMap::new();
        for (key, next) in &positions {
            if let Some((ingress, topic, partition)) = parse_position_key(key) {
                by_ingress
                    .entry(ingress)
                    .or_default()
                    .entry(topic)
                    .or_default()
                    .push((partition, *next));
            }
        }
        for (ingress, topics) in by_ingress {
            let Some((_, spec)) = ingresses.iter().find(|(n, _)| n == ingress) else {
                continue;
            };
            let group_id = spec.consumer_group_id.clone().unwrap_or_else(|| application.clone());
            let mut retries = 0;
            let result = loop {
                let attempt = async {
                    let conn = match conns.remove(ingress) {
                        Some(c) => c,
                        None => group::coordinator(&spec.brokers, &group_id, REQUEST_TIMEOUT).await?,
                    };
                    let mut conn = conn;
                    for (topic, offsets) in &topics {
                        conn.commit(&group_id, topic, offsets).await?;
                    }
                    Ok::<_, group::GroupError>(conn)
                }
                .await;
                match attempt {
                    // A coordinator on its way (a new group's first commit): look it up again
                    // shortly, a few times, before this commit counts as failed.
                    Err(e) if e.coordinator_moving() && retries < COORDINATOR_RETRIES => {
                        retries += 1;
                        tracing::debug!(ingress, group = %group_id, error = %e, retries, "group coordinator not ready; looking it up again");
                        if !crate::stop::pause(&stop, Duration::from_millis(100 << retries)).await {
                            return;
                        }
                    }
                    other => break other,
                }
            };
            match result {
                Ok(conn) => {
                    metrics.offset_commits.inc();
                    tracing::debug!(ingress, group = %group_id, ?topics, "committed offsets");
                    conns.insert(ingress.to_string(), conn);
                }
                Err(e) => {
                    metrics
                        .connector_errors
                        .get_or_create(&KindLabels {
                            kind: "kafka_offset_commit",
                        })
                        .inc();
                    tracing::warn!(ingress, group = %group_id, error = %e, "committing offsets to the consumer group failed; the next checkpoint tries again");
                }
            }
        }
    }
}
