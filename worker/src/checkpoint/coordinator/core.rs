//! The coordinator's decisions as a pure state machine: [`Core::on`] takes what happened
//! (an [`Event`] and the time) and returns what to do ([`Command`]s); the task
//! (`coordinator::task`) performs them and feeds their results back as events. No I/O, no
//! clock of its own: the table test drives it through whole protocols.
//!
//! Phases: `Choosing` (a rollback started: the next generation and the newest intact
//! checkpoint are being looked up) → `Restoring` (every worker is told to restore it) →
//! `Running` (checkpoints are triggered every interval, or after `minPause` when something
//! waits for one). A checkpoint `n` starts at the coordinator's own partition; every worker
//! reports its part; the manifest is written last, and only then is `n` complete and
//! announced. Checkpoints overlap by one stage: `n + 1` may start once every part of `n` is
//! written, while `n`'s manifest is (the task writes manifests one at a time, in order), and
//! completions are announced in checkpoint order. A worker that (re)starts joins with a new incarnation, which means its memory is
//! gone: the application rolls back under a new generation.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::Event;
use crate::checkpoint::manifest::{self, Manifest, PartInfo};
use crate::poison::{MessageId, Saved, Suspect, Suspects};

/// What the coordinator asks its task to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// A rollback began (count it, say why).
    RollbackStarted { why: String },
    /// Forget the restores of an earlier rollback.
    CancelRestores,
    /// Find the next generation (persisted before it is used) and the newest intact
    /// checkpoint; answer with [`Event::Chosen`].
    Choose,
    /// Tell `worker` to restore `checkpoint` in `generation` until it has; answer with
    /// [`Event::Restored`].
    Restore {
        worker: u32,
        generation: u64,
        checkpoint: u64,
        /// Messages to set aside as poison (`crate::poison`).
        poison: Vec<MessageId>,
    },
    /// These messages were in flight at `poisonAfterRollbacks` consecutive rollbacks: the
    /// restores set them aside (log it).
    Poisoned { messages: Vec<(MessageId, String)> },
    /// Every worker runs `generation`.
    Running {
        generation: u64,
        checkpoint: u64,
        took: Duration,
    },
    /// Start checkpoint `checkpoint` at the coordinator's own partition.
    Trigger { generation: u64, checkpoint: u64 },
    /// Every part is written: write the manifest; answer with [`Event::Manifest`].
    WriteManifest(Manifest),
    /// `checkpoint` is complete: release its egress and durable acknowledgements everywhere.
    Completed {
        generation: u64,
        checkpoint: u64,
        bytes: u64,
        took: Duration,
    },
    /// The checkpoint failed; the next interval tries again.
    Failed { checkpoint: u64, reason: String },
    /// Delete old checkpoints.
    Retain,
    /// These stopping workers may exit: `checkpoint` holds nothing of them left to send.
    Exit {
        workers: Vec<u32>,
        generation: u64,
        checkpoint: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Choosing,
    Restoring { pending: HashSet<u32> },
    Running,
}

#[derive(Debug)]
struct InProgress {
    checkpoint: u64,
    started: Instant,
    parts: BTreeMap<u32, PartInfo>,
    /// Workers whose part held an egress record.
    unclean: BTreeSet<u32>,
}

/// A checkpoint whose parts are all written and whose manifest is being written.
#[derive(Debug)]
struct Writing {
    checkpoint: u64,
    started: Instant,
    unclean: BTreeSet<u32>,
    /// The manifest write's result, once it came: a later checkpoint's may come before an
    /// earlier one's is known, and completions are announced in order.
    result: Option<Result<u64, String>>,
}

/// Manifests written or waiting to be, at most. With a slow store (a manifest PUT that takes
/// longer than the parts), more would only queue: latency, not throughput.
const MAX_WRITING: usize = 2;

/// What the coordinator needs to know of the application.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub application: String,
    pub namespace: Option<String>,
    pub uid: Option<String>,
    pub workers: u32,
    pub key_groups: u32,
    /// `None`: checkpoints off (rollbacks still happen, to an empty state).
    pub interval: Option<Duration>,
    /// Group commit: the pause after a checkpoint ends before a wanted one starts.
    pub min_pause: Option<Duration>,
    /// A worker not heard from for this long (heartbeats, reports) while the application runs
    /// is treated as failed: the others roll back without waiting for it to die.
    pub failure_timeout: Duration,
    /// This worker's index (it hears itself without a network).
    pub me: u32,
    /// `poisonAfterRollbacks` (0: off).
    pub poison_after: u32,
}

