//! A running worker: wires the partition, egress sinks, ingress and admin servers together and
//! ties every task to one shutdown signal.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::task::JoinSet;

use crate::admin::Admin;
use crate::app::AppConfig;
use crate::deadletter::DeadLetters;
use crate::egress::{EgressHub, SinkContext};
use crate::ingress::http::HttpIngress;
use crate::message::{Address, Value};
use crate::metrics::Metrics;
use crate::partition::{Input, Partition};
use crate::peer::link::Link;
use crate::peer::proto::{self, peer_server::PeerServer};
use crate::peer::{Cluster, PeerService};
use crate::router::Router;
use tokio_stream::wrappers::TcpListenerStream;

#[derive(Debug, Clone, Default)]
pub struct WorkerOptions {
    /// Where the worker keeps its files (dead letters now, checkpoints later).
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
    Io {
        what: String,
        source: std::io::Error,
    },
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
    router: Router,
    /// Served at `/readyz`: true from start until shutdown begins.
    ready: Arc<AtomicBool>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Worker {
    pub async fn start(
        app: AppConfig,
        options: WorkerOptions,
        listeners: Listeners,
    ) -> Result<Worker, WorkerError> {
        let app = Arc::new(app);
        let metrics = Arc::new(Metrics::new());
        let io = |what: &str| {
            let what = what.to_string();
            move |source| WorkerError::Io { what, source }
        };
        let dead_letters = Arc::new(
            DeadLetters::open(options.data_dir.as_deref(), metrics.clone())
                .map_err(io("the dead-letter file"))?,
        );
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();

        let sink_ctx = SinkContext {
            metrics: metrics.clone(),
            dead_letters: dead_letters.clone(),
            echo: options.echo_egress,
        };
        let egress = EgressHub::start(&app, &sink_ctx, &mut tasks).map_err(io("an egress"))?;
        let cluster = options.cluster;
        let (workers, me) = (cluster.workers(), cluster.index);
        if me >= workers {
            return Err(WorkerError::Config(format!("worker index {me} is not below the worker count {workers}")));
        }
        if workers > app.key_groups {
            return Err(WorkerError::Config(format!("{workers} workers exceed the {} key groups", app.key_groups)));
        }
        let mut links = Vec::new();
        let mut peer_senders = Vec::new();
        for (i, addr) in cluster.peers.iter().enumerate() {
            let i = i as u32;
            if i == me {
                peer_senders.push(None);
                continue;
            }
            let (tx, rx) = mpsc::unbounded_channel();
            peer_senders.push(Some(tx));
            links.push(Link {
                to: i,
                addr: addr.clone(),
                hello: proto::Hello {
                    application: app.name.clone(),
                    from_worker: me,
                    to_worker: i,
                    workers,
                    key_groups: app.key_groups,
                    generation: cluster.generation,
                },
                outbound: rx,
                metrics: metrics.clone(),
                shutdown: shutdown_rx.clone(),
            });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let router = Router::new(me, app.key_groups, tx, peer_senders, metrics.clone());
        let partition = Partition::new(app.clone(), router.clone(), egress, dead_letters.clone(), metrics.clone());
        tasks.spawn(partition.run(rx, shutdown_rx.clone()));
        let peer_addr = match (workers > 1, listeners.peer) {
            (false, _) => None,
            (true, None) => return Err(WorkerError::Config("more than one worker needs a peer listener".into())),
            (true, Some(listener)) => {
                let addr = listener.local_addr().map_err(io("the peer socket"))?;
                let service = PeerService::new(
                    app.clone(),
                    cluster,
                    router.clone(),
                    metrics.clone(),
                    dead_letters.clone(),
                    shutdown_rx.clone(),
                );
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
                for link in links {
                    tasks.spawn(link.run());
                }
                tracing::info!(%addr, worker = me, workers, "peer endpoint listening");
                Some(addr)
            }
        };

        let ingress_addr = match listeners.ingress {
            Some(listener) => {
                let addr = listener.local_addr().map_err(io("the ingress socket"))?;
                let ingress = HttpIngress {
                    app: app.clone(),
                    router: router.clone(),
                    admission: Arc::new(Semaphore::new(app.max_buffered_messages)),
                    metrics: metrics.clone(),
                    max_body_bytes: app.http_ingress.as_ref().map_or(1 << 20, |h| h.max_body_bytes),
                };
                serve(&mut tasks, listener, ingress.routes(), shutdown_rx.clone());
                tracing::info!(%addr, "HTTP ingress listening");
                Some(addr)
            }
            None => None,
        };
        let admin_addr = listeners.admin.local_addr().map_err(io("the admin socket"))?;
        let ready = Arc::new(AtomicBool::new(true));
        let admin = Admin {
            metrics: metrics.clone(),
            dead_letters: dead_letters.clone(),
            ready: ready.clone(),
            router: router.clone(),
        };
        serve(&mut tasks, listeners.admin, admin.routes(), shutdown_rx);
        tracing::info!(%admin_addr, app = %app.name, "worker started (admin: /healthz /readyz /metrics /status)");
        Ok(Worker {
            ingress_addr,
            peer_addr,
            admin_addr,
            metrics,
            dead_letters,
            router,
            ready,
            shutdown,
            tasks,
        })
    }

    /// Waits until nothing accepted is queued, in flight, delayed or waiting for an egress.
    pub async fn wait_idle(&self, timeout: Duration) -> Result<(), WorkerError> {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.metrics.is_idle() {
            if tokio::time::Instant::now() >= deadline {
                return Err(WorkerError::NotIdle(timeout));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(())
    }

    /// The state values of an address, by state name.
    pub async fn read_state(&self, addr: Address) -> Result<Vec<(String, Value)>, WorkerError> {
        let (tx, rx) = oneshot::channel();
        self.router
            .send(Input::ReadState(addr, tx))
            .map_err(|_| WorkerError::ShuttingDown)?;
        rx.await.map_err(|_| WorkerError::ShuttingDown)
    }

    /// Stops every task: servers stop accepting, the partition stops, sinks write what they hold.
    pub async fn shutdown(mut self) {
        self.ready.store(false, std::sync::atomic::Ordering::Release);
        let _ = self.shutdown.send(true);
        drop(self.router);
        while self.tasks.join_next().await.is_some() {}
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
