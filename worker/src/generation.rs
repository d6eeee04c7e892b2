//! One generation of the data plane: the partition, the links to the peers, the sources and
//! the checkpoint tasks, all on one stop token (a child of the worker's shutdown). A rollback
//! stops the generation and starts a new one from the restored capture, so nothing of the old
//! generation's memory survives it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinSet;

use crate::app::AppConfig;
use crate::checkpoint::chains::Chains;
use crate::checkpoint::codec::PartMeta;
use crate::checkpoint::group_commit;
use crate::checkpoint::link::CoordinatorLink;
use crate::checkpoint::store::CheckpointStore;
use crate::checkpoint::uploader::Uploader;
use crate::deadletter::DeadLetters;
use crate::egress::EgressHub;
use crate::health::supervised;
use crate::inbox::{Entry, Inbox, IngressAdmission};
use crate::ingress::sources::SourceContext;
use crate::ingress::{offset_committer, start_sources};
use crate::invoker::Invoke;
use crate::metrics::Metrics;
use crate::partition::outbound::Outbound;
use crate::partition::{self, Capture, Compaction, Epochs, Partition};
use crate::peer::Cluster;
use crate::peer::link::Link;
use crate::proto::peer::Hello;
use crate::reply::Replies;
use crate::stop::CancellationToken;
use crate::tls::peer::PeerTls;

/// What every generation of a worker process uses; it outlives them.
#[derive(Clone)]
pub(crate) struct Context {
    pub app: Arc<AppConfig>,
    pub cluster: Cluster,
    pub metrics: Arc<Metrics>,
    pub dead_letters: Arc<DeadLetters>,
    pub egress: EgressHub,
    /// `None` when checkpoints are off (`checkpoint.interval: 0s`).
    pub store: Option<CheckpointStore>,
    pub coordinator: CoordinatorLink,
    pub invoker: Arc<dyn Invoke>,
    /// The ingresses' admission (`maxBufferedMessages`, `spec.memory`), shared with the HTTP
    /// ingress.
    pub ingress_admission: IngressAdmission,
    /// Mutual TLS on the links to the peers (`None`: plain text).
    pub peer_tls: Option<Arc<PeerTls>>,
    /// The HTTP requests of this process waiting for their replies.
    pub replies: Arc<Replies>,
    /// A task that panics or ends early makes the worker unhealthy.
    pub health: Arc<crate::health::Health>,
    /// The partition's messages in flight, for the coordinator's heartbeat.
    pub in_flight: Arc<crate::poison::Board>,
    /// Opt-in tracing (off: no spans).
    pub tracer: crate::trace::Tracer,
}

/// Every key group's expired values are swept about this often.
const SWEEP_PASS: Duration = Duration::from_secs(60);

pub(crate) struct Generation {
    pub number: u64,
    restored: u64,
    inbox: Inbox,
    stop: CancellationToken,
    /// The sources' end: before the generation's when the worker stops taking input.
    input: CancellationToken,
    tasks: Mutex<JoinSet<()>>,
}

