//! A running worker process: the servers (ingress, admin, peer and control), the egress
//! sinks, the checkpoint store and — on worker 0 — the coordinator, all tied to one shutdown
//! token. The data plane itself is a [`Generation`](crate::generation::Generation), started
//! by the coordinator's first restore and replaced by every rollback; [`Process`] switches
//! them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};

use crate::inbox::IngressAdmission;
use crate::memory::Memory;
use tokio::task::JoinSet;
use tokio_stream::wrappers::TcpListenerStream;

use crate::admin::Admin;
use crate::app::AppConfig;
use crate::auth::Tokens;
use crate::checkpoint::Progress;
use crate::checkpoint::control::client::{self, Announcement, ControlClients, RemoteMember};
use crate::checkpoint::control::server::ControlService;
use crate::checkpoint::coordinator::core::Settings;
use crate::checkpoint::coordinator::task::{DataLossReport, SuspectsReport};
use crate::checkpoint::coordinator::{Coordinator, Member};
use crate::checkpoint::link::CoordinatorLink;
use crate::checkpoint::store::CheckpointStore;
use crate::deadletter::DeadLetters;
use crate::egress::{EgressHub, SinkContext};
use crate::generation::Context;
use crate::health::{Health, supervised};
use crate::ingress::http::HttpIngress;
use crate::ingress::reply::DEFAULT_REPLY_TIMEOUT;
use crate::invoker::HttpInvoker;
use crate::message::{Address, Value};
use crate::metrics::Metrics;
use crate::peer::{Cluster, PeerService};
use crate::process::{Local, Process};
use crate::proto::control::coordination_server::CoordinationServer;
use crate::proto::peer::peer_server::PeerServer;
use crate::reply::Replies;
use crate::stop::CancellationToken;
use crate::tls::peer::PeerTls;

#[derive(Debug, Clone, Default)]
pub struct WorkerOptions {
    /// Where the worker keeps its files (dead letters).
    pub data_dir: Option<PathBuf>,
    /// Print every egress record to stdout (local runs).
    pub echo_egress: bool,
    /// This worker's place among its peers (default: a single worker).
    pub cluster: Cluster,
    /// Mutual TLS on the peer port (`None`: plain text, any caller believed — only for a
    /// network nothing else can reach).
    pub peer_tls: Option<Arc<PeerTls>>,
    /// Opt-in tracing (default: off); see [`crate::trace`].
    pub tracer: crate::trace::Tracer,
}

/// The sockets a worker serves on; tests bind them to port 0.
pub struct Listeners {
    /// HTTP ingress; `None` when the application has no HTTP ingress.
    pub ingress: Option<TcpListener>,
    pub admin: TcpListener,
    /// The peer (gRPC) endpoint; required with more than one worker.
    pub peer: Option<TcpListener>,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("cannot open {what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{0}")]
    Config(String),
    #[error("the worker did not become idle within {0:?}")]
    NotIdle(Duration),
    #[error("the worker is shutting down")]
    ShuttingDown,
}

pub struct Worker {
    pub ingress_addr: Option<SocketAddr>,
    pub peer_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    pub dead_letters: Arc<DeadLetters>,
    process: Arc<Process>,
    /// How this worker reaches the coordinator; `None` when checkpoints are off.
    coordinator: Option<CoordinatorLink>,
    me: u32,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
    /// Egress sinks: stopped last, so that they write everything released before.
    sinks: JoinSet<()>,
    sinks_stop: CancellationToken,
}

