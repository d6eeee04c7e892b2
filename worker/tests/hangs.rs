//! Faults that are not deaths. A worker process frozen with SIGSTOP keeps its sockets open but
//! answers nothing — what a hung process, a stuck disk or a long GC pause looks like to its
//! peers; a worker cut off by a network partition (every link to and from it goes through a
//! proxy that stops passing bytes) is alive but unreachable. Either way the coordinator must
//! notice within `failureTimeout` and roll back, the worker must join the new generation when
//! it wakes (SIGCONT) or the partition heals, and no input may be lost or applied twice. Three `spindle worker` processes, the example functions (Rust SDK), checkpoints to
//! a local directory; the totals egress (a JSON-lines file) is read without deduplication, so
//! the test proves exactly-once output, not at-least-once.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustix::process::Signal;
use support::procs::{Procs, state, status, wait_running};
use support::proxy::Links;
use support::*;

const WORKERS: usize = 3;
const COUNTERS: u64 = 200;
const INPUTS: u64 = 3000;
// Short enough to show detection, long enough that a busy 2-core machine (load 20) does not
// starve a healthy worker past it (at 1 s, once at load 19, the workers did not settle on one
// generation within the deadline).
const FAILURE_TIMEOUT: Duration = Duration::from_secs(2);

/// Waits until worker `at` runs a generation after `after` (whatever the others do).
async fn wait_generation(admin: std::net::SocketAddr, after: u64, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(g) = status(admin).await.and_then(|s| s["generation"].as_u64())
            && g > after
        {
            return g;
        }
        assert!(
            Instant::now() < deadline,
            "no generation after {after} at {admin} within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// SIGSTOP, then SIGCONT.
    Freeze,
    /// Every link to and from the worker stops passing bytes, then passes them again.
    Partition,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_worker_is_detected_rolled_back_and_rejoins_without_loss_or_duplicates() {
    scenario(Fault::Freeze).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partitioned_worker_is_detected_rolled_back_and_rejoins_without_loss_or_duplicates() {
    scenario(Fault::Partition).await;
}

async fn scenario(fault: Fault) {
    init_logs();
    let dir = TempDir::new("hangs");
    let (fn_addr, _stop_functions) = example_functions().await;
    let yaml = format!(
        r#"apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {{name: hangs}}
spec:
  functions:
    - typename: example/*
      endpoint: http://{fn_addr}/statefun
  ingresses:
    - name: web
      http: {{}}
  egresses:
    - typename: example/totals
      file: {{path: totals.jsonl}}
  workers: {WORKERS}
  failureTimeout: {}ms
  checkpoint:
    interval: 200ms
    storage: {}
"#,
        FAILURE_TIMEOUT.as_millis(),
        dir.path().join("checkpoints").display(),
    );
    let app = dir.path().join("app.yaml");
    std::fs::write(&app, yaml).unwrap();
    let mut procs = Procs::new(dir.path(), app, WORKERS, Vec::new());
    // Every link goes through a proxy, so a partition can be made and healed.
    let links = Links::start(&mut procs).await;
    procs.spawn_all();
    let admin = procs.admin.clone();
    let ingress = procs.ingress.clone();
    let mut generation = procs.wait_started(Duration::from_secs(120)).await;
    eprintln!(
        "started: example functions (Rust SDK) on {fn_addr}, {WORKERS} spindle worker processes (generation {generation}, failureTimeout {FAILURE_TIMEOUT:?}); logs in {}",
        dir.path().display()
    );

    // Callers with idempotency keys and durable acknowledgements, retrying at another worker
    // until acknowledged (a frozen worker's ingress accepts connections and never answers).
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (next, done, ingress) = (next.clone(), done.clone(), ingress.clone());
        load.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= INPUTS {
                    return;
                }
                let path = format!("/example/counter/c{}", i % COUNTERS);
                let body = serde_json::json!({"seq": i, "value": 1}).to_string().into_bytes();
                let key = format!("in-{i}");
                let headers = [("spindle-ack", "durable"), ("idempotency-key", key.as_str())];
                for attempt in 0.. {
                    let at = ingress[(i as usize + attempt) % WORKERS];
                    let sent = tokio::time::timeout(
                        Duration::from_secs(5),
                        post_with(at, &path, "application/vnd.example/Add", body.clone(), &headers),
                    );
                    if let Ok(Some((200, _, _))) = sent.await {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    // Freeze or isolate a worker (not the coordinator: a frozen coordinator is its pod's
    // liveness probe's to find, see docs/reliability.md), twice, at a third and two thirds of
    // the load. The callers' ingress is not behind the proxies: they keep reaching every worker.
    let mut table = Vec::new();
    for (round, victim) in [(1u64, 1usize), (2, 2)] {
        let deadline = Instant::now() + Duration::from_secs(600);
        while done.load(Ordering::Relaxed) < INPUTS * round / 3 {
            assert!(Instant::now() < deadline, "the load stalled before the freeze");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let rollbacks_before = procs.log(0).matches(&format!("worker {victim} did not answer")).count();
        let frozen = Instant::now();
        match fault {
            Fault::Freeze => procs.signal(victim, Signal::STOP),
            Fault::Partition => links.isolate(victim, true),
        }
        let next_generation = wait_generation(admin[0], generation, Duration::from_secs(60)).await;
        let detected = frozen.elapsed();
        // Frozen a while longer than it took to notice, as a long pause would be.
        tokio::time::sleep(FAILURE_TIMEOUT * 2).await;
        let woken = Instant::now();
        match fault {
            Fault::Freeze => procs.signal(victim, Signal::CONT),
            Fault::Partition => links.isolate(victim, false),
        }
        generation = wait_running(&admin, generation, Duration::from_secs(120)).await;
        let recovered = woken.elapsed();
        assert!(generation >= next_generation);
        let why = procs.log(0).matches(&format!("worker {victim} did not answer")).count();
        assert!(
            why > rollbacks_before,
            "the coordinator's log names the silent worker {victim} as the rollback's cause"
        );
        eprintln!(
            "hangs: {fault:?} worker {victim} at {} acknowledged: rollback after {:.0} ms (failureTimeout {FAILURE_TIMEOUT:?}); woken/healed -> generation {generation} running on all after {:.0} ms",
            done.load(Ordering::Relaxed),
            detected.as_secs_f64() * 1000.0,
            recovered.as_secs_f64() * 1000.0
        );
        table.push((victim, detected, recovered));
    }

    let deadline = Instant::now() + Duration::from_secs(600);
    while !load.is_empty() {
        if let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(5), load.join_next()).await {
            r.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the load did not finish: {} of {INPUTS} acknowledged",
            done.load(Ordering::Relaxed)
        );
    }

    // Every counter's total once per input in the file, read as a plain reader does.
    let totals = dir.path().join("totals.jsonl");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        // Newlines, not lines: a last line without its newline is still being written.
        let n = std::fs::read_to_string(&totals)
            .unwrap_or_default()
            .matches('\n')
            .count() as u64;
        if n >= INPUTS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "egress incomplete: {n} of {INPUTS} lines in {}",
            totals.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut seqs: BTreeMap<u64, usize> = BTreeMap::new();
    for line in std::fs::read_to_string(&totals).unwrap().lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("a torn line in the totals file: {e}: {line}"));
        *seqs.entry(v["value"]["seq"].as_u64().unwrap()).or_default() += 1;
    }
    let lost: Vec<u64> = (0..INPUTS).filter(|s| !seqs.contains_key(s)).collect();
    let duplicated: Vec<u64> = seqs.iter().filter(|(_, n)| **n > 1).map(|(s, _)| *s).collect();
    assert!(lost.is_empty(), "seqs missing from the totals file: {lost:?}");
    assert!(duplicated.is_empty(), "seqs twice in the totals file: {duplicated:?}");
    for c in 0..COUNTERS {
        let want = (0..INPUTS).filter(|i| i % COUNTERS == c).count() as i64;
        assert_eq!(
            state(&admin, &format!("/example/counter/c{c}"), "total").await,
            Some(want),
            "counter c{c}"
        );
    }
    for (victim, detected, recovered) in &table {
        eprintln!(
            "hangs: | {fault:?} worker {victim} | detected {:.0} ms | rejoined {:.0} ms after SIGCONT/heal | lost 0 | duplicated 0 |",
            detected.as_secs_f64() * 1000.0,
            recovered.as_secs_f64() * 1000.0
        );
    }
}