impl Generation {
    /// Starts generation `number` from `restored` (whose key groups' state sits in `chains`
    /// of sections), setting aside the `poison` messages; it ends when `parent` fires or
    /// `stop` is called. Its sources read only while `accepting`.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        ctx: &Context,
        number: u64,
        restored: Capture,
        chains: Chains,
        poison: &[crate::poison::MessageId],
        parent: &CancellationToken,
        accepting: bool,
    ) -> Generation {
        let app = &ctx.app;
        let layout = ctx.cluster.layout(app.key_groups);
        let stop = parent.child_token();
        let input = stop.child_token();
        if !accepting {
            input.cancel();
        }
        let mut tasks = JoinSet::new();
        let (outbound, queues) = Outbound::new(layout, ctx.metrics.clone(), ctx.ingress_admission.memory.clone());
        for q in queues {
            let link = Link {
                to: q.to,
                addr: ctx.cluster.peers[q.to as usize].clone(),
                hello: Hello {
                    application: app.name.clone(),
                    from_worker: layout.worker,
                    to_worker: q.to,
                    workers: layout.workers,
                    key_groups: app.key_groups,
                    generation: number,
                },
                outbound: q.rx,
                tls: ctx.peer_tls.clone(),
                metrics: ctx.metrics.clone(),
                stop: stop.clone(),
            };
            tasks.spawn(supervised(ctx.health.clone(), "peer link", stop.clone(), link.run()));
        }
        let (inbox, inbox_rx) = Inbox::channel();
        let sources = SourceContext {
            app: app.clone(),
            metrics: ctx.metrics.clone(),
            admission: ctx.ingress_admission.clone(),
            inbox: inbox.clone(),
            me: layout.worker,
            workers: layout.workers,
            stop: input.clone(),
        };
        // Key groups with state but no sections yet (restored from a format-1 checkpoint) are
        // written whole by the first snapshot.
        let compaction: Compaction = Arc::new(std::sync::Mutex::new(
            restored
                .state
                .groups_with_state()
                .filter(|&kg| chains.chain(kg).is_empty())
                .collect(),
        ));
        let owned = crate::keygroup::range_of(layout.worker, layout.workers, app.key_groups)
            .len()
            .max(1);
        let sweep_every = (SWEEP_PASS / owned as u32).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let epochs = ctx.store.as_ref().map(|store| {
            let (captures, captures_rx) = mpsc::unbounded_channel();
            let uploader = Uploader {
                store: store.clone(),
                meta: PartMeta {
                    application: app.name.clone(),
                    namespace: app.namespace.clone(),
                    uid: app.uid.clone(),
                    generation: number,
                    worker: layout.worker,
                    workers: layout.workers,
                    key_groups: app.key_groups,
                },
                coordinator: ctx.coordinator.clone(),
                metrics: ctx.metrics.clone(),
                chains,
                compaction: compaction.clone(),
            };
            tasks.spawn(supervised(
                ctx.health.clone(),
                "checkpoint uploader",
                stop.clone(),
                uploader.run(captures_rx, stop.clone()),
            ));
            let wants = app.checkpoint.min_pause.map(|_| {
                let (tx, rx) = watch::channel(0);
                tasks.spawn(supervised(
                    ctx.health.clone(),
                    "group commit",
                    stop.clone(),
                    group_commit::run(ctx.coordinator.clone(), number, rx, stop.clone()),
                ));
                tx
            });
            let epochs = Epochs::new(
                app.name.as_str().into(),
                number,
                layout.worker,
                layout.workers,
                restored.checkpoint,
                captures,
                wants,
                ctx.metrics.clone(),
            );
            match offset_committer(&sources, &stop, &mut tasks) {
                Some(tx) => epochs.report_positions(tx),
                None => epochs,
            }
        });
        let positions = restored.positions.clone();
        let restored_from = restored.checkpoint;
        let partition = Partition::new(partition::Parts {
            app: app.clone(),
            outbound,
            invoker: ctx.invoker.clone(),
            egress: ctx.egress.clone(),
            dead_letters: ctx.dead_letters.clone(),
            metrics: ctx.metrics.clone(),
            epochs,
            restored,
            generation: number,
            replies: ctx.replies.clone(),
            compaction,
            sweep_every,
            tracer: ctx.tracer.clone(),
            memory: ctx.ingress_admission.memory.clone(),
            poison: poison.iter().copied().collect(),
            in_flight: ctx.in_flight.clone(),
        });
        tasks.spawn(supervised(
            ctx.health.clone(),
            "partition",
            stop.clone(),
            partition.run(inbox_rx, stop.clone()),
        ));
        start_sources(&sources, &positions, &mut tasks);
        Generation {
            number,
            restored: restored_from,
            inbox,
            stop,
            input,
            tasks: Mutex::new(tasks),
        }
    }

    /// The generation as servers see it.
    pub fn entry(&self) -> Entry {
        Entry {
            generation: self.number,
            restored: self.restored,
            inbox: self.inbox.clone(),
            stop: self.stop.clone(),
        }
    }

    /// Stops the sources: nothing more is read; what they handed over is processed.
    pub fn stop_input(&self) {
        self.input.cancel();
    }

    /// Ends the generation: the partition (abandoning its invocations), links, sources and
    /// checkpoint tasks.
    pub async fn stop(&self) {
        self.stop.cancel();
        let mut tasks = self.tasks.lock().await;
        while tasks.join_next().await.is_some() {}
    }
}