pub(crate) struct Core {
    settings: Settings,
    phase: Phase,
    generation: u64,
    restored_from: u64,
    rollback_started: Instant,
    /// Incarnation of each worker at its last restore.
    incarnations: Vec<Option<u64>>,
    next_checkpoint: u64,
    /// The highest checkpoint a worker waits for in this generation (group commit).
    wanted: u64,
    /// When the last checkpoint's parts were all written, or it failed (or the rollback
    /// began): `minPause` counts from there.
    last_end: Instant,
    /// The checkpoint whose parts are being written.
    in_progress: Option<InProgress>,
    /// Checkpoints whose manifests are being written, oldest first.
    writing: VecDeque<Writing>,
    /// Stopping workers, with the first checkpoint that can be their last: one started after
    /// they stopped their input.
    leaving: BTreeMap<u32, u64>,
    /// When each worker was last heard from (a heartbeat answered, a report received).
    heard: Vec<Instant>,
    /// Messages in flight at consecutive rollbacks.
    suspects: Suspects,
    /// The last look for silent workers (`Event::Watch`, every `failure_timeout / 4`).
    last_watch: Instant,
    /// When retention last ran.
    last_retain: Instant,
}

/// Retention runs after every this many completed checkpoints, and no more often than once
/// per checkpoint interval: it lists the storage, and under group commit hundreds of
/// checkpoints complete a second (listing every fourth took a tenth of a worker's CPU).
const RETAIN_EVERY: u64 = 4;

