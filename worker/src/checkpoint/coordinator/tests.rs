//! The coordinator's protocols as tables: at time `t` (ms), this event gives these commands.

use std::time::{Duration, Instant};

use super::Event;
use super::core::{Command, Core, Settings};
use crate::checkpoint::manifest::{Manifest, PartInfo};

fn settings(workers: u32, interval: Option<u64>, min_pause: Option<u64>) -> Settings {
    Settings {
        application: "app".into(),
        namespace: None,
        uid: None,
        workers,
        key_groups: 8,
        interval: interval.map(Duration::from_millis),
        min_pause: min_pause.map(Duration::from_millis),
        failure_timeout: Duration::from_secs(2),
        me: 0,
        poison_after: 3,
    }
}

fn part(worker: u32, checkpoint: u64) -> PartInfo {
    PartInfo {
        worker,
        key: format!("app/checkpoints/{checkpoint}/part-w{worker}"),
        size: 10 + u64::from(worker),
        crc32: worker,
        ..PartInfo::default()
    }
}

fn part_ok(generation: u64, checkpoint: u64, worker: u32) -> Event {
    Event::Part {
        generation,
        checkpoint,
        worker,
        result: Ok(part(worker, checkpoint)),
        clean: true,
    }
}

fn manifest(generation: u64, checkpoint: u64, workers: u32, duration_ms: u64) -> Command {
    let parts: Vec<PartInfo> = (0..workers).map(|w| part(w, checkpoint)).collect();
    Command::WriteManifest(Manifest {
        application: "app".into(),
        namespace: None,
        uid: None,
        checkpoint,
        generation,
        workers,
        key_groups: 8,
        bytes: parts.iter().map(|p| p.size).sum(),
        parts,
        created_at_ms: 0,
        duration_ms,
        ..Manifest::default()
    })
}

fn rollback(why: &str) -> Vec<Command> {
    vec![
        Command::RollbackStarted { why: why.into() },
        Command::CancelRestores,
        Command::Choose,
    ]
}

fn restores(workers: u32, generation: u64, checkpoint: u64) -> Vec<Command> {
    (0..workers)
        .map(|worker| Command::Restore {
            worker,
            generation,
            checkpoint,
            poison: vec![],
        })
        .collect()
}

