//! What a worker process keeps across generations: configuration, metrics, egress sinks, the
//! checkpoint store, and the current generation's [`World`]. Rollback (`restore`) happens here.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{Mutex, Semaphore, mpsc, watch};

use crate::app::AppConfig;
use crate::checkpoint::coordinator::Event;
use crate::checkpoint::snapshot::{DecodeError, Layout, Restored};
use crate::checkpoint::store::{CheckpointStore, StoreError};
use crate::deadletter::DeadLetters;
use crate::egress::EgressHub;
use crate::metrics::Metrics;
use crate::partition::Input;
use crate::peer::Cluster;
use crate::peer::control::ControlClients;
use crate::world::World;

/// Where the application stands, as this worker knows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub generation: u64,
    /// The checkpoint the current generation started from (0: none).
    pub restored: u64,
    /// The newest checkpoint known complete (at least `restored`).
    pub completed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("reading checkpoint {checkpoint}: {source}")]
    Store { checkpoint: u64, source: StoreError },
    #[error("decoding checkpoint {checkpoint}: {source}")]
    Decode { checkpoint: u64, source: DecodeError },
    #[error("checkpoint {0} was requested, but checkpoints are off")]
    NoStore(u64),
    #[error("the worker is shutting down")]
    ShuttingDown,
}

pub struct Node {
    pub app: Arc<AppConfig>,
    pub cluster: Cluster,
    pub metrics: Arc<Metrics>,
    pub dead_letters: Arc<DeadLetters>,
    pub egress: EgressHub,
    /// `None` when checkpoints are off (`checkpoint.interval: 0s`).
    pub store: Option<CheckpointStore>,
    /// New for every process: tells the coordinator that a worker lost its memory.
    pub incarnation: u64,
    pub world: watch::Sender<Option<Arc<World>>>,
    pub progress: watch::Sender<Progress>,
    /// Bounds messages from peers delivered but not yet processed (`maxBufferedMessages`);
    /// waiting for it is what stalls a sender. Outlives generations: permits held by a dropped
    /// generation's messages come back when they are dropped.
    pub peer_admission: Arc<Semaphore>,
    /// Bounds records from this worker's ingresses (HTTP, Kafka, JetStream) accepted but not
    /// yet processed (`maxBufferedMessages`); waiting for it is the ingresses' back-pressure.
    pub ingress_admission: Arc<Semaphore>,
    /// Served at `/readyz`: false while restoring and once shutdown begins.
    pub ready: AtomicBool,
    pub control: ControlClients,
    /// Events for the coordinator, on the worker that is it (worker 0).
    pub coordinator: Option<mpsc::UnboundedSender<Event>>,
    pub shutdown: watch::Receiver<bool>,
    /// One restore at a time.
    restoring: Mutex<()>,
}

pub struct NodeParts {
    pub app: Arc<AppConfig>,
    pub cluster: Cluster,
    pub metrics: Arc<Metrics>,
    pub dead_letters: Arc<DeadLetters>,
    pub egress: EgressHub,
    pub store: Option<CheckpointStore>,
    pub coordinator: Option<mpsc::UnboundedSender<Event>>,
    pub shutdown: watch::Receiver<bool>,
}

impl Node {
    pub fn new(p: NodeParts) -> Node {
        let incarnation = crate::clock::now_ms() ^ (u64::from(std::process::id()) << 44);
        Node {
            peer_admission: Arc::new(Semaphore::new(p.app.max_buffered_messages)),
            ingress_admission: Arc::new(Semaphore::new(p.app.max_buffered_messages)),
            control: ControlClients::new(&p.cluster, &p.app.name),
            app: p.app,
            cluster: p.cluster,
            metrics: p.metrics,
            dead_letters: p.dead_letters,
            egress: p.egress,
            store: p.store,
            incarnation,
            world: watch::channel(None).0,
            progress: watch::channel(Progress::default()).0,
            ready: AtomicBool::new(false),
            coordinator: p.coordinator,
            shutdown: p.shutdown,
            restoring: Mutex::new(()),
        }
    }

