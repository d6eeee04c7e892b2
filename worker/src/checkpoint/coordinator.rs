//! The coordinator (worker 0) drives checkpoints and rollbacks.
//!
//! Phases: `Rolling` (a rollback to generation `g` is under way: every worker is being told to
//! restore) → `Running` (every worker restored `g`; checkpoints are triggered every interval).
//! A checkpoint `n` starts at the coordinator's own partition (`Input::Trigger`); barriers carry
//! it to every worker; each reports its part; the coordinator writes the manifest last, and only
//! then is `n` complete and announced. A worker that (re)starts joins with a new incarnation,
//! which means its memory is gone: the application rolls back to the newest intact checkpoint
//! under a new generation.
//!
//! Group commit (`checkpoint.minPause`): workers tell the coordinator when something waits for
//! a checkpoint (a durable acknowledgement, held egress), once per epoch; the next checkpoint
//! then starts `minPause` after the previous one ended instead of at the next tick.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::manifest::Manifest;
use super::store::PartInfo;
use crate::clock::now_ms;
use crate::node::Node;
use crate::partition::Input;
use crate::peer::proto::{Completed, Restore, control_request};

#[derive(Debug)]
pub enum Event {
    /// A worker process started (or restarted) with an empty memory.
    Join { worker: u32, incarnation: u64 },
    /// A worker's part of a checkpoint was written, or failed.
    Part {
        generation: u64,
        checkpoint: u64,
        worker: u32,
        result: Result<PartInfo, String>,
    },
    /// Internal: a worker restored `generation`.
    Restored {
        worker: u32,
        generation: u64,
        incarnation: u64,
    },
    /// Internal: the manifest write of a checkpoint ended.
    Manifest {
        generation: u64,
        checkpoint: u64,
        result: Result<u64, String>,
    },
    /// Group commit: something on a worker waits for `checkpoint` to complete.
    Want { generation: u64, checkpoint: u64 },
}

struct InProgress {
    checkpoint: u64,
    started: Instant,
    parts: BTreeMap<u32, PartInfo>,
    writing: bool,
}

pub struct Coordinator {
    node: Arc<Node>,
    events: mpsc::UnboundedReceiver<Event>,
    /// To hand internal events back to the loop.
    tx: mpsc::UnboundedSender<Event>,
    interval: Option<Duration>,
    /// Group commit: the pause after a checkpoint ends before a wanted one starts.
    min_pause: Option<Duration>,
    retained: usize,
    generation: u64,
    restored_from: u64,
    rollback_started: Instant,
    /// Workers not yet restored in this generation.
    pending: HashSet<u32>,
    /// Incarnation of each worker at its last restore.
    incarnations: Vec<Option<u64>>,
    next_checkpoint: u64,
    /// The highest checkpoint a worker waits for in this generation (group commit).
    wanted: u64,
    /// When the last checkpoint completed or failed (or the rollback began).
    last_end: Instant,
    in_progress: Option<InProgress>,
    /// Restore calls of the current rollback; a newer rollback aborts them.
    restores: JoinSet<()>,
    /// Manifest writes, announcements and retention.
    chores: JoinSet<()>,
}

impl Coordinator {
    pub fn new(
        node: Arc<Node>,
        events: mpsc::UnboundedReceiver<Event>,
        tx: mpsc::UnboundedSender<Event>,
        interval: Option<Duration>,
        min_pause: Option<Duration>,
        retained: usize,
    ) -> Coordinator {
        let workers = node.cluster.workers() as usize;
        Coordinator {
            node,
            events,
            tx,
            interval,
            min_pause: min_pause.filter(|_| interval.is_some()),
            retained,
            generation: 0,
            restored_from: 0,
            rollback_started: Instant::now(),
            pending: HashSet::new(),
            incarnations: vec![None; workers],
            next_checkpoint: 1,
            wanted: 0,
            last_end: Instant::now(),
            in_progress: None,
            restores: JoinSet::new(),
            chores: JoinSet::new(),
        }
    }

    pub async fn run(mut self) {
        let mut shutdown = self.node.shutdown.clone();
        if !self.rollback("start").await {
            return;
        }
        let period = self.interval.unwrap_or(Duration::from_secs(3600));
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let eager = self.eager_start();
            let ev = tokio::select! {
                Some(ev) = self.events.recv() => ev,
                _ = ticker.tick() => {
                    self.tick();
                    continue;
                }
                _ = tokio::time::sleep_until(eager.unwrap_or_else(Instant::now).into()), if eager.is_some() => {
                    self.start();
                    continue;
                }
                Some(_) = self.restores.join_next(), if !self.restores.is_empty() => continue,
                Some(_) = self.chores.join_next(), if !self.chores.is_empty() => continue,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            if !self.on_event(ev).await {
                return;
            }
        }
    }

