//! A running worker: the servers (ingress, admin, peer), the egress sinks, the checkpoint
//! store and — on worker 0 — the coordinator, all tied to one shutdown signal. The data plane
//! itself is a [`crate::world::World`], started by the coordinator's first restore and
//! replaced by every rollback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::admin::Admin;
use crate::app::AppConfig;
use crate::checkpoint::coordinator::Coordinator;
use crate::checkpoint::store::CheckpointStore;
use crate::deadletter::DeadLetters;
use crate::egress::{EgressHub, SinkContext};
use crate::ingress::http::HttpIngress;
use crate::message::{Address, Value};
use crate::metrics::Metrics;
use crate::node::{Node, NodeParts, Progress};
use crate::partition::Input;
use crate::peer::proto::peer_server::PeerServer;
use crate::peer::{Cluster, PeerService, control};
use tokio_stream::wrappers::TcpListenerStream;

#[derive(Debug, Clone, Default)]
pub struct WorkerOptions {
    /// Where the worker keeps its files (dead letters).
    pub data_dir: Option<PathBuf>,
    /// Print every egress record to stdout (local runs).
    pub echo_egress: bool,
    /// This worker's place among its peers (default: a single worker).
    pub cluster: Cluster,
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
    node: Arc<Node>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// Egress sinks: stopped last, so that they write everything released before.
    sinks: JoinSet<()>,
    sinks_stop: watch::Sender<bool>,
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
        let app = Arc::new(app);
        let metrics = Arc::new(Metrics::new());
        let io = |what: &str| {
            let what = what.to_string();
            move |source| WorkerError::Io { what, source }
        };
        let dead_letters = Arc::new(
            DeadLetters::open(options.data_dir.as_deref(), metrics.clone()).map_err(io("the dead-letter file"))?,
        );
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let sink_ctx = SinkContext {
            metrics: metrics.clone(),
            unconfirmed: Default::default(),
            dead_letters: dead_letters.clone(),
            echo: options.echo_egress,
        };
        let (sinks_stop, sinks_stop_rx) = watch::channel(false);
        let mut sinks = JoinSet::new();
        let egress = EgressHub::start(&app, &sink_ctx, &mut sinks, sinks_stop_rx).map_err(io("an egress"))?;
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
                let url = app.checkpoint.storage_url(&app.base_dir);
                let store = CheckpointStore::open(&url, &app.base_dir, &app.name)
                    .map_err(|e| WorkerError::Config(format!("checkpoint storage `{url}`: {e}")))?;
                tracing::info!(storage = %store.describe(), interval = ?app.checkpoint.interval, "checkpoints on");
                Some(store)
            }
        };
        let (coordinator_tx, coordinator_rx) = mpsc::unbounded_channel();
        let node = Arc::new(Node::new(NodeParts {
            app: app.clone(),
            cluster,
            metrics: metrics.clone(),
            dead_letters: dead_letters.clone(),
            egress,
            store,
            coordinator: (me == 0).then(|| coordinator_tx.clone()),
            shutdown: shutdown_rx.clone(),
        }));

        let peer_addr = match (workers > 1, listeners.peer) {
            (false, _) => None,
            (true, None) => return Err(WorkerError::Config("more than one worker needs a peer listener".into())),
            (true, Some(listener)) => {
                let addr = listener.local_addr().map_err(io("the peer socket"))?;
                let service = PeerService { node: node.clone() };
                let mut stop = shutdown_rx.clone();
                tasks.spawn(async move {
                    let result = tonic::transport::Server::builder()
                        .add_service(PeerServer::new(service))
                        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                            let _ = stop.wait_for(|s| *s).await;
                        })
                        .await;
                    if let Err(e) = result {
                        tracing::error!(error = %e, "peer server failed");
                    }
                });
                tracing::info!(%addr, worker = me, workers, "peer endpoint listening");
                Some(addr)
            }
        };
        if me == 0 {
            let interval = app.checkpoint.interval.filter(|_| node.checkpoints_on());
            let coordinator = Coordinator::new(
                node.clone(),
                coordinator_rx,
                coordinator_tx,
                interval,
                app.checkpoint.min_pause,
                app.checkpoint.retained as usize,
            );
            tasks.spawn(coordinator.run());
        } else {
            tasks.spawn(control::join(node.clone()));
        }

        let ingress_addr = match listeners.ingress {
            Some(listener) => {
                let addr = listener.local_addr().map_err(io("the ingress socket"))?;
                let ingress = HttpIngress {
                    node: node.clone(),
                    admission: node.ingress_admission.clone(),
                    max_body_bytes: app.http_ingress.as_ref().map_or(1 << 20, |h| h.max_body_bytes),
                };
                serve(&mut tasks, listener, ingress.routes(), shutdown_rx.clone());
                tracing::info!(%addr, "HTTP ingress listening");
                Some(addr)
            }
            None => None,
        };
        let admin_addr = listeners.admin.local_addr().map_err(io("the admin socket"))?;
        serve(
            &mut tasks,
            listeners.admin,
            Admin { node: node.clone() }.routes(),
            shutdown_rx,
        );
        tracing::info!(%admin_addr, app = %app.name, "worker started (admin: /healthz /readyz /metrics /status)");
        Ok(Worker {
            ingress_addr,
            peer_addr,
            admin_addr,
            metrics,
            dead_letters,
            node,
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
        while self.node.current().is_none() || !self.metrics.is_idle() {
            if tokio::time::Instant::now() >= deadline {
                return Err(WorkerError::NotIdle(timeout));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// The state values of an address, by state name.
    pub async fn read_state(&self, addr: Address) -> Result<Vec<(String, Value)>, WorkerError> {
        let world = self.node.world().await.map_err(|_| WorkerError::ShuttingDown)?;
        let (tx, rx) = oneshot::channel();
        world
            .router
            .send(Input::ReadState(addr, tx))
            .map_err(|_| WorkerError::ShuttingDown)?;
        rx.await.map_err(|_| WorkerError::ShuttingDown)
    }

    /// Generation and checkpoints as this worker knows them.
    pub fn progress(&self) -> Progress {
        *self.node.progress.borrow()
    }

    /// Stops every task: servers stop accepting, the partition stops, sinks write what they hold.
    pub async fn shutdown(mut self) {
        self.node.ready.store(false, Ordering::Release);
        let _ = self.shutdown.send(true);
        if let Some(world) = self.node.world.send_replace(None) {
            world.stop().await;
        }
        while self.tasks.join_next().await.is_some() {}
        let _ = self.sinks_stop.send(true);
        while self.sinks.join_next().await.is_some() {}
    }
}

fn serve(tasks: &mut JoinSet<()>, listener: TcpListener, routes: axum::Router, mut shutdown: watch::Receiver<bool>) {
    tasks.spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, routes).with_graceful_shutdown(stop).await {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });
}
