//! The coordinator's task: timers and I/O around the pure [`Core`]. It turns ticks, RPCs and
//! the results of its own chores into [`Event`]s, asks the core, and performs the commands:
//! restores (retried until done, abandoned by a newer rollback), triggers at its own
//! partition, manifest writes, completion announcements and retention.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::core::{Command, Core, Settings};
use super::{Event, Member, RestoreFailure};
use crate::checkpoint::manifest::Manifest;
use crate::checkpoint::store::{CheckpointStore, StoreError};
use crate::clock::now_ms;
use crate::inbox::Current;
use crate::metrics::Metrics;
use crate::stop::{CancellationToken, pause};

pub(crate) struct Coordinator {
    pub settings: Settings,
    pub events: mpsc::UnboundedReceiver<Event>,
    /// To hand the results of chores back to the loop.
    pub tx: mpsc::UnboundedSender<Event>,
    /// Every worker, by index (this one included).
    pub members: Vec<Arc<dyn Member>>,
    /// This worker's index (its partition takes the triggers).
    pub me: u32,
    /// This worker's running generation, for triggers.
    pub current: Current,
    /// `None` when checkpoints are off.
    pub store: Option<CheckpointStore>,
    pub retained: usize,
    pub metrics: Arc<Metrics>,
    /// The last fallback past damaged checkpoints, for `/status`.
    pub data_loss: DataLossReport,
    /// The messages counted as possible poison, for `/status`.
    pub suspects: SuspectsReport,
    pub shutdown: CancellationToken,
    /// One span per checkpoint, trigger to completion or failure (tracing on).
    pub spans: crate::trace::CheckpointSpans,
}

/// A restore that fell back past completed checkpoints that no longer read back intact: what
/// they held after the restored one is lost (data loss, not a retry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DataLoss {
    /// The checkpoints lost: `lost_from..=lost_to`.
    pub lost_from: u64,
    pub lost_to: u64,
    /// The checkpoint restored instead.
    pub restored: u64,
    pub at_ms: u64,
}

/// Shared with the admin endpoint.
pub type DataLossReport = Arc<std::sync::Mutex<Option<DataLoss>>>;

/// Shared with the admin endpoint (`crate::poison`).
pub type SuspectsReport = Arc<std::sync::Mutex<Vec<crate::poison::Suspect>>>;

/// Checkpoints found damaged by a worker's restore, shared by the restore calls (which add)
/// and the lookups (which skip them).
type Damaged = Arc<std::sync::Mutex<BTreeSet<u64>>>;