    /// Returns false when the worker is shutting down.
    async fn on_event(&mut self, ev: Event) -> bool {
        match ev {
            Event::Join { worker, incarnation } => {
                let known = self.incarnations.get(worker as usize).copied().flatten();
                if self.pending.contains(&worker) || known == Some(incarnation) {
                    // A restore is on its way to it, or it is the process we restored.
                    return true;
                }
                tracing::warn!(
                    worker,
                    incarnation,
                    "a worker restarted and lost its memory: rolling back"
                );
                return self.rollback("worker restarted").await;
            }
            Event::Restored {
                worker,
                generation,
                incarnation,
            } => {
                if generation != self.generation {
                    return true;
                }
                self.incarnations[worker as usize] = Some(incarnation);
                if self.pending.remove(&worker) && self.pending.is_empty() {
                    let ms = self.rollback_started.elapsed().as_millis() as u64;
                    self.node.metrics.recovery_seconds.observe(ms as f64 / 1000.0);
                    tracing::info!(
                        generation,
                        checkpoint = self.restored_from,
                        ms,
                        "every worker restored: running"
                    );
                }
            }
            Event::Part {
                generation,
                checkpoint,
                worker,
                result,
            } => {
                let Some(p) = self.in_progress.as_mut().filter(|p| p.checkpoint == checkpoint) else {
                    return true;
                };
                if generation != self.generation {
                    return true;
                }
                match result {
                    Ok(info) => {
                        p.parts.insert(worker, info);
                        if p.parts.len() == self.node.cluster.workers() as usize && !p.writing {
                            p.writing = true;
                            self.write_manifest(checkpoint);
                        }
                    }
                    Err(reason) => self.fail(&format!("worker {worker} could not write its part: {reason}")),
                }
            }
            Event::Want { generation, checkpoint } => {
                if generation == self.generation {
                    self.wanted = self.wanted.max(checkpoint);
                }
            }
            Event::Manifest {
                generation,
                checkpoint,
                result,
            } => {
                if generation != self.generation || self.in_progress.as_ref().is_none_or(|p| p.checkpoint != checkpoint)
                {
                    return true;
                }
                match result {
                    Ok(bytes) => self.complete(checkpoint, bytes),
                    Err(reason) => self.fail(&format!("writing the manifest failed: {reason}")),
                }
            }
        }
        true
    }

    fn tick(&mut self) {
        if let Some(p) = &self.in_progress {
            let limit = Duration::from_secs(10) + self.interval.unwrap_or_default() * 10;
            if p.started.elapsed() > limit {
                self.fail(&format!("not complete after {limit:?}"));
            }
            return;
        }
        self.start();
    }

    /// When group commit starts the next checkpoint: a worker waits for one not yet started.
    /// A failed checkpoint is not retried early (the store may be down): `wanted` then
    /// names a started one, and the next tick starts the retry.
    fn eager_start(&self) -> Option<Instant> {
        let pause = self.min_pause?;
        (self.in_progress.is_none() && self.pending.is_empty() && self.wanted >= self.next_checkpoint)
            .then(|| self.last_end + pause)
    }

    fn start(&mut self) {
        if self.interval.is_none() || self.in_progress.is_some() || !self.pending.is_empty() {
            return;
        }
        let Some(world) = self.node.current().filter(|w| w.generation == self.generation) else {
            return;
        };
        let n = self.next_checkpoint;
        self.next_checkpoint += 1;
        self.in_progress = Some(InProgress {
            checkpoint: n,
            started: Instant::now(),
            parts: BTreeMap::new(),
            writing: false,
        });
        let _ = world.router.send(Input::Trigger(n));
    }

    fn fail(&mut self, reason: &str) {
        if let Some(p) = self.in_progress.take() {
            self.last_end = Instant::now();
            self.node.metrics.checkpoints_failed.inc();
            tracing::warn!(
                checkpoint = p.checkpoint,
                reason,
                "checkpoint failed; the next interval tries again"
            );
        }
    }

    fn write_manifest(&mut self, checkpoint: u64) {
        let p = self.in_progress.as_ref().expect("called with a checkpoint in progress");
        let bytes = p.parts.values().map(|i| i.size).sum();
        let manifest = Manifest {
            application: self.node.app.name.clone(),
            checkpoint,
            generation: self.generation,
            workers: self.node.cluster.workers(),
            key_groups: self.node.app.key_groups,
            parts: p.parts.values().cloned().collect(),
            created_at_ms: now_ms(),
            duration_ms: p.started.elapsed().as_millis() as u64,
            bytes,
        };
        let store = self.node.store.clone().expect("checkpoints are on");
        let tx = self.tx.clone();
        let generation = self.generation;
        self.chores.spawn(async move {
            let result = store
                .put_manifest(&manifest)
                .await
                .map(|_| bytes)
                .map_err(|e| e.to_string());
            let _ = tx.send(Event::Manifest {
                generation,
                checkpoint,
                result,
            });
        });
    }