impl Worker {
    pub async fn start(app: AppConfig, options: WorkerOptions, listeners: Listeners) -> Result<Worker, WorkerError> {
        for (user, secret) in app.credentials() {
            if std::env::var_os(&secret.env).is_none() {
                return Err(WorkerError::Config(format!(
                    "{user}: the credential's environment variable {} is not set{}",
                    secret.env,
                    secret.secret_key_ref.as_ref().map_or(String::new(), |r| format!(
                        " (in Kubernetes it comes from Secret {} key {})",
                        r.name, r.key
                    ))
                )));
            }
        }
        // TLS files of the connectors, read now so that a missing or bad one stops the start
        // with its name instead of failing every connection later.
        for (what, tls) in app.connector_tls() {
            crate::tls::client::config(Some(tls), &app.base_dir)
                .map_err(|e| WorkerError::Config(format!("{what}: TLS: {e}")))?;
        }
        let app = Arc::new(app);
        let metrics = Arc::new(Metrics::new());
        let io = |what: &str| {
            let what = what.to_string();
            move |source| WorkerError::Io { what, source }
        };
        let dead_letters = Arc::new(
            DeadLetters::open(options.data_dir.as_deref(), metrics.clone()).map_err(io("the dead-letter file"))?,
        );
        let shutdown = CancellationToken::new();
        let mut tasks = JoinSet::new();
        let health = Arc::new(Health::new(app.failure_timeout));
        let memory = Arc::new(Memory::new(
            app.memory,
            &metrics.memory_bytes,
            &metrics.memory_limit_bytes,
        ));
        let sink_ctx = SinkContext {
            memory: memory.clone(),
            metrics: metrics.clone(),
            unconfirmed: Default::default(),
            dead_letters: dead_letters.clone(),
            echo: options.echo_egress,
            worker: options.cluster.index,
            workers: options.cluster.workers(),
            health: health.clone(),
        };
        // Not a child of `shutdown`: sinks stop only after every producer has.
        let sinks_stop = CancellationToken::new();
        let mut sinks = JoinSet::new();
        let egress = EgressHub::start(&app, &sink_ctx, &mut sinks, sinks_stop.clone()).map_err(io("an egress"))?;
        let cluster = options.cluster;
        let (workers, me) = (cluster.workers(), cluster.index);
        if me >= workers {
            return Err(WorkerError::Config(format!(
                "worker index {me} is not below the worker count {workers}"
            )));
        }
        if workers > app.key_groups {
            return Err(WorkerError::Config(format!(
                "{workers} workers exceed the {} key groups",
                app.key_groups
            )));
        }
        let store = match app.checkpoint.interval {
            None => None,
            Some(_) => {
                let url = app.checkpoint.storage_url();
                let store = CheckpointStore::open(url, &app.base_dir, &app.identity().storage_root())
                    .map_err(|e| WorkerError::Config(format!("checkpoint storage `{url}`: {e}")))?;
                tracing::info!(storage = %store.describe(), interval = ?app.checkpoint.interval, "checkpoints on");
                if me == 0 {
                    // Before the coordinator's first lookup, which then restores it.
                    crate::checkpoint::copy::apply(
                        &store,
                        &app.identity(),
                        app.key_groups,
                        app.checkpoint.restore_from.as_ref(),
                        url,
                        &app.base_dir,
                    )
                    .await
                    .map_err(|e| WorkerError::Config(e.to_string()))?;
                }
                Some(store)
            }
        };
        let layout = cluster.layout(app.key_groups);
        let peer_tls = options.peer_tls;
        let tracer = options.tracer;
        if let Some(tls) = &peer_tls {
            let me = tls.me();
            if me.application != app.name || me.worker != cluster.index {
                return Err(WorkerError::Config(format!(
                    "the peer certificate is `{me}`, but this is worker {} of application `{}`",
                    cluster.index, app.name
                )));
            }
        }
        let controls = Arc::new(ControlClients::new(&cluster, &app.name, peer_tls.as_deref()));
        let (coordinator_tx, coordinator_rx) = mpsc::unbounded_channel();
        let coordinator_link: CoordinatorLink = match me {
            0 => CoordinatorLink::Local(coordinator_tx.clone()),
            _ => CoordinatorLink::Remote(controls.clone()),
        };
        let ingress_admission = IngressAdmission::new(app.max_buffered_messages, memory);
        // Request ids must not repeat across restarts of this worker: the process's start
        // time and id make them unique.
        let replies = Replies::new(me, crate::clock::now_ms() ^ (u64::from(std::process::id()) << 44));
        let process = Arc::new(Process::new(
            Context {
                app: app.clone(),
                cluster,
                metrics: metrics.clone(),
                dead_letters: dead_letters.clone(),
                egress,
                store: store.clone(),
                coordinator: coordinator_link.clone(),
                invoker: Arc::new(
                    HttpInvoker::new(app.clone(), metrics.clone())
                        .map_err(|e| WorkerError::Config(format!("functions: TLS: {e}")))?,
                ),
                ingress_admission: ingress_admission.clone(),
                health: health.clone(),
                peer_tls: peer_tls.clone(),
                replies: replies.clone(),
                in_flight: Default::default(),
                tracer: tracer.clone(),
            },
            shutdown.clone(),
        ));
        let local: Arc<dyn Member> = Arc::new(Local(process.clone()));
        let data_loss = DataLossReport::default();
        let suspects = SuspectsReport::default();

        let peer_addr = match (workers > 1, listeners.peer) {
            (false, _) => None,
            (true, None) => return Err(WorkerError::Config("more than one worker needs a peer listener".into())),
            (true, Some(listener)) => {
                let addr = listener.local_addr().map_err(io("the peer socket"))?;
                let peers = PeerService {
                    application: app.name.clone(),
                    layout,
                    tls: peer_tls.clone(),
                    metrics: metrics.clone(),
                    admission: Arc::new(Semaphore::new(app.max_buffered_messages)),
                    current: process.current.clone(),
                    delivered: Default::default(),
                };
                let control = ControlService {
                    application: app.name.clone(),
                    layout,
                    tls: peer_tls.clone(),
                    store: store.clone(),
                    coordinator: (me == 0).then(|| coordinator_tx.clone()),
                    local: local.clone(),
                    incarnation: process.incarnation,
                    progress: process.progress.subscribe(),
                    metrics: metrics.clone(),
                };
                let stop = shutdown.clone();
                let router = tonic::transport::Server::builder()
                    .add_service(
                        PeerServer::new(peers)
                            .max_decoding_message_size(crate::peer::MAX_FRAME_BYTES)
                            .max_encoding_message_size(crate::peer::MAX_FRAME_BYTES),
                    )
                    .add_service(CoordinationServer::new(control));
                let mtls = peer_tls.is_some();
                match &peer_tls {
                    Some(tls) => {
                        let incoming =
                            crate::tls::peer::incoming(listener, tls, metrics.peer_refused.clone(), stop.clone());
                        tasks.spawn(supervised(health.clone(), "peer server", stop.clone(), async move {
                            if let Err(e) = router
                                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                                .await
                            {
                                tracing::error!(error = %e, "peer server failed");
                            }
                        }));
                    }
                    None => {
                        tasks.spawn(supervised(health.clone(), "peer server", stop.clone(), async move {
                            let incoming = TcpListenerStream::new(listener);
                            if let Err(e) = router
                                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                                .await
                            {
                                tracing::error!(error = %e, "peer server failed");
                            }
                        }));
                    }
                }
                if mtls {
                    tracing::info!(%addr, worker = me, workers, "peer endpoint listening (mutual TLS)");
                } else {
                    tracing::warn!(%addr, worker = me, workers, "peer endpoint listening WITHOUT TLS: anyone who reaches it can send messages and control calls (give --tls-dir)");
                }
                Some(addr)
            }
        };
        let savepoints_on_0 = match (&store, app.checkpoint.interval) {
            (Some(store), Some(interval)) if me == 0 => Some(crate::checkpoint::savepoint::Savepoints {
                store: store.clone(),
                coordinator: coordinator_tx.clone(),
                progress: process.progress.subscribe(),
                limit: Duration::from_secs(30) + interval * 20,
            }),
            _ => None,
        };
        if me == 0 {
            let members = (0..workers)
                .map(|w| -> Arc<dyn Member> {
                    if w == me {
                        local.clone()
                    } else {
                        Arc::new(RemoteMember {
                            clients: controls.clone(),
                            worker: w,
                        })
                    }
                })
                .collect();
            let coordinator = Coordinator {
                settings: Settings {
                    application: app.name.clone(),
                    namespace: app.namespace.clone(),
                    uid: app.uid.clone(),
                    workers,
                    key_groups: app.key_groups,
                    interval: app.checkpoint.interval.filter(|_| store.is_some()),
                    min_pause: app.checkpoint.min_pause,
                    failure_timeout: app.failure_timeout,
                    me,
                    poison_after: app.poison_after_rollbacks,
                },
                events: coordinator_rx,
                tx: coordinator_tx,
                members,
                me,
                current: process.current.clone(),
                store,
                retained: app.checkpoint.retained as usize,
                metrics: metrics.clone(),
                data_loss: data_loss.clone(),
                suspects: suspects.clone(),
                shutdown: shutdown.clone(),
                spans: crate::trace::CheckpointSpans::new(tracer),
            };
            tasks.spawn(supervised(
                health.clone(),
                "coordinator",
                shutdown.clone(),
                coordinator.run(),
            ));
        } else {
            let me = Announcement {
                incarnation: process.incarnation,
                workers,
                key_groups: app.key_groups,
            };
            tasks.spawn(client::join(
                controls,
                me,
                metrics.peer_refused.clone(),
                shutdown.clone(),
            ));
        }

        let tokens = |auth: Option<(&str, &spindle_spec::HttpAuth)>| -> Result<Option<Arc<Tokens>>, WorkerError> {
            auth.map(|(at, a)| Tokens::load(a, at, &app.base_dir).map(Arc::new))
                .transpose()
                .map_err(|e| WorkerError::Config(e.to_string()))
        };
        let ingress_auth = tokens(
            app.http_ingress
                .as_ref()
                .and_then(|h| h.auth.as_ref())
                .map(|(at, a)| (at.as_str(), a)),
        )?;
        let admin_auth = tokens(app.admin_auth.as_ref().map(|a| ("spec.admin.auth", a)))?;
        let ingress_addr = match listeners.ingress {
            Some(listener) => {
                let addr = listener.local_addr().map_err(io("the ingress socket"))?;
                let ingress = HttpIngress {
                    app: app.clone(),
                    metrics: metrics.clone(),
                    admission: ingress_admission,
                    max_body_bytes: app.http_ingress.as_ref().map_or(1 << 20, |h| h.max_body_bytes),
                    current: process.current.clone(),
                    progress: app.checkpoint.interval.map(|_| process.progress.subscribe()),
                    accepting: process.accepting.subscribe(),
                    auth: ingress_auth,
                    replies,
                    reply_timeout: app
                        .http_ingress
                        .as_ref()
                        .map_or(DEFAULT_REPLY_TIMEOUT, |h| h.reply_timeout),
                };
                let max = app.http_ingress.as_ref().map_or(1024, |h| h.max_connections);
                let listener = crate::ingress::capped::Capped::new(listener, max);
                serve(
                    &mut tasks,
                    &health,
                    "HTTP ingress",
                    listener,
                    ingress.routes(),
                    shutdown.clone(),
                );
                tracing::info!(%addr, "HTTP ingress listening");
                Some(addr)
            }
            None => None,
        };
        let admin_addr = listeners.admin.local_addr().map_err(io("the admin socket"))?;
        let admin = Admin {
            application: app.name.clone(),
            workers,
            worker: me,
            incarnation: process.incarnation,
            metrics: metrics.clone(),
            progress: process.progress.subscribe(),
            ready: process.ready.clone(),
            current: process.current.clone(),
            data_loss,
            suspects,
            health: health.clone(),
            auth: admin_auth,
            savepoints: savepoints_on_0,
        };
        serve(
            &mut tasks,
            &health,
            "admin server",
            listeners.admin,
            admin.routes(),
            shutdown.clone(),
        );
        tracing::info!(%admin_addr, app = %app.name, "worker started (admin: /healthz /readyz /metrics /status)");
        Ok(Worker {
            ingress_addr,
            peer_addr,
            admin_addr,
            metrics,
            dead_letters,
            coordinator: app.checkpoint.interval.map(|_| coordinator_link),
            me,
            process,
            shutdown,
            tasks,
            sinks,
            sinks_stop,
        })
    }