impl Core {
    /// A coordinator that starts by rolling back (the application's first generation).
    pub fn new(settings: Settings, now: Instant) -> (Core, Vec<Command>) {
        let workers = settings.workers as usize;
        let mut core = Core {
            phase: Phase::Choosing,
            generation: 0,
            restored_from: 0,
            rollback_started: now,
            incarnations: vec![None; workers],
            next_checkpoint: 1,
            wanted: 0,
            last_end: now,
            in_progress: None,
            writing: VecDeque::new(),
            leaving: BTreeMap::new(),
            heard: vec![now; workers],
            suspects: Suspects::new(settings.poison_after),
            settings,
            last_watch: now,
            last_retain: now,
        };
        let commands = core.rollback("start", now);
        (core, commands)
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The messages counted as possible poison, for `/status`.
    pub fn suspects(&self) -> Vec<Suspect> {
        self.suspects.status()
    }

    /// Changes whenever the counts worth saving change.
    pub fn suspects_version(&self) -> u64 {
        self.suspects.version()
    }

    pub fn saved_suspects(&self) -> Saved {
        self.suspects.saved()
    }

    /// A restarted coordinator resumes the counts its predecessor saved (before the start
    /// rollback's restores are sent).
    pub fn resume_suspects(&mut self, saved: Saved) -> Vec<Command> {
        let messages = self.suspects.resume(saved);
        if messages.is_empty() {
            return Vec::new();
        }
        vec![Command::Poisoned { messages }]
    }

    /// When the next checkpoint should start before the next tick, if it should: at once
    /// while workers are stopping (they wait for their final checkpoint), and `minPause` after
    /// the last one when group commit wants one.
    pub fn eager_start(&self) -> Option<Instant> {
        self.settings.interval?;
        let idle = !self.busy() && self.phase == Phase::Running;
        if idle && !self.leaving.is_empty() {
            return Some(self.last_end);
        }
        let pause = self.settings.min_pause?;
        (idle && self.wanted >= self.next_checkpoint).then(|| self.last_end + pause)
    }

    /// Whether a new checkpoint must wait: one is collecting parts, or enough manifests are
    /// being written.
    fn busy(&self) -> bool {
        self.in_progress.is_some() || self.writing.len() >= MAX_WRITING
    }

    /// The longest a checkpoint may take before it counts as failed.
    fn limit(&self) -> Duration {
        Duration::from_secs(10) + self.settings.interval.unwrap_or_default() * 10
    }

    pub fn on(&mut self, event: Event, now: Instant) -> Vec<Command> {
        if let Some(w) = event.sender() {
            self.hear(w, now);
        }
        match event {
            Event::Heard { .. } => Vec::new(),
            Event::InFlight {
                worker,
                generation,
                messages,
            } => {
                self.suspects.report(worker, generation, messages);
                Vec::new()
            }
            Event::Watch => self.on_watch(now),
            Event::Join { worker, incarnation } => self.on_join(worker, incarnation, now),
            Event::Chosen {
                generation,
                checkpoint,
                highest,
            } => self.on_chosen(generation, checkpoint, highest),
            Event::Restored {
                worker,
                generation,
                incarnation,
            } => self.on_restored(worker, generation, incarnation, now),
            Event::Tick => self.on_tick(now),
            Event::Eager => self.start(now),
            Event::Part {
                generation,
                checkpoint,
                worker,
                result,
                clean,
            } => self.on_part(generation, checkpoint, worker, result, clean, now),
            Event::Leaving { worker } => {
                if worker < self.settings.workers {
                    // Any checkpoint started from now on was triggered after its input stopped.
                    let first = self.next_checkpoint;
                    self.leaving.entry(worker).or_insert(first);
                }
                Vec::new()
            }
            Event::Want { generation, checkpoint } => {
                if generation == self.generation {
                    self.wanted = self.wanted.max(checkpoint);
                }
                Vec::new()
            }
            Event::Manifest {
                generation,
                checkpoint,
                result,
            } => self.on_manifest(generation, checkpoint, result, now),
            Event::Damaged { generation, checkpoint } => {
                let restoring = matches!(self.phase, Phase::Restoring { .. });
                if restoring && generation == self.generation && checkpoint == self.restored_from {
                    // The task remembers it, so the next lookup skips it.
                    self.rollback(&format!("checkpoint {checkpoint} is damaged"), now)
                } else {
                    Vec::new()
                }
            }
        }
    }

    fn hear(&mut self, worker: u32, now: Instant) {
        if let Some(t) = self.heard.get_mut(worker as usize) {
            *t = now;
        }
    }

    /// A worker silent for `failure_timeout` while the application runs has failed, even if
    /// its process lives (stopped, paused, cut off): roll back without it. Its restore then
    /// waits for it (or its replacement); when an old process wakes up, its generation is
    /// over, and nothing it does counts.
    fn on_watch(&mut self, now: Instant) -> Vec<Command> {
        // Watches come every failure timeout / 4. One much later than that means this
        // coordinator itself did not run (starved of CPU on a busy node, paused): the time it
        // could not watch is not the workers' silence — their answers may be waiting unread —
        // so it is forgiven (all but one beat). A worker that stays silent is still found, one
        // timeout later.
        let beat = self.settings.failure_timeout / 4;
        let gap = now.saturating_duration_since(self.last_watch);
        self.last_watch = now;
        if gap > beat * 2 {
            let overdue = gap - beat;
            tracing::info!(
                ms = overdue.as_millis() as u64,
                "the coordinator did not run on time; silence during it is not counted"
            );
            for t in &mut self.heard {
                *t = (*t + overdue).min(now);
            }
        }
        if self.phase != Phase::Running {
            return Vec::new();
        }
        let limit = self.settings.failure_timeout;
        let silent = self
            .heard
            .iter()
            .enumerate()
            .find(|(w, t)| *w as u32 != self.settings.me && now.duration_since(**t) > limit);
        let Some((worker, t)) = silent else {
            return Vec::new();
        };
        let why = format!("worker {worker} did not answer for {:?}", now.duration_since(*t));
        self.rollback(&why, now)
    }

    fn on_join(&mut self, worker: u32, incarnation: u64, now: Instant) -> Vec<Command> {
        let Some(known) = self.incarnations.get(worker as usize).copied() else {
            return Vec::new();
        };
        let covered = match &self.phase {
            // A restore is on its way to every worker: it covers this one's new memory too.
            Phase::Choosing => true,
            Phase::Restoring { pending } => pending.contains(&worker),
            Phase::Running => false,
        };
        if covered || known == Some(incarnation) {
            return Vec::new();
        }
        // A new process of a stopping worker is not stopping.
        self.leaving.remove(&worker);
        self.rollback("worker restarted", now)
    }

    fn rollback(&mut self, why: &str, now: Instant) -> Vec<Command> {
        let poisoned = self.suspects.rollback(self.phase == Phase::Running);
        self.rollback_started = now;
        // Silence is counted from here on: restores may take a while.
        for t in &mut self.heard {
            *t = now;
        }
        self.phase = Phase::Choosing;
        self.in_progress = None;
        self.writing.clear();
        self.wanted = 0;
        self.last_end = now;
        let mut commands = vec![Command::RollbackStarted { why: why.to_string() }];
        if !poisoned.is_empty() {
            commands.push(Command::Poisoned { messages: poisoned });
        }
        commands.extend([Command::CancelRestores, Command::Choose]);
        commands
    }

    fn on_chosen(&mut self, generation: u64, checkpoint: u64, highest: u64) -> Vec<Command> {
        if self.phase != Phase::Choosing {
            return Vec::new();
        }
        self.generation = generation;
        self.restored_from = checkpoint;
        self.suspects.chosen(generation);
        let poison = self.suspects.poisoned();
        // Past damaged checkpoints too: their manifests exist and are never overwritten.
        self.next_checkpoint = self.next_checkpoint.max(highest + 1);
        // Stopping workers restore with their input still stopped.
        for first in self.leaving.values_mut() {
            *first = (*first).max(self.next_checkpoint);
        }
        let workers = self.settings.workers;
        self.phase = Phase::Restoring {
            pending: (0..workers).collect(),
        };
        (0..workers)
            .map(|worker| Command::Restore {
                worker,
                generation,
                checkpoint,
                poison: poison.clone(),
            })
            .collect()
    }

    fn on_restored(&mut self, worker: u32, generation: u64, incarnation: u64, now: Instant) -> Vec<Command> {
        if generation != self.generation {
            return Vec::new();
        }
        let Phase::Restoring { pending } = &mut self.phase else {
            return Vec::new();
        };
        if let Some(slot) = self.incarnations.get_mut(worker as usize) {
            *slot = Some(incarnation);
        }
        if !(pending.remove(&worker) && pending.is_empty()) {
            return Vec::new();
        }
        self.phase = Phase::Running;
        for t in &mut self.heard {
            *t = now;
        }
        vec![Command::Running {
            generation,
            checkpoint: self.restored_from,
            took: now.duration_since(self.rollback_started),
        }]
    }

    fn on_tick(&mut self, now: Instant) -> Vec<Command> {
        let limit = self.limit();
        let overdue = |started: Instant| now.duration_since(started) > limit;
        let mut commands = Vec::new();
        if let Some(w) = self
            .writing
            .front()
            .filter(|w| w.result.is_none() && overdue(w.started))
        {
            let checkpoint = w.checkpoint;
            commands.extend(self.manifest_ended(checkpoint, Err(format!("not complete after {limit:?}")), now));
        }
        if let Some(p) = &self.in_progress {
            if overdue(p.started) {
                commands.extend(self.fail(format!("not complete after {limit:?}"), now));
            }
            return commands;
        }
        commands.extend(self.start(now));
        commands
    }

    fn start(&mut self, now: Instant) -> Vec<Command> {
        if self.settings.interval.is_none() || self.busy() || self.phase != Phase::Running {
            return Vec::new();
        }
        let checkpoint = self.next_checkpoint;
        self.next_checkpoint += 1;
        self.in_progress = Some(InProgress {
            checkpoint,
            started: now,
            parts: BTreeMap::new(),
            unclean: BTreeSet::new(),
        });
        vec![Command::Trigger {
            generation: self.generation,
            checkpoint,
        }]
    }

    fn on_part(
        &mut self,
        generation: u64,
        checkpoint: u64,
        worker: u32,
        result: Result<PartInfo, String>,
        clean: bool,
        now: Instant,
    ) -> Vec<Command> {
        if generation != self.generation {
            return Vec::new();
        }
        let Some(p) = self.in_progress.as_mut().filter(|p| p.checkpoint == checkpoint) else {
            return Vec::new();
        };
        let info = match result {
            Ok(info) => info,
            Err(reason) => return self.fail(format!("worker {worker} could not write its part: {reason}"), now),
        };
        p.parts.insert(worker, info);
        if !clean {
            p.unclean.insert(worker);
        }
        if p.parts.len() < self.settings.workers as usize {
            return Vec::new();
        }
        let parts: Vec<PartInfo> = p.parts.values().cloned().collect();
        let (format, objects, groups) = match manifest::assemble(self.settings.key_groups, &parts) {
            Ok(assembled) => assembled,
            Err(reason) => return self.fail(reason, now),
        };
        let p = self.in_progress.take().expect("checked above");
        self.last_end = now;
        self.writing.push_back(Writing {
            checkpoint,
            started: p.started,
            unclean: p.unclean,
            result: None,
        });
        let bytes = parts.iter().map(|i| i.size).sum();
        vec![Command::WriteManifest(Manifest {
            application: self.settings.application.clone(),
            namespace: self.settings.namespace.clone(),
            uid: self.settings.uid.clone(),
            checkpoint,
            generation,
            workers: self.settings.workers,
            key_groups: self.settings.key_groups,
            // Only the parts' own fields: the chains are in `objects` and `groups`.
            parts: parts.into_iter().map(|p| PartInfo { chains: None, ..p }).collect(),
            // Filled in by the task, which has a wall clock.
            created_at_ms: 0,
            duration_ms: now.duration_since(p.started).as_millis() as u64,
            bytes,
            format,
            objects,
            groups,
            copied_from: None,
        })]
    }

    fn on_manifest(
        &mut self,
        generation: u64,
        checkpoint: u64,
        result: Result<u64, String>,
        now: Instant,
    ) -> Vec<Command> {
        if generation != self.generation {
            return Vec::new();
        }
        let result = result.map_err(|reason| format!("writing the manifest failed: {reason}"));
        self.manifest_ended(checkpoint, result, now)
    }

    /// Records how `checkpoint`'s manifest write ended (`Err`: why the checkpoint failed),
    /// then announces every checkpoint at
    /// the front whose result is known, in order: a completion tells workers to release
    /// everything up to it, so it must not overtake an earlier checkpoint's.
    fn manifest_ended(&mut self, checkpoint: u64, result: Result<u64, String>, now: Instant) -> Vec<Command> {
        let Some(w) = self
            .writing
            .iter_mut()
            .find(|w| w.checkpoint == checkpoint && w.result.is_none())
        else {
            return Vec::new();
        };
        w.result = Some(result);
        let mut commands = Vec::new();
        while self.writing.front().is_some_and(|w| w.result.is_some()) {
            let w = self.writing.pop_front().expect("checked above");
            match w.result.expect("checked above") {
                Ok(bytes) => commands.extend(self.completed(w.checkpoint, w.started, w.unclean, bytes, now)),
                Err(reason) => {
                    self.last_end = now;
                    commands.push(Command::Failed {
                        checkpoint: w.checkpoint,
                        reason,
                    });
                }
            }
        }
        commands
    }

    fn completed(
        &mut self,
        checkpoint: u64,
        started: Instant,
        unclean: BTreeSet<u32>,
        bytes: u64,
        now: Instant,
    ) -> Vec<Command> {
        let generation = self.generation;
        self.suspects.completed(generation);
        let mut commands = vec![Command::Completed {
            generation,
            checkpoint,
            bytes,
            took: now.duration_since(started),
        }];
        let period = self.settings.interval.unwrap_or_default();
        if checkpoint.is_multiple_of(RETAIN_EVERY) && now.saturating_duration_since(self.last_retain) >= period {
            self.last_retain = now;
            commands.push(Command::Retain);
        }
        let done = !self.leaving.is_empty()
            && self
                .leaving
                .iter()
                .all(|(w, first)| checkpoint >= *first && !unclean.contains(w));
        if done {
            let workers = std::mem::take(&mut self.leaving).into_keys().collect();
            commands.push(Command::Exit {
                workers,
                generation,
                checkpoint,
            });
        }
        commands
    }

    fn fail(&mut self, reason: String, now: Instant) -> Vec<Command> {
        let Some(p) = self.in_progress.take() else {
            return Vec::new();
        };
        self.last_end = now;
        vec![Command::Failed {
            checkpoint: p.checkpoint,
            reason,
        }]
    }
}