    fn complete(&mut self, checkpoint: u64, bytes: u64) {
        let p = self.in_progress.take().expect("checked by the caller");
        self.last_end = Instant::now();
        let took = p.started.elapsed();
        let m = &self.node.metrics;
        m.checkpoints_completed.inc();
        m.checkpoint_seconds.observe(took.as_secs_f64());
        m.last_checkpoint.set(checkpoint as i64);
        m.checkpoint_bytes.set(bytes as i64);
        tracing::debug!(checkpoint, bytes, ms = took.as_millis() as u64, "checkpoint complete");
        let g = self.generation;
        self.node.completed(g, checkpoint);
        for w in 0..self.node.cluster.workers() {
            if w == self.node.me() {
                continue;
            }
            let node = self.node.clone();
            // Best effort: a worker that misses it releases its egress with the next one.
            self.chores.spawn(async move {
                let kind = control_request::Kind::Completed(Completed {
                    generation: g,
                    checkpoint,
                });
                let _ = node.control.call(w, kind, Duration::from_secs(2)).await;
            });
        }
        if checkpoint % 4 == 0 {
            let store = self.node.store.clone().expect("checkpoints are on");
            let keep = self.retained.max(1);
            self.chores.spawn(async move {
                match store.retain(keep).await {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(deleted = n, "old checkpoints deleted"),
                    Err(e) => tracing::warn!(error = %e, "deleting old checkpoints failed; trying again later"),
                }
            });
        }
    }

    /// A new generation from the newest intact checkpoint; every worker is told to restore it.
    /// Returns false when the worker is shutting down first.
    async fn rollback(&mut self, why: &str) -> bool {
        self.rollback_started = Instant::now();
        self.restores.abort_all();
        self.in_progress = None;
        self.wanted = 0;
        self.last_end = Instant::now();
        self.node.metrics.rollbacks.inc();
        let (generation, checkpoint, highest) = loop {
            match self.choose().await {
                Ok(x) => break x,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot roll back yet: the checkpoint store is unavailable; retrying");
                    if self.node.stopped_within(Duration::from_millis(500)).await {
                        return false;
                    }
                }
            }
        };
        tracing::info!(generation, checkpoint, why, "rolling back");
        self.generation = generation;
        self.restored_from = checkpoint;
        // Past damaged checkpoints too: their manifests exist and are never overwritten.
        self.next_checkpoint = self.next_checkpoint.max(highest + 1);
        let workers = self.node.cluster.workers();
        self.pending = (0..workers).collect();
        for w in 0..workers {
            let node = self.node.clone();
            let tx = self.tx.clone();
            self.restores.spawn(async move {
                loop {
                    let result = if w == node.me() {
                        node.restore(generation, checkpoint)
                            .await
                            .map(|_| node.incarnation)
                            .map_err(|e| e.to_string())
                    } else {
                        let kind = control_request::Kind::Restore(Restore { generation, checkpoint });
                        match node.control.call(w, kind, Duration::from_secs(120)).await {
                            Ok(r) if r.generation == generation => Ok(r.incarnation),
                            Ok(r) => Err(format!("answered for generation {}", r.generation)),
                            Err(status) => Err(status.to_string()),
                        }
                    };
                    match result {
                        Ok(incarnation) => {
                            let _ = tx.send(Event::Restored {
                                worker: w,
                                generation,
                                incarnation,
                            });
                            return;
                        }
                        Err(e) => tracing::debug!(worker = w, error = %e, "restore not done yet; retrying"),
                    }
                    if node.stopped_within(Duration::from_millis(20)).await {
                        return;
                    }
                }
            });
        }
        true
    }

    /// The next generation (persisted first, so a restarted coordinator goes higher) and the
    /// newest checkpoint whose parts all read back intact.
    /// Also returns the highest checkpoint id in storage.
    async fn choose(&self) -> Result<(u64, u64, u64), super::store::StoreError> {
        let Some(store) = &self.node.store else {
            // Without checkpoints, generations only need to grow within this process's life
            // and past an earlier coordinator's: the clock does both.
            return Ok((now_ms().max(self.generation + 1), 0, 0));
        };
        let generation = store.read_generation().await?.max(self.generation) + 1;
        store.write_generation(generation).await?;
        let latest = store.latest_valid().await?;
        let checkpoint = latest.as_ref().map_or(0, |l| l.manifest.checkpoint);
        let highest = latest
            .as_ref()
            .and_then(|l| l.damaged.first().copied())
            .unwrap_or(checkpoint);
        if let Some(l) = latest.filter(|l| !l.damaged.is_empty()) {
            self.node.metrics.checkpoints_damaged.inc_by(l.damaged.len() as u64);
            tracing::error!(damaged = ?l.damaged, restoring = checkpoint, "newer checkpoints are damaged; restoring an older one");
        }
        Ok((generation, checkpoint, highest))
    }
}