impl Coordinator {
    pub async fn run(mut self) {
        let (mut core, mut commands) = Core::new(self.settings.clone(), Instant::now());
        if let Some(saved) = self.saved_suspects().await {
            commands.extend(core.resume_suspects(saved));
        }
        // Restore calls of the current rollback; a newer rollback aborts them.
        let mut restores = JoinSet::new();
        // Lookups, manifest writes, announcements and retention.
        let mut chores = JoinSet::new();
        // Held by a manifest write until it ended; a rollback's lookup takes it first, so a
        // manifest cannot land after the lookup listed the storage (it would complete a
        // checkpoint the new generation did not restore).
        let fence = Arc::new(tokio::sync::Mutex::new(()));
        // The poison counts, saved whenever they change (the latest value wins).
        let (saved_tx, saved_rx) = tokio::sync::watch::channel(None::<bytes::Bytes>);
        if let Some(store) = self.store.clone() {
            chores.spawn(save_suspects(store, saved_rx));
        }
        let mut saved_version = core.suspects_version();
        // Checkpoints a restore found damaged: the next lookups skip them.
        let damaged: Damaged = Arc::default();
        self.perform(&core, commands, &mut restores, &mut chores, &fence, &damaged);
        let period = self.settings.interval.unwrap_or(Duration::from_secs(3600));
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Heartbeats, and the look for silent workers, four times per failure timeout.
        let beat = (self.settings.failure_timeout / 4).max(Duration::from_millis(25));
        let mut watch = tokio::time::interval(beat);
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let eager = core.eager_start();
            let event = tokio::select! {
                Some(ev) = self.events.recv() => ev,
                _ = ticker.tick() => Event::Tick,
                _ = watch.tick() => {
                    self.heartbeat(core.generation(), &mut chores);
                    Event::Watch
                }
                _ = tokio::time::sleep_until(eager.unwrap_or_else(Instant::now).into()), if eager.is_some() => Event::Eager,
                Some(_) = restores.join_next(), if !restores.is_empty() => continue,
                Some(_) = chores.join_next(), if !chores.is_empty() => continue,
                _ = self.shutdown.cancelled() => return,
            };
            let watch = matches!(event, Event::Watch);
            if watch {
                // Judge silence only after reading every answer that is waiting: `select!`
                // picks among ready branches at random, and after this task was starved of
                // CPU the watch tick and a queue of heartbeat answers are ready together.
                while let Ok(ev) = self.events.try_recv() {
                    let commands = core.on(ev, Instant::now());
                    self.perform(&core, commands, &mut restores, &mut chores, &fence, &damaged);
                }
            }
            let commands = core.on(event, Instant::now());
            if watch || commands.iter().any(|c| matches!(c, Command::RollbackStarted { .. })) {
                *self.suspects.lock().expect("suspects report lock") = core.suspects();
            }
            if core.suspects_version() != saved_version {
                saved_version = core.suspects_version();
                if let Ok(json) = serde_json::to_vec(&core.saved_suspects()) {
                    saved_tx.send_replace(Some(json.into()));
                }
            }
            self.perform(&core, commands, &mut restores, &mut chores, &fence, &damaged);
        }
    }

    /// The poison counts a previous coordinator saved (`None`: none, or storage did not
    /// answer in time — counting then starts afresh, which costs rollbacks, not correctness).
    async fn saved_suspects(&self) -> Option<crate::poison::Saved> {
        if self.settings.poison_after == 0 {
            return None;
        }
        let store = self.store.as_ref()?;
        match tokio::time::timeout(Duration::from_secs(5), store.read_suspects()).await {
            Ok(Ok(Some(bytes))) => match serde_json::from_slice(&bytes) {
                Ok(saved) => Some(saved),
                Err(e) => {
                    tracing::warn!(error = %e, "the saved poison counts do not parse; counting afresh");
                    None
                }
            },
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the saved poison counts; counting afresh");
                None
            }
            Err(_) => {
                tracing::warn!("reading the saved poison counts took over 5 s; counting afresh");
                None
            }
        }
    }

    /// Pings every worker (this one too, for its messages in flight); an answer is an
    /// `Event::Heard` and an `Event::InFlight`. A ping that gets no answer within the failure
    /// timeout is simply not heard. A late answer still counts: on a starved node a healthy
    /// worker may take longer than one beat to answer, and giving up on its pings early turned
    /// slowness into false suspicions (rollbacks in a loop at load 20-30 on two cores).
    fn heartbeat(&self, generation: u64, chores: &mut JoinSet<()>) {
        let timeout = self.settings.failure_timeout;
        for (w, member) in self.members.iter().enumerate() {
            let worker = w as u32;
            let (member, tx) = (member.clone(), self.tx.clone());
            chores.spawn(async move {
                if let Ok((generation, messages)) = member.ping(generation, timeout).await {
                    let _ = tx.send(Event::Heard { worker });
                    let _ = tx.send(Event::InFlight {
                        worker,
                        generation,
                        messages,
                    });
                }
            });
        }
    }

    fn perform(
        &self,
        core: &Core,
        commands: Vec<Command>,
        restores: &mut JoinSet<()>,
        chores: &mut JoinSet<()>,
        fence: &Arc<tokio::sync::Mutex<()>>,
        damaged: &Damaged,
    ) {
        for command in commands {
            match command {
                Command::RollbackStarted { why } => {
                    self.metrics.rollbacks.inc();
                    tracing::info!(why, "rolling back");
                }
                Command::Poisoned { messages } => {
                    for (id, target) in messages {
                        self.metrics.poison_detected.inc();
                        tracing::warn!(
                            target = %target,
                            id = format!("{id:016x}"),
                            rollbacks = self.settings.poison_after,
                            "a message was in flight at every one of the last rollbacks: the restore sets it aside as a dead letter"
                        );
                    }
                }
                Command::CancelRestores => restores.abort_all(),
                Command::Choose => {
                    let (store, tx, shutdown, metrics) = (
                        self.store.clone(),
                        self.tx.clone(),
                        self.shutdown.clone(),
                        self.metrics.clone(),
                    );
                    let previous = core.generation();
                    let (fence, data_loss, damaged) = (fence.clone(), self.data_loss.clone(), damaged.clone());
                    chores.spawn(async move {
                        let waited = Instant::now();
                        let _fence = fence.lock().await;
                        if waited.elapsed() > Duration::from_millis(50) {
                            tracing::info!(ms = waited.elapsed().as_millis() as u64, "rollback waited for a manifest write in flight");
                        }
                        loop {
                            let skip = damaged.lock().expect("damaged set lock").clone();
                            match choose(store.as_ref(), previous, &metrics, &data_loss, &skip).await {
                                Ok((generation, checkpoint, highest)) => {
                                    tracing::info!(generation, checkpoint, "rollback: restoring");
                                    let _ = tx.send(Event::Chosen {
                                        generation,
                                        checkpoint,
                                        highest,
                                    });
                                    return;
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "cannot roll back yet: the checkpoint store is unavailable; retrying");
                                }
                            }
                            if !pause(&shutdown, Duration::from_millis(500)).await {
                                return;
                            }
                        }
                    });
                }
                Command::Restore {
                    worker,
                    generation,
                    checkpoint,
                    poison,
                } => {
                    let poison: Arc<[crate::poison::MessageId]> = poison.into();
                    let (member, tx, shutdown, damaged) = (
                        self.members[worker as usize].clone(),
                        self.tx.clone(),
                        self.shutdown.clone(),
                        damaged.clone(),
                    );
                    restores.spawn(async move {
                        loop {
                            match member.restore(generation, checkpoint, poison.clone()).await {
                                Ok(incarnation) => {
                                    let _ = tx.send(Event::Restored {
                                        worker,
                                        generation,
                                        incarnation,
                                    });
                                    return;
                                }
                                Err(RestoreFailure::Damaged(reason)) => {
                                    tracing::error!(worker, checkpoint, reason, "a worker found the checkpoint it restores damaged; rolling back to an older one");
                                    damaged.lock().expect("damaged set lock").insert(checkpoint);
                                    let _ = tx.send(Event::Damaged { generation, checkpoint });
                                    return;
                                }
                                Err(RestoreFailure::Failed(e)) => {
                                    tracing::debug!(worker, error = %e, "restore not done yet; retrying")
                                }
                            }
                            if !pause(&shutdown, Duration::from_millis(20)).await {
                                return;
                            }
                        }
                    });
                }
                Command::Running {
                    generation,
                    checkpoint,
                    took,
                } => {
                    self.metrics.recovery_seconds.observe(took.as_secs_f64());
                    tracing::info!(
                        generation,
                        checkpoint,
                        ms = took.as_millis() as u64,
                        "every worker restored: running"
                    );
                }
                Command::Trigger { generation, checkpoint } => {
                    self.spans.triggered(generation, checkpoint);
                    let triggered = self
                        .current
                        .now()
                        .filter(|e| e.generation == generation)
                        .is_some_and(|e| e.inbox.trigger(checkpoint).is_ok());
                    if !triggered {
                        let _ = self.tx.send(Event::Part {
                            generation,
                            checkpoint,
                            worker: self.me,
                            result: Err("the coordinator's own generation is not running".into()),
                            clean: false,
                        });
                    }
                }
                Command::WriteManifest(manifest) => {
                    let store = self.store.clone().expect("checkpoints are on");
                    let tx = self.tx.clone();
                    let manifest = Manifest {
                        created_at_ms: now_ms(),
                        ..manifest
                    };
                    let held = fence.clone().try_lock_owned();
                    let fence = fence.clone();
                    chores.spawn(async move {
                        let _fence = match held {
                            Ok(guard) => guard,
                            Err(_) => fence.lock_owned().await,
                        };
                        let (generation, checkpoint, bytes) =
                            (manifest.generation, manifest.checkpoint, manifest.bytes);
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
                Command::Completed {
                    generation,
                    checkpoint,
                    bytes,
                    took,
                } => {
                    let m = &self.metrics;
                    m.checkpoints_completed.inc();
                    m.checkpoint_seconds.observe(took.as_secs_f64());
                    m.last_checkpoint.set(checkpoint as i64);
                    m.checkpoint_bytes.set(bytes as i64);
                    self.spans.ended(checkpoint, Ok(bytes));
                    tracing::debug!(checkpoint, bytes, ms = took.as_millis() as u64, "checkpoint complete");
                    for member in &self.members {
                        chores.spawn(member.completed(generation, checkpoint));
                    }
                }
                Command::Failed { checkpoint, reason } => {
                    self.metrics.checkpoints_failed.inc();
                    self.spans.ended(checkpoint, Err(&reason));
                    tracing::warn!(checkpoint, reason, "checkpoint failed; the next interval tries again");
                }
                Command::Exit {
                    workers,
                    generation,
                    checkpoint,
                } => {
                    tracing::info!(
                        ?workers,
                        checkpoint,
                        "final checkpoint of stopping workers complete: they exit"
                    );
                    let (others, me): (Vec<_>, Vec<_>) = workers.into_iter().partition(|w| *w != self.me);
                    let others: Vec<_> = others.into_iter().map(|w| self.members[w as usize].clone()).collect();
                    let local = me.first().map(|_| self.members[self.me as usize].clone());
                    // The others first: once this worker exits, nobody would tell them.
                    chores.spawn(async move {
                        let mut calls = JoinSet::new();
                        for m in others {
                            calls.spawn(m.exit(generation, checkpoint));
                        }
                        calls.join_all().await;
                        if let Some(local) = local {
                            local.exit(generation, checkpoint).await;
                        }
                    });
                }
                Command::Retain => {
                    let store = self.store.clone().expect("checkpoints are on");
                    let keep = self.retained.max(1);
                    chores.spawn(async move {
                        match store.retain(keep).await {
                            Ok(0) => {}
                            Ok(n) => tracing::debug!(deleted = n, "old checkpoints deleted"),
                            Err(e) => tracing::warn!(error = %e, "deleting old checkpoints failed; trying again later"),
                        }
                    });
                }
            }
        }
    }
}

/// Writes the latest poison counts whenever they change (one write at a time; what changed
/// meanwhile is written next).
async fn save_suspects(store: CheckpointStore, mut saved: tokio::sync::watch::Receiver<Option<bytes::Bytes>>) {
    while saved.changed().await.is_ok() {
        let Some(bytes) = saved.borrow_and_update().clone() else {
            continue;
        };
        if let Err(e) = store.write_suspects(bytes).await {
            tracing::warn!(error = %e, "saving the poison counts failed; the next change tries again");
        }
    }
}

/// The next generation (persisted first, so a restarted coordinator goes higher) and the
/// newest checkpoint whose parts all read back intact; also the highest checkpoint id in
/// storage.
async fn choose(
    store: Option<&CheckpointStore>,
    previous: u64,
    metrics: &Metrics,
    data_loss: &DataLossReport,
    skip: &BTreeSet<u64>,
) -> Result<(u64, u64, u64), StoreError> {
    let Some(store) = store else {
        // Without checkpoints, generations only need to grow within this process's life
        // and past an earlier coordinator's: the clock does both.
        return Ok((now_ms().max(previous + 1), 0, 0));
    };
    let generation = store.read_generation().await?.max(previous) + 1;
    store.write_generation(generation).await?;
    let latest = store.latest_valid(skip).await?;
    let checkpoint = latest.as_ref().map_or(0, |l| l.manifest.checkpoint);
    let highest = latest
        .as_ref()
        .and_then(|l| l.damaged.first().copied())
        .unwrap_or(checkpoint);
    if let Some(l) = latest.filter(|l| !l.damaged.is_empty()) {
        metrics.checkpoints_damaged.inc_by(l.damaged.len() as u64);
        metrics.checkpoint_data_loss.inc();
        let loss = DataLoss {
            lost_from: checkpoint + 1,
            lost_to: highest,
            restored: checkpoint,
            at_ms: now_ms(),
        };
        // Completed checkpoints are read back before their manifest is written, so this is
        // damage after completion (storage lost or changed objects): what those checkpoints
        // acknowledged and released is gone from the restored state.
        tracing::error!(
            damaged = ?l.damaged,
            lost_from = loss.lost_from,
            lost_to = loss.lost_to,
            restoring = checkpoint,
            "DATA LOSS: completed checkpoints no longer read back intact; restoring an older one"
        );
        *data_loss.lock().expect("data-loss report lock") = Some(loss);
    }
    Ok((generation, checkpoint, highest))
}
