//! What a worker process keeps across generations, and the switch from one generation to the
//! next: rollback (`restore`) and completion happen here. The servers never hold a generation;
//! they read the running one from [`Current`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tokio::sync::{Mutex, watch};

use crate::checkpoint::Progress;
use crate::checkpoint::coordinator::{Member, MemberFuture, RestoreFailure};
use crate::checkpoint::restore::{self, Restored};
use crate::generation::{Context, Generation};
use crate::inbox::{Current, Entry};
use crate::poison::{InFlight, MessageId};
use crate::stop::CancellationToken;

pub use crate::checkpoint::restore::RestoreError;

pub(crate) struct Process {
    ctx: Context,
    /// New for every process: tells the coordinator that a worker lost its memory.
    pub incarnation: u64,
    /// The running generation; the lock also makes restores one at a time.
    running: Mutex<Option<Generation>>,
    /// The running generation as servers see it.
    current_tx: watch::Sender<Option<Entry>>,
    pub current: Current,
    pub progress: watch::Sender<Progress>,
    /// Served at `/readyz`: false while restoring and once shutdown begins.
    pub ready: Arc<AtomicBool>,
    /// False once the worker stops taking input (a clean stop): ingresses refuse, sources of
    /// this and later generations do not read.
    pub accepting: watch::Sender<bool>,
    /// The final checkpoint of a stopping worker, once the coordinator says it may exit.
    pub exit: watch::Sender<Option<u64>>,
    /// What `/healthz` answers.
    pub health: Arc<crate::health::Health>,
    shutdown: CancellationToken,
}

impl Process {
    pub fn new(ctx: Context, shutdown: CancellationToken) -> Process {
        let incarnation = crate::clock::now_ms() ^ (u64::from(std::process::id()) << 44);
        let (current_tx, current) = Current::new(shutdown.clone());
        let health = ctx.health.clone();
        Process {
            ctx,
            incarnation,
            running: Mutex::new(None),
            current_tx,
            current,
            progress: watch::channel(Progress::default()).0,
            ready: Arc::new(AtomicBool::new(false)),
            accepting: watch::channel(true).0,
            exit: watch::channel(None).0,
            health,
            shutdown,
        }
    }

    /// Rollback: drops the current generation — its state, queues, in-flight invocations,
    /// held egress and peer streams — and starts `generation` from `checkpoint` (0: empty),
    /// with the `poison` messages set aside as dead letters.
    /// Idempotent: a worker already at `generation` (or newer) does nothing.
    pub async fn restore(&self, generation: u64, checkpoint: u64, poison: &[MessageId]) -> Result<(), RestoreError> {
        let mut running = self.running.lock().await;
        if self.progress.borrow().generation >= generation && running.is_some() {
            return Ok(());
        }
        let started = Instant::now();
        self.ready.store(false, Ordering::Release);
        self.current_tx.send_replace(None);
        if let Some(old) = running.take() {
            old.stop().await;
        }
        let Restored {
            capture,
            chains,
            bytes_read,
        } = self.load(checkpoint).await?;
        let counts = (capture.state.addresses(), capture.messages.len(), capture.egress.len());
        self.ctx.metrics.restore_read_bytes.inc_by(bytes_read);
        let new = Generation::start(
            &self.ctx,
            generation,
            capture,
            chains,
            poison,
            &self.shutdown,
            *self.accepting.borrow(),
        );
        self.current_tx.send_replace(Some(new.entry()));
        *running = Some(new);
        self.progress.send_modify(|p| {
            *p = Progress {
                generation,
                restored: checkpoint,
                completed: checkpoint.max(if p.generation == generation { p.completed } else { 0 }),
            }
        });
        let m = &self.ctx.metrics;
        m.generation.set(generation as i64);
        m.restore_seconds.observe(started.elapsed().as_secs_f64());
        if !self.shutdown.is_cancelled() {
            self.ready.store(true, Ordering::Release);
        }
        tracing::info!(
            generation,
            checkpoint,
            addresses = counts.0,
            messages = counts.1,
            egress = counts.2,
            bytes_read,
            ms = started.elapsed().as_millis() as u64,
            "restored"
        );
        Ok(())
    }

    /// What this worker resumes from: its share of `checkpoint` (the key groups it owns).
    async fn load(&self, checkpoint: u64) -> Result<Restored, RestoreError> {
        let layout = self.ctx.cluster.layout(self.ctx.app.key_groups);
        if checkpoint == 0 {
            return Ok(Restored::empty(layout.key_groups));
        }
        let store = self.ctx.store.as_ref().ok_or(RestoreError::NoStore(checkpoint))?;
        restore::load(store, checkpoint, &self.ctx.app.identity(), layout).await
    }

    /// Checkpoint `checkpoint` of `generation` is complete: its egress may leave, and durable
    /// acknowledgements waiting for it can be given.
    pub fn completed(&self, generation: u64, checkpoint: u64) {
        if let Some(e) = self.current.now()
            && e.generation == generation
        {
            let _ = e.inbox.completed(checkpoint);
        }
        self.progress.send_if_modified(|p| {
            let newer = p.generation == generation && checkpoint > p.completed;
            if newer {
                p.completed = checkpoint;
                self.ctx
                    .metrics
                    .last_checkpoint_time
                    .set((crate::clock::now_ms() / 1000) as i64);
            }
            newer
        });
    }

    /// Stops taking input: the HTTP ingress refuses new records, sources stop reading (in this
    /// generation and any later one). What was accepted is still processed.
    pub async fn stop_input(&self) {
        self.accepting.send_replace(false);
        if let Some(g) = self.running.lock().await.as_ref() {
            g.stop_input();
        }
    }

    /// Stops the running generation (at shutdown).
    pub async fn stop(&self) {
        self.ready.store(false, Ordering::Release);
        self.current_tx.send_replace(None);
        if let Some(g) = self.running.lock().await.take() {
            g.stop().await;
        }
    }
}

/// This process, as the coordinator commands it.
pub(crate) struct Local(pub Arc<Process>);

impl Member for Local {
    fn restore(
        &self,
        generation: u64,
        checkpoint: u64,
        poison: Arc<[MessageId]>,
    ) -> MemberFuture<Result<u64, RestoreFailure>> {
        let p = self.0.clone();
        Box::pin(async move {
            p.restore(generation, checkpoint, &poison)
                .await
                .map(|()| p.incarnation)
                .map_err(|e| {
                    if e.is_damage() {
                        RestoreFailure::Damaged(e.to_string())
                    } else {
                        RestoreFailure::Failed(e.to_string())
                    }
                })
        })
    }

    fn completed(&self, generation: u64, checkpoint: u64) -> MemberFuture<()> {
        self.0.completed(generation, checkpoint);
        Box::pin(async {})
    }

    fn ping(
        &self,
        generation: u64,
        _timeout: std::time::Duration,
    ) -> MemberFuture<Result<(u64, Vec<InFlight>), String>> {
        self.0.health.heard(generation, self.0.progress.borrow().generation);
        let board = self.0.ctx.in_flight.read();
        Box::pin(async { Ok(board) })
    }

    fn exit(&self, _generation: u64, checkpoint: u64) -> MemberFuture<()> {
        self.0.exit.send_replace(Some(checkpoint));
        Box::pin(async {})
    }
}