    /// Waits until this worker runs a generation and nothing accepted is queued, in flight,
    /// delayed or waiting for an egress.
    pub async fn wait_idle(&self, timeout: Duration) -> Result<(), WorkerError> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.process.current.now().is_none() || !self.metrics.is_idle() {
            if tokio::time::Instant::now() >= deadline {
                return Err(WorkerError::NotIdle(timeout));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// The state values of an address, by state name.
    pub async fn read_state(&self, addr: Address) -> Result<Vec<(String, Value)>, WorkerError> {
        let entry = self
            .process
            .current
            .wait()
            .await
            .map_err(|_| WorkerError::ShuttingDown)?;
        entry
            .inbox
            .read_state(addr)
            .await
            .map_err(|_| WorkerError::ShuttingDown)
    }

    /// Waits until a task this worker cannot work without fails; its cause. The process
    /// should then exit non-zero so that it is restarted (`spindle worker` and `spindle run`
    /// do).
    pub async fn failed(&self) -> String {
        self.process.health.wait_failed().await
    }

    /// Generation and checkpoints as this worker knows them.
    pub fn progress(&self) -> Progress {
        *self.process.progress.borrow()
    }

    /// A clean stop, within `timeout`: input stops first (the HTTP ingress answers 503 with
    /// `Spindle-Retry: safe`, sources stop reading), what was accepted is processed, then —
    /// with checkpoints — the coordinator takes checkpoints until one holds nothing of this
    /// worker left to send (every released record written by its sink), and only then does
    /// the worker shut down. A restart then re-sends nothing. When the timeout passes first,
    /// the worker shuts down anyway, and the next start recovers as after a crash (exactly
    /// once still; sinks may see re-sends with the same keys). Returns the final checkpoint.
    pub async fn stop(self, timeout: Duration) -> Option<u64> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.process.stop_input().await;
        tracing::info!(timeout = ?timeout, "stopping: input stopped; draining");
        // Draining first makes the final checkpoint small; it is not needed for correctness
        // (a checkpoint holds what is in flight), so it gets a third of the time at most.
        let drain_until = tokio::time::Instant::now() + timeout / 3;
        let m = &self.metrics;
        while tokio::time::Instant::now() < drain_until
            && (m.ingress_in_process.get() > 0
                || m.messages_queued.get() > 0
                || m.batches_in_flight.get() > 0
                || m.peer_pending.get() > 0)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut final_checkpoint = None;
        if let Some(link) = &self.coordinator {
            let mut exit = self.process.exit.subscribe();
            let told = tokio::time::timeout_at(deadline, link.leave(self.me))
                .await
                .unwrap_or(false);
            if told && let Ok(Ok(n)) = tokio::time::timeout_at(deadline, exit.wait_for(Option::is_some)).await {
                final_checkpoint = *n;
            }
            match final_checkpoint {
                Some(n) => tracing::info!(checkpoint = n, "final checkpoint complete"),
                None => tracing::warn!(
                    timeout = ?timeout,
                    "no final checkpoint within the stop timeout; the next start recovers from the last complete one"
                ),
            }
        } else {
            tracing::info!("checkpoints are off: stopping without a final checkpoint (at-most-once)");
        }
        self.shutdown().await;
        final_checkpoint
    }

    /// Stops every task at once: servers stop accepting, the partition stops, sinks write what
    /// they hold. No final checkpoint (see [`stop`](Self::stop)).
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        self.process.stop().await;
        while self.tasks.join_next().await.is_some() {}
        self.sinks_stop.cancel();
        while self.sinks.join_next().await.is_some() {}
    }
}

fn serve<L>(
    tasks: &mut JoinSet<()>,
    health: &Arc<Health>,
    what: &'static str,
    listener: L,
    routes: axum::Router,
    shutdown: CancellationToken,
) where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    tasks.spawn(supervised(health.clone(), what, shutdown.clone(), async move {
        if let Err(e) = axum::serve(listener, routes)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
        {
            tracing::error!(error = %e, "HTTP server failed");
        }
    }));
}