    pub fn checkpoints_on(&self) -> bool {
        self.store.is_some()
    }

    pub fn me(&self) -> u32 {
        self.cluster.index
    }

    pub fn current(&self) -> Option<Arc<World>> {
        self.world.borrow().clone()
    }

    /// The current generation, waiting while a restore is under way.
    pub async fn world(&self) -> Result<Arc<World>, RestoreError> {
        let mut rx = self.world.subscribe();
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            w = rx.wait_for(Option::is_some) => w.map(|w| w.clone().expect("waited for Some")).map_err(|_| RestoreError::ShuttingDown),
            _ = shutdown.wait_for(|s| *s) => Err(RestoreError::ShuttingDown),
        }
    }

    /// Rollback: drops the current generation — its state, queues, in-flight invocations,
    /// held egress and peer streams — and starts `generation` from `checkpoint` (0: empty).
    /// Idempotent: a worker already at `generation` (or newer) does nothing.
    pub async fn restore(self: &Arc<Self>, generation: u64, checkpoint: u64) -> Result<(), RestoreError> {
        let _one = self.restoring.lock().await;
        if self.progress.borrow().generation >= generation && self.current().is_some() {
            return Ok(());
        }
        let started = Instant::now();
        self.ready.store(false, Ordering::Release);
        if let Some(old) = self.world.send_replace(None) {
            old.stop().await;
        }
        let restored = self.load(checkpoint).await?;
        let counts = (
            restored.state.addresses(),
            restored.messages.len(),
            restored.egress.len(),
        );
        let world = World::start(self, generation, restored);
        self.world.send_replace(Some(world));
        self.progress.send_modify(|p| {
            *p = Progress {
                generation,
                restored: checkpoint,
                completed: checkpoint.max(if p.generation == generation { p.completed } else { 0 }),
            }
        });
        self.metrics.generation.set(generation as i64);
        self.metrics.restore_seconds.observe(started.elapsed().as_secs_f64());
        if !*self.shutdown.borrow() {
            self.ready.store(true, Ordering::Release);
        }
        tracing::info!(
            generation,
            checkpoint,
            addresses = counts.0,
            messages = counts.1,
            egress = counts.2,
            ms = started.elapsed().as_millis() as u64,
            "restored"
        );
        Ok(())
    }

    async fn load(&self, checkpoint: u64) -> Result<Restored, RestoreError> {
        if checkpoint == 0 {
            return Ok(Restored::default());
        }
        let store = self.store.as_ref().ok_or(RestoreError::NoStore(checkpoint))?;
        let err = |source| RestoreError::Store { checkpoint, source };
        let manifest = store.manifest(checkpoint).await.map_err(err)?;
        let mut parts: Vec<Bytes> = Vec::with_capacity(manifest.parts.len());
        for part in &manifest.parts {
            parts.push(store.read_part(part).await.map_err(err)?);
        }
        let layout = Layout {
            worker: self.me(),
            workers: self.cluster.workers(),
            key_groups: self.app.key_groups,
        };
        Restored::decode(&self.app.name, &parts, layout).map_err(|source| RestoreError::Decode { checkpoint, source })
    }

    /// Checkpoint `checkpoint` of `generation` is complete: its egress may leave, and durable
    /// acknowledgements waiting for it can be given.
    pub fn completed(&self, generation: u64, checkpoint: u64) {
        if let Some(w) = self.current()
            && w.generation == generation
        {
            let _ = w.router.send(Input::Completed(checkpoint));
        }
        self.progress.send_if_modified(|p| {
            let newer = p.generation == generation && checkpoint > p.completed;
            if newer {
                p.completed = checkpoint;
            }
            newer
        });
    }

    /// Waits up to `timeout` for the process to be told to stop; true if it was.
    pub async fn stopped_within(&self, timeout: Duration) -> bool {
        let mut s = self.shutdown.clone();
        tokio::time::timeout(timeout, s.wait_for(|s| *s)).await.is_ok()
    }
}