fn restored(worker: u32, generation: u64, incarnation: u64) -> Event {
    Event::Restored {
        worker,
        generation,
        incarnation,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Runs the table from a fresh coordinator started at t = 0 (whose first commands are the
/// start rollback's) and checks every step.
fn run(settings: Settings, steps: Vec<(u64, Event, Vec<Command>)>) -> (Core, Instant) {
    let t0 = Instant::now();
    let (mut core, first) = Core::new(settings, t0);
    assert_eq!(first, rollback("start"), "a coordinator starts with a rollback");
    for (i, (at, event, expected)) in steps.into_iter().enumerate() {
        let shown = format!("{event:?}");
        let got = core.on(event, t0 + ms(at));
        assert_eq!(got, expected, "step {i} (t = {at} ms): {shown}");
    }
    (core, t0)
}

/// Start, restore both workers, run checkpoint 1 to completion.
fn started_and_one_checkpoint() -> Vec<(u64, Event, Vec<Command>)> {
    vec![
        (
            5,
            Event::Chosen {
                generation: 7,
                checkpoint: 0,
                highest: 0,
            },
            restores(2, 7, 0),
        ),
        (6, Event::Tick, vec![]),
        (7, restored(1, 7, 101), vec![]),
        (
            9,
            restored(0, 7, 100),
            vec![Command::Running {
                generation: 7,
                checkpoint: 0,
                took: ms(9),
            }],
        ),
        (
            1000,
            Event::Tick,
            vec![Command::Trigger {
                generation: 7,
                checkpoint: 1,
            }],
        ),
        (1003, part_ok(7, 1, 1), vec![]),
        (1004, part_ok(7, 1, 1), vec![]),
        (1010, part_ok(7, 1, 0), vec![manifest(7, 1, 2, 10)]),
        (1011, part_ok(7, 1, 0), vec![]),
        (
            1015,
            Event::Manifest {
                generation: 7,
                checkpoint: 1,
                result: Ok(21),
            },
            vec![Command::Completed {
                generation: 7,
                checkpoint: 1,
                bytes: 21,
                took: ms(15),
            }],
        ),
    ]
}

#[test]
fn a_checkpoint_completes_only_once_every_part_and_then_the_manifest_are_written() {
    run(settings(2, Some(1000), None), started_and_one_checkpoint());
}

#[test]
fn a_failed_part_or_manifest_fails_the_checkpoint_and_numbering_goes_on() {
    let mut steps = started_and_one_checkpoint();
    steps.extend([
        (
            2000,
            Event::Tick,
            vec![Command::Trigger {
                generation: 7,
                checkpoint: 2,
            }],
        ),
        (
            2002,
            Event::Part {
                generation: 7,
                checkpoint: 2,
                worker: 1,
                result: Err("storage down".into()),
                clean: true,
            },
            vec![Command::Failed {
                checkpoint: 2,
                reason: "worker 1 could not write its part: storage down".into(),
            }],
        ),
        // The other part arrives after the failure: nothing to do with it.
        (2003, part_ok(7, 2, 0), vec![]),
        (
            3000,
            Event::Tick,
            vec![Command::Trigger {
                generation: 7,
                checkpoint: 3,
            }],
        ),
        (3001, part_ok(7, 3, 0), vec![]),
        (3002, part_ok(7, 3, 1), vec![manifest(7, 3, 2, 2)]),
        (
            3003,
            Event::Manifest {
                generation: 7,
                checkpoint: 3,
                result: Err("precondition failed".into()),
            },
            vec![Command::Failed {
                checkpoint: 3,
                reason: "writing the manifest failed: precondition failed".into(),
            }],
        ),
        (
            4000,
            Event::Tick,
            vec![Command::Trigger {
                generation: 7,
                checkpoint: 4,
            }],
        ),
        (4001, part_ok(7, 4, 0), vec![]),
        (4002, part_ok(7, 4, 1), vec![manifest(7, 4, 2, 2)]),
        (
            4003,
            Event::Manifest {
                generation: 7,
                checkpoint: 4,
                result: Ok(21),
            },
            vec![
                Command::Completed {
                    generation: 7,
                    checkpoint: 4,
                    bytes: 21,
                    took: ms(3),
                },
                Command::Retain,
            ],
        ),
    ]);
    run(settings(2, Some(1000), None), steps);
}

#[test]
fn a_checkpoint_that_never_completes_times_out_at_a_tick() {
    let mut steps = started_and_one_checkpoint();
    // Limit: 10 s + 10 intervals = 20 s.
    steps.extend([
        (
            2000,
            Event::Tick,
            vec![Command::Trigger {
                generation: 7,
                checkpoint: 2,
            }],
        ),
        (3000, Event::Tick, vec![]),
        (22_000, Event::Tick, vec![]),
        (
            22_001,
            Event::Tick,
            vec![Command::Failed {
                checkpoint: 2,
                reason: "not complete after 20s".into(),
            }],
        ),
        (
            22_002,
            Event::Tick,
            vec![Command::Trigger {
                generation: 7,
                checkpoint: 3,
            }],
        ),
    ]);
    run(settings(2, Some(1000), None), steps);
}

#[test]
fn a_worker_that_rejoins_during_a_checkpoint_rolls_back_and_old_reports_are_ignored() {
    let mut steps = started_and_one_checkpoint();
    steps.extend([
        (
            2000,
            Event::Tick,
            vec![Command::Trigger {
                generation: 7,
                checkpoint: 2,
            }],
        ),
        (2001, part_ok(7, 2, 0), vec![]),
        // The process of worker 1 we restored is known: not news.
        (
            2002,
            Event::Join {
                worker: 1,
                incarnation: 101,
            },
            vec![],
        ),
        // A new incarnation lost its memory: roll back.
        (
            2003,
            Event::Join {
                worker: 1,
                incarnation: 102,
            },
            rollback("worker restarted"),
        ),
        // Reports of the old generation, and joins while choosing, change nothing.
        (2004, part_ok(7, 2, 1), vec![]),
        (
            2005,
            Event::Manifest {
                generation: 7,
                checkpoint: 2,
                result: Ok(1),
            },
            vec![],
        ),
        (
            2006,
            Event::Join {
                worker: 0,
                incarnation: 999,
            },
            vec![],
        ),
        (2007, Event::Tick, vec![]),
        (
            2010,
            Event::Chosen {
                generation: 8,
                checkpoint: 1,
                highest: 1,
            },
            restores(2, 8, 1),
        ),
        // Restored in an older generation: not this rollback's answer.
        (2011, restored(0, 7, 100), vec![]),
        (2012, restored(0, 8, 100), vec![]),
        // A worker still pending may join again: its restore is on its way.
        (
            2013,
            Event::Join {
                worker: 1,
                incarnation: 103,
            },
            vec![],
        ),
        (
            2015,
            restored(1, 8, 103),
            vec![Command::Running {
                generation: 8,
                checkpoint: 1,
                took: ms(12),
            }],
        ),
        // Numbering goes on past the checkpoint the rollback abandoned.
        (
            3000,
            Event::Tick,
            vec![Command::Trigger {
                generation: 8,
                checkpoint: 3,
            }],
        ),
        // A restored worker that restarts again rolls back again.
        (
            3001,
            Event::Join {
                worker: 0,
                incarnation: 104,
            },
            rollback("worker restarted"),
        ),
    ]);
    run(settings(2, Some(1000), None), steps);
}

#[test]
fn numbering_continues_past_damaged_checkpoints() {
    let steps = vec![
        (
            1,
            Event::Chosen {
                generation: 3,
                checkpoint: 40,
                highest: 42,
            },
            restores(1, 3, 40),
        ),
        (
            2,
            restored(0, 3, 5),
            vec![Command::Running {
                generation: 3,
                checkpoint: 40,
                took: ms(2),
            }],
        ),
        (
            1000,
            Event::Tick,
            vec![Command::Trigger {
                generation: 3,
                checkpoint: 43,
            }],
        ),
    ];
    run(settings(1, Some(1000), None), steps);
}

#[test]
fn group_commit_starts_a_wanted_checkpoint_after_the_pause() {
    let steps = vec![
        (
            1,
            Event::Chosen {
                generation: 2,
                checkpoint: 0,
                highest: 0,
            },
            restores(1, 2, 0),
        ),
        (
            2,
            restored(0, 2, 5),
            vec![Command::Running {
                generation: 2,
                checkpoint: 0,
                took: ms(2),
            }],
        ),
        // A want of another generation counts for nothing.
        (
            3,
            Event::Want {
                generation: 1,
                checkpoint: 1,
            },
            vec![],
        ),
    ];
    let (mut core, t0) = run(settings(1, Some(60_000), Some(5)), steps);
    assert_eq!(core.eager_start(), None, "nothing waits");
    assert!(
        core.on(
            Event::Want {
                generation: 2,
                checkpoint: 1
            },
            t0 + ms(4)
        )
        .is_empty()
    );
    // The pause runs from the end of the last checkpoint (here: the rollback).
    assert_eq!(core.eager_start(), Some(t0 + ms(5)));
    let trigger = core.on(Event::Eager, t0 + ms(5));
    assert_eq!(
        trigger,
        [Command::Trigger {
            generation: 2,
            checkpoint: 1
        }]
    );
    assert_eq!(core.eager_start(), None, "one checkpoint at a time");
    assert_eq!(core.on(part_ok(2, 1, 0), t0 + ms(6)), [manifest(2, 1, 1, 1)]);
    let done = core.on(
        Event::Manifest {
            generation: 2,
            checkpoint: 1,
            result: Ok(10),
        },
        t0 + ms(8),
    );
    assert!(matches!(done[..], [Command::Completed { checkpoint: 1, .. }]));
    assert_eq!(core.eager_start(), None, "the want was for checkpoint 1, which is done");
}

#[test]
fn without_checkpoints_a_coordinator_only_rolls_back() {
    let steps = vec![
        (
            1,
            Event::Chosen {
                generation: 9,
                checkpoint: 0,
                highest: 0,
            },
            restores(2, 9, 0),
        ),
        (2, restored(0, 9, 1), vec![]),
        (
            3,
            restored(1, 9, 2),
            vec![Command::Running {
                generation: 9,
                checkpoint: 0,
                took: ms(3),
            }],
        ),
        (1000, Event::Tick, vec![]),
        (1001, Event::Eager, vec![]),
        (
            1002,
            Event::Join {
                worker: 1,
                incarnation: 3,
            },
            rollback("worker restarted"),
        ),
    ];
    run(settings(2, None, Some(1)), steps);
}

#[test]
fn stopping_workers_exit_after_a_checkpoint_that_holds_nothing_of_them_to_send() {
    let unclean = |generation, checkpoint, worker| Event::Part {
        generation,
        checkpoint,
        worker,
        result: Ok(part(worker, checkpoint)),
        clean: false,
    };
    let mut steps = started_and_one_checkpoint();
    steps.extend([
        (
            1500,
            Event::Tick,
            vec![Command::Trigger {
                generation: 7,
                checkpoint: 2,
            }],
        ),
        // Worker 1 stops while checkpoint 2 is under way: 2 started before its input stopped.
        (1501, Event::Leaving { worker: 1 }, vec![]),
        (1502, part_ok(7, 2, 0), vec![]),
        (1503, part_ok(7, 2, 1), vec![manifest(7, 2, 2, 3)]),
        (
            1504,
            Event::Manifest {
                generation: 7,
                checkpoint: 2,
                result: Ok(21),
            },
            vec![Command::Completed {
                generation: 7,
                checkpoint: 2,
                bytes: 21,
                took: ms(4),
            }],
        ),
        // The next one starts at once (no tick needed); worker 1 still had egress to send.
        (
            1505,
            Event::Eager,
            vec![Command::Trigger {
                generation: 7,
                checkpoint: 3,
            }],
        ),
        (1506, part_ok(7, 3, 0), vec![]),
        (1507, unclean(7, 3, 1), vec![manifest(7, 3, 2, 2)]),
        (
            1508,
            Event::Manifest {
                generation: 7,
                checkpoint: 3,
                result: Ok(21),
            },
            vec![Command::Completed {
                generation: 7,
                checkpoint: 3,
                bytes: 21,
                took: ms(3),
            }],
        ),
        // Worker 0's parts need not be clean: it is not stopping.
        (
            1509,
            Event::Eager,
            vec![Command::Trigger {
                generation: 7,
                checkpoint: 4,
            }],
        ),
        (1510, unclean(7, 4, 0), vec![]),
        (1511, part_ok(7, 4, 1), vec![manifest(7, 4, 2, 2)]),
        (
            1512,
            Event::Manifest {
                generation: 7,
                checkpoint: 4,
                result: Ok(21),
            },
            vec![
                Command::Completed {
                    generation: 7,
                    checkpoint: 4,
                    bytes: 21,
                    took: ms(3),
                },
                Command::Retain,
                Command::Exit {
                    workers: vec![1],
                    generation: 7,
                    checkpoint: 4,
                },
            ],
        ),
    ]);
    let (core, _) = run(settings(2, Some(1000), None), steps);
    assert_eq!(
        core.eager_start(),
        None,
        "nobody is stopping any more: back to the interval"
    );
}

#[test]
fn a_stopping_worker_that_restarts_is_not_stopping_any_more() {
    let mut steps = started_and_one_checkpoint();
    steps.extend([
        (1100, Event::Leaving { worker: 1 }, vec![]),
        (
            1101,
            Event::Join {
                worker: 1,
                incarnation: 555,
            },
            rollback("worker restarted"),
        ),
        (
            1102,
            Event::Chosen {
                generation: 8,
                checkpoint: 1,
                highest: 1,
            },
            restores(2, 8, 1),
        ),
        (1103, restored(0, 8, 100), vec![]),
        (
            1104,
            restored(1, 8, 555),
            vec![Command::Running {
                generation: 8,
                checkpoint: 1,
                took: ms(3),
            }],
        ),
    ]);
    let (core, _) = run(settings(2, Some(1000), None), steps);
    assert_eq!(
        core.eager_start(),
        None,
        "no checkpoint is hurried for a worker that restarted"
    );
}

/// A worker that finds the checkpoint it restores damaged (a checksum where it read its key
/// groups) makes the coordinator roll back again — the task then skips that checkpoint; a
/// report of another checkpoint or generation, or one after the restore, changes nothing.
#[test]
fn damage_found_by_a_restoring_worker_rolls_back_once_more() {
    let steps = vec![
        (
            1,
            Event::Chosen {
                generation: 3,
                checkpoint: 40,
                highest: 40,
            },
            restores(2, 3, 40),
        ),
        (
            2,
            Event::Damaged {
                generation: 3,
                checkpoint: 39,
            },
            vec![],
        ),
        (
            3,
            Event::Damaged {
                generation: 2,
                checkpoint: 40,
            },
            vec![],
        ),
        (
            4,
            Event::Damaged {
                generation: 3,
                checkpoint: 40,
            },
            vec![
                Command::RollbackStarted {
                    why: "checkpoint 40 is damaged".into(),
                },
                Command::CancelRestores,
                Command::Choose,
            ],
        ),
        (
            5,
            Event::Damaged {
                generation: 3,
                checkpoint: 40,
            },
            vec![],
        ),
    ];
    run(settings(2, Some(1000), None), steps);
}

#[test]
fn a_worker_that_stops_answering_is_treated_as_failed() {
    let mut steps = started_and_one_checkpoint();
    steps.extend(early_watches());
    steps.extend([
        // Heartbeats: worker 1 answers until t = 1100, then goes silent (stopped, cut off).
        (1100, Event::Heard { worker: 1 }, vec![]),
        (1500, Event::Watch, vec![]),
        (2000, Event::Watch, vec![]),
        (2500, Event::Watch, vec![]),
        (3000, Event::Watch, vec![]),
        (3100, Event::Watch, vec![]),
        (3101, Event::Watch, rollback("worker 1 did not answer for 2.001s")),
        // While the rollback restores, silence does not roll back again: its restore waits.
        (
            3200,
            Event::Chosen {
                generation: 8,
                checkpoint: 1,
                highest: 1,
            },
            restores(2, 8, 1),
        ),
        (3300, restored(0, 8, 100), vec![]),
        (9000, Event::Watch, vec![]),
        // It wakes up and restores: running again, and its silence counts from now.
        (
            9001,
            restored(1, 8, 101),
            vec![Command::Running {
                generation: 8,
                checkpoint: 1,
                took: ms(9001 - 3101),
            }],
        ),
        (10_000, Event::Watch, vec![]),
        (10_500, Event::Heard { worker: 1 }, vec![]),
        (12_000, Event::Watch, vec![]),
    ]);
    steps.sort_by_key(|s| s.0);
    run(settings(2, Some(1000), None), steps);
}

/// Worker 1 restarts while message 42 is in flight, over and over: at the third rollback the
/// restores set it aside, until a checkpoint of a generation restored that way completes.
#[test]
fn a_message_in_flight_at_three_consecutive_rollbacks_is_poison() {
    use crate::poison::InFlight;
    let in_flight = |generation, ids: &[u64]| Event::InFlight {
        worker: 1,
        generation,
        messages: ids
            .iter()
            .map(|&id| InFlight {
                id,
                target: format!("ns/f/{id}"),
            })
            .collect(),
    };
    let with_poison = |generation, poison: Vec<u64>| -> Vec<Command> {
        (0..2)
            .map(|worker| Command::Restore {
                worker,
                generation,
                checkpoint: 1,
                poison: poison.clone(),
            })
            .collect()
    };
    let mut steps = started_and_one_checkpoint();
    let mut t = 1100;
    for (round, generation) in [7u64, 8, 9].into_iter().enumerate() {
        // 42 runs long; 43 is seen once and ends before the rollback; 44 only in round 0.
        steps.push((t, in_flight(generation, &[42, 43]), vec![]));
        let last = if round == 0 { vec![42, 44] } else { vec![42] };
        steps.push((t + 1, in_flight(generation, &last), vec![]));
        // A stale report of the previous generation counts for nothing.
        steps.push((t + 2, in_flight(generation.saturating_sub(1), &[99]), vec![]));
        let mut rollback = rollback("worker restarted");
        if round == 2 {
            rollback.insert(
                1,
                Command::Poisoned {
                    messages: vec![(42, "ns/f/42".into())],
                },
            );
        }
        steps.push((
            t + 3,
            Event::Join {
                worker: 1,
                incarnation: 200 + generation,
            },
            rollback,
        ));
        let next = generation + 1;
        let poison = if round == 2 { vec![42] } else { vec![] };
        steps.push((
            t + 4,
            Event::Chosen {
                generation: next,
                checkpoint: 1,
                highest: 1,
            },
            with_poison(next, poison),
        ));
        steps.push((t + 5, restored(0, next, 100), vec![]));
        steps.push((
            t + 6,
            restored(1, next, 200 + generation),
            vec![Command::Running {
                generation: next,
                checkpoint: 1,
                took: ms(3),
            }],
        ));
        t += 100;
    }
    let (mut core, t0) = run(settings(2, Some(1000), None), steps);
    let suspects = core.suspects();
    assert_eq!(suspects.len(), 1, "{suspects:?}");
    assert!(suspects[0].poisoned && suspects[0].target == "ns/f/42");
    // A checkpoint of generation 10 (restored with the poison set aside) completes: later
    // restores do not set it aside again (it is a dead letter in that checkpoint).
    let at = |ms_: u64| t0 + ms(ms_);
    assert_eq!(
        core.on(Event::Tick, at(2000)),
        vec![Command::Trigger {
            generation: 10,
            checkpoint: 2
        }]
    );
    core.on(part_ok(10, 2, 0), at(2001));
    core.on(part_ok(10, 2, 1), at(2002));
    let done = core.on(
        Event::Manifest {
            generation: 10,
            checkpoint: 2,
            result: Ok(21),
        },
        at(2003),
    );
    assert!(matches!(done[0], Command::Completed { checkpoint: 2, .. }));
    core.on(
        Event::Join {
            worker: 1,
            incarnation: 300,
        },
        at(2004),
    );
    let restores = core.on(
        Event::Chosen {
            generation: 11,
            checkpoint: 2,
            highest: 2,
        },
        at(2005),
    );
    assert!(
        restores
            .iter()
            .all(|c| matches!(c, Command::Restore { poison, .. } if poison.is_empty())),
        "{restores:?}"
    );
}

#[test]
fn a_coordinator_that_did_not_run_does_not_blame_the_workers_for_it() {
    let mut steps = started_and_one_checkpoint();
    steps.extend(early_watches());
    steps.extend([
        (1100, Event::Heard { worker: 1 }, vec![]),
        (1500, Event::Watch, vec![]),
        (2000, Event::Watch, vec![]),
        (2500, Event::Watch, vec![]),
        // The coordinator gets no CPU for 3.5 s (watches every 500 ms are due): worker 1's
        // answers wait unread meanwhile. Only what it watched counts (and one beat): 1.9 s.
        (6000, Event::Watch, vec![]),
        (6400, Event::Heard { worker: 1 }, vec![]),
        (6500, Event::Watch, vec![]),
        (7000, Event::Watch, vec![]),
        // A worker that stays silent is still found: 2 s after its last answer.
        (7500, Event::Watch, vec![]),
        (8000, Event::Watch, vec![]),
        (8401, Event::Watch, rollback("worker 1 did not answer for 2.001s")),
    ]);
    steps.sort_by_key(|s| s.0);
    run(settings(2, Some(1000), None), steps);
}

/// The coordinator looks for silent workers every failure timeout / 4 (500 ms here).
fn early_watches() -> Vec<(u64, Event, Vec<Command>)> {
    vec![(500, Event::Watch, vec![]), (999, Event::Watch, vec![])]
}

/// Under group commit checkpoints complete far faster than the interval: retention (a listing
/// of the storage) runs after every fourth, but at most once per interval.
#[test]
fn retention_runs_every_fourth_checkpoint_at_most_once_per_interval() {
    let mut steps = started_and_one_checkpoint();
    let mut checkpoint = |n: u64, at: u64, retain: bool| {
        let mut done = vec![Command::Completed {
            generation: 7,
            checkpoint: n,
            bytes: 21,
            took: ms(3),
        }];
        if retain {
            done.push(Command::Retain);
        }
        steps.extend([
            (
                at,
                Event::Eager,
                vec![Command::Trigger {
                    generation: 7,
                    checkpoint: n,
                }],
            ),
            (at + 1, part_ok(7, n, 0), vec![]),
            (at + 2, part_ok(7, n, 1), vec![manifest(7, n, 2, 2)]),
            (
                at + 3,
                Event::Manifest {
                    generation: 7,
                    checkpoint: n,
                    result: Ok(21),
                },
                done,
            ),
        ]);
    };
    // A second after the start: the fourth retains, the eighth (40 ms later) does not.
    for n in 2..=8 {
        checkpoint(n, 1000 + 10 * n, n == 4);
    }
    // Past an interval since the last retention, the next fourth does.
    for n in 9..=12 {
        checkpoint(n, 2100 + 10 * n, n == 12);
    }
    run(settings(2, Some(1000), Some(0)), steps);
}

#[test]
fn the_next_checkpoint_starts_while_a_manifest_is_written_and_completions_stay_in_order() {
    let steps = vec![
        (
            1,
            Event::Chosen {
                generation: 2,
                checkpoint: 0,
                highest: 0,
            },
            restores(1, 2, 0),
        ),
        (
            2,
            restored(0, 2, 5),
            vec![Command::Running {
                generation: 2,
                checkpoint: 0,
                took: ms(2),
            }],
        ),
    ];
    let (mut core, t0) = run(settings(1, Some(60_000), Some(0)), steps);
    let want = |n| Event::Want {
        generation: 2,
        checkpoint: n,
    };
    let trigger = |n| {
        vec![Command::Trigger {
            generation: 2,
            checkpoint: n,
        }]
    };
    let manifest_ok = |n| Event::Manifest {
        generation: 2,
        checkpoint: n,
        result: Ok(10),
    };
    let completed = |n, took| Command::Completed {
        generation: 2,
        checkpoint: n,
        bytes: 10,
        took: ms(took),
    };
    assert!(core.on(want(1), t0 + ms(3)).is_empty());
    assert_eq!(core.on(Event::Eager, t0 + ms(3)), trigger(1));
    assert_eq!(core.on(part_ok(2, 1, 0), t0 + ms(4)), [manifest(2, 1, 1, 1)]);
    // Something waits for checkpoint 2 while 1's manifest is being written: 2 starts now.
    assert!(core.on(want(2), t0 + ms(5)).is_empty());
    assert_eq!(core.eager_start(), Some(t0 + ms(4)), "the pause counts from 1's parts");
    assert_eq!(core.on(Event::Eager, t0 + ms(5)), trigger(2));
    assert_eq!(core.on(part_ok(2, 2, 0), t0 + ms(6)), [manifest(2, 2, 1, 1)]);
    // Two manifests in the writing: a third checkpoint waits, wanted or not.
    assert!(core.on(want(3), t0 + ms(6)).is_empty());
    assert_eq!(core.eager_start(), None, "two manifests are being written");
    assert!(core.on(Event::Tick, t0 + ms(7)).is_empty());
    // 2's manifest came first: it is announced only after 1's.
    assert!(core.on(manifest_ok(2), t0 + ms(8)).is_empty());
    assert_eq!(core.on(manifest_ok(1), t0 + ms(9)), [completed(1, 6), completed(2, 4)]);
    assert_eq!(core.on(Event::Eager, t0 + ms(9)), trigger(3));
    assert_eq!(core.on(part_ok(2, 3, 0), t0 + ms(10)), [manifest(2, 3, 1, 1)]);
    assert!(core.on(want(4), t0 + ms(10)).is_empty());
    assert_eq!(core.on(Event::Eager, t0 + ms(10)), trigger(4));
    assert_eq!(core.on(part_ok(2, 4, 0), t0 + ms(11)), [manifest(2, 4, 1, 1)]);
    // 3's manifest fails: 4 (which holds all 3 held) still completes, after 3's failure.
    assert!(core.on(manifest_ok(4), t0 + ms(12)).is_empty());
    let failed = core.on(
        Event::Manifest {
            generation: 2,
            checkpoint: 3,
            result: Err("precondition failed".into()),
        },
        t0 + ms(13),
    );
    assert_eq!(
        failed,
        [
            Command::Failed {
                checkpoint: 3,
                reason: "writing the manifest failed: precondition failed".into(),
            },
            completed(4, 3),
        ]
    );
    // A repeated or stale answer changes nothing.
    assert!(core.on(manifest_ok(4), t0 + ms(14)).is_empty());
}

#[test]
fn a_manifest_write_that_never_ends_times_out_at_a_tick() {
    let steps = vec![
        (
            1,
            Event::Chosen {
                generation: 2,
                checkpoint: 0,
                highest: 0,
            },
            restores(1, 2, 0),
        ),
        (
            2,
            restored(0, 2, 5),
            vec![Command::Running {
                generation: 2,
                checkpoint: 0,
                took: ms(2),
            }],
        ),
        (
            1000,
            Event::Tick,
            vec![Command::Trigger {
                generation: 2,
                checkpoint: 1,
            }],
        ),
        (1001, part_ok(2, 1, 0), vec![manifest(2, 1, 1, 1)]),
        // The limit is 10 s + 10 intervals: 20 s. The tick also starts the next checkpoint.
        (
            21_002,
            Event::Tick,
            vec![
                Command::Failed {
                    checkpoint: 1,
                    reason: "not complete after 20s".into(),
                },
                Command::Trigger {
                    generation: 2,
                    checkpoint: 2,
                },
            ],
        ),
        // Its late answer is not a completion.
        (
            21_003,
            Event::Manifest {
                generation: 2,
                checkpoint: 1,
                result: Ok(10),
            },
            vec![],
        ),
    ];
    run(settings(1, Some(1000), None), steps);
}
