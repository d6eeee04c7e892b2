//! Sources: ingresses that read from a log with positions (Kafka partitions, a JetStream
//! stream). They belong to a generation: [`start`] runs in `World::start` with the positions
//! the generation restored, and the readers stop with it — a rollback rewinds them by starting
//! new readers from the checkpoint's positions.
//!
//! A reader hands records to its partition as `Input::Source` together with the position they
//! bring the source to, so the partition's snapshot holds exactly the positions of the
//! records it has taken in (see docs/connectors.md).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::route::{Refusal, Route, dead_message};
use crate::app::SourceKind;
use crate::message::Envelope;
use crate::node::Node;
use crate::partition::{Input, Positions};
use crate::router::{Admission, Router};

/// What every reader of a generation needs.
#[derive(Clone)]
pub struct SourceContext {
    pub node: Arc<Node>,
    pub router: Router,
    pub stop: watch::Receiver<bool>,
}

/// Most messages handed over at once (and admission permits asked for at once).
const CHUNK: usize = 256;

impl SourceContext {
    /// True once the generation stops.
    pub fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Waits `d`, or less if the generation stops; false if it stopped.
    pub async fn pause(&self, d: Duration) -> bool {
        let mut stop = self.stop.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => !self.stopped(),
            _ = stop.wait_for(|s| *s) => false,
        }
    }

    /// Hands the messages of `records` (each record's messages, and the position after it)
    /// over in chunks, each taking its admission permits first (back-pressure), then tells the
    /// partition the source is at `next`. A record's messages always travel in one chunk, so
    /// a snapshot never holds half a record. False once the generation stops.
    pub async fn deliver(&self, source: &Arc<str>, records: Vec<(Vec<Envelope>, i64)>, next: i64) -> bool {
        let cap = CHUNK.min(self.node.app.max_buffered_messages).max(1);
        let mut rest = records.into_iter().peekable();
        loop {
            let mut chunk = Vec::new();
            let mut at = next;
            while let Some((envs, _)) = rest.peek() {
                if !chunk.is_empty() && chunk.len() + envs.len() > cap {
                    break;
                }
                let (envs, after) = rest.next().expect("peeked");
                chunk.extend(envs);
                at = after;
            }
            if rest.peek().is_none() {
                at = next;
            }
            let Some(records) = self.admit(chunk).await else {
                return false;
            };
            let n = records.len() as u64;
            let input = Input::Source {
                source: source.clone(),
                next: at,
                records,
            };
            if self.router.send(input).is_err() {
                return false;
            }
            self.node.metrics.ingress_accepted.inc_by(n);
            if rest.peek().is_none() {
                return true;
            }
        }
    }

    async fn admit(&self, chunk: Vec<Envelope>) -> Option<Vec<(Envelope, Option<Admission>)>> {
        if chunk.is_empty() {
            return Some(Vec::new());
        }
        let mut stop = self.stop.clone();
        let sem = self.node.ingress_admission.clone();
        // Never more than the whole budget (a record with more targets than that still goes).
        let want = chunk.len().min(self.node.app.max_buffered_messages.max(1));
        let mut permit = tokio::select! {
            p = sem.clone().acquire_many_owned(want as u32) => p.ok()?,
            _ = stop.wait_for(|s| *s) => return None,
        };
        tracing::trace!(permits = want, left = sem.available_permits(), "admitted");
        let gauge = &self.node.metrics.ingress_in_process;
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

    /// A record that cannot become messages: logged, counted, kept — and the source flows on.
    pub fn refuse(&self, route: &Route, at: &str, refusal: Refusal, id: Option<&[u8]>, value: Option<&[u8]>) {
        self.node.dead_letters.record(
            refusal.kind,
            format!("{at}: {}", refusal.reason),
            vec![dead_message(route, id, value)],
        );
    }
}

/// Starts this worker's readers of every source, from `positions` (what the generation
/// restored) or, where there is none, each source's startup position.
pub fn start(
    node: &Arc<Node>,
    router: &Router,
    positions: &Positions,
    stop: &watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) {
    let ctx = SourceContext {
        node: node.clone(),
        router: router.clone(),
        stop: stop.clone(),
    };
    let (me, workers) = (node.cluster.index, node.cluster.workers());
    for (index, source) in node.app.sources.iter().enumerate() {
        match &source.kind {
            SourceKind::Kafka(spec) => {
                let ingress = super::kafka::KafkaSource::new(ctx.clone(), &source.name, spec, index, positions);
                tasks.spawn(ingress.run());
            }
            SourceKind::Nats(spec) => {
                // One reader per stream, spread over the workers by ingress.
                if index as u32 % workers == me {
                    let reader = super::nats::NatsSource::new(ctx.clone(), &source.name, spec, positions);
                    tasks.spawn(reader.run());
                }
            }
        }
    }
}

/// The task that commits the positions of completed checkpoints back to the Kafka consumer
/// groups, if the application reads Kafka; its sender is handed to the partition.
pub fn committer(
    node: &Arc<Node>,
    stop: &watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> Option<mpsc::UnboundedSender<Positions>> {
    let kafka: Vec<_> = node
        .app
        .sources
        .iter()
        .filter_map(|s| match &s.kind {
            SourceKind::Kafka(k) => Some((s.name.clone(), k.clone())),
            SourceKind::Nats(_) => None,
        })
        .collect();
    if kafka.is_empty() {
        return None;
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let app_name = node.app.name.clone();
    tasks.spawn(super::kafka::commit::run(
        app_name,
        kafka,
        rx,
        stop.clone(),
        node.metrics.clone(),
    ));
    Some(tx)
}
