//! Ingresses: where outside records enter the application — HTTP requests, and sources with
//! positions in checkpoints (Kafka partitions, a NATS JetStream stream).

pub(crate) mod capped;
pub mod http;
pub mod kafka;
pub mod nats;
pub mod route;
pub mod sources;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::app::SourceKind;
use crate::inbox::Positions;
use sources::SourceContext;

/// Starts this worker's readers of every source, from `positions` (what the generation
/// restored) or, where there is none, each source's startup position.
pub fn start_sources(ctx: &SourceContext, positions: &Positions, tasks: &mut JoinSet<()>) {
    for (index, source) in ctx.app.sources.iter().enumerate() {
        match &source.kind {
            SourceKind::Kafka(spec) => {
                let ingress = kafka::KafkaSource::new(ctx.clone(), &source.name, spec, index, positions);
                tasks.spawn(ingress.run());
            }
            SourceKind::Nats(spec) => {
                // One reader per stream, spread over the workers by ingress.
                if index as u32 % ctx.workers == ctx.me {
                    let reader = nats::NatsSource::new(ctx.clone(), &source.name, spec, positions);
                    tasks.spawn(reader.run());
                }
            }
        }
    }
}

/// The task that commits the positions of completed checkpoints back to the Kafka consumer
/// groups, if the application reads Kafka; its sender is handed to the partition.
/// It runs until `stop` (the generation's end: positions of checkpoints completed after the
/// input stopped are committed too).
pub fn offset_committer(
    ctx: &SourceContext,
    stop: &crate::stop::CancellationToken,
    tasks: &mut JoinSet<()>,
) -> Option<mpsc::UnboundedSender<Positions>> {
    let kafka: Vec<_> = ctx
        .app
        .sources
        .iter()
        .filter_map(|s| match &s.kind {
            // The offset commits speak Kafka's protocol by hand, in plain text and without
            // SASL: with either configured they are skipped (positions live in checkpoints
            // anyway; only lag monitoring misses them).
            SourceKind::Kafka(k) if k.tls.is_some() || k.sasl.is_some() => {
                tracing::info!(ingress = %s.name, "Kafka over TLS/SASL: offsets are not committed to the consumer group");
                None
            }
            SourceKind::Kafka(k) => Some((s.name.clone(), k.clone())),
            SourceKind::Nats(_) => None,
        })
        .collect();
    if kafka.is_empty() {
        return None;
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let app_name = ctx.app.name.clone();
    tasks.spawn(kafka::commit::run(
        app_name,
        kafka,
        rx,
        stop.clone(),
        ctx.metrics.clone(),
    ));
    Some(tx)
}
