//! Chaos, with real parts: three `spindle worker` processes whose peer links (data and the
//! coordinator's control calls) all pass through proxies the test controls, checkpoints to a
//! real S3 server (moto, on loopback), the example functions (Rust SDK) behind a proxy too, and
//! a workload of counters, chains of hops between addresses (cycles across workers) and the
//! greeter cycle (person -> greeter -> person). While it runs, every kind of fault strikes, in
//! a seeded random order at random moments, each at least once:
//!
//! - `kill -9` of a worker (the coordinator, worker 0, at least once), restarted at once;
//! - `SIGSTOP` of a worker, `SIGCONT` a while after the others rolled back without it;
//! - a partition: every link to and from a worker stops passing bytes (connections stay open),
//!   healed a while after the rollback;
//! - a storage stall: moto stops answering (SIGSTOP) until a checkpoint failed;
//! - a function outage longer than its `callTimeout`: the function's proxy stops passing bytes,
//!   the batches in flight become dead letters, and once the function is back the test replays
//!   them (`POST /dead-letters/{id}/replay`, exactly once by the worker's own account);
//!
//! and at the end the whole application is stopped cleanly (SIGTERM to every worker: final
//! checkpoint) and started again. Then every record is checked: nothing lost, nothing applied
//! twice, every counter exact — and the two egresses, a JSON-lines file and a NATS JetStream
//! stream, are read by plain readers that do not deduplicate: every record must be there
//! exactly once. A table says, per fault, how long detection (fault -> the coordinator started
//! a rollback, or a checkpoint failed, or a batch became a dead letter) and recovery (fault
//! over -> every worker runs one new generation and output flows again) took.
//!
//! `SPINDLE_CHAOS_INPUTS` (default 100000) sets the number of input records,
//! `SPINDLE_CHAOS_FAULTS` (default 8, at least 6) the number of faults, `SPINDLE_CHAOS_SEED`
//! the random seed (printed, so a failing run can be repeated).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustix::process::Signal;
use support::brokers::Nats;
use support::moto::Moto;
use support::procs::{Procs, state, status, wait_running};
use support::proxy::{Links, Proxy};
use support::*;

const WORKERS: usize = 3;
const COUNTERS: u64 = 1000;
const HOP_IDS: u32 = 500;
const HOPS_PER_CHAIN: u32 = 10;
const PEOPLE: u64 = 100;

/// A small deterministic generator (xorshift), so a run can be repeated from its seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i as u64 + 1) as usize);
        }
    }
}

/// Short enough to show detection within the run, long enough that a healthy worker starved
/// by a busy 2-core machine is not taken for a hung one (see docs/reliability.md).
const FAILURE_TIMEOUT: Duration = Duration::from_secs(2);
/// The functions' time budget per batch: an outage longer than this makes dead letters.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fault {
    /// `kill -9`, restarted at once.
    Kill(usize),
    /// SIGSTOP, SIGCONT after the others rolled back.
    Freeze(usize),
    /// Every link to and from the worker stops passing bytes, healed after the rollback.
    Partition(usize),
    /// The checkpoint storage stops answering until a checkpoint failed.
    StorageStall,
    /// The function stops answering for longer than its `callTimeout`.
    FunctionOutage,
}

impl Fault {
    fn kind(self) -> &'static str {
        match self {
            Fault::Kill(0) => "kill -9 of the coordinator (worker 0)",
            Fault::Kill(_) => "kill -9 of a worker (1 or 2)",
            Fault::Freeze(_) => "SIGSTOP / SIGCONT of a worker",
            Fault::Partition(_) => "peer partition of a worker (proxy)",
            Fault::StorageStall => "storage stall (moto SIGSTOPped)",
            Fault::FunctionOutage => "function outage > callTimeout",
        }
    }

    /// The schedule: every kind at least once (a kill of the coordinator among them), then
    /// `n - 6` more drawn at random, all in a random order.
    fn schedule(rng: &mut Rng, n: usize) -> Vec<Fault> {
        let worker = |rng: &mut Rng, from: u64| (from + rng.below(WORKERS as u64 - from)) as usize;
        let mut faults = vec![
            Fault::Kill(0),
            Fault::Kill(worker(rng, 1)),
            Fault::Freeze(worker(rng, 1)),
            Fault::Partition(worker(rng, 1)),
            Fault::StorageStall,
            Fault::FunctionOutage,
        ];
        while faults.len() < n {
            faults.push(match rng.below(5) {
                0 => Fault::Kill(worker(rng, 0)),
                1 => Fault::Freeze(worker(rng, 1)),
                2 => Fault::Partition(worker(rng, 1)),
                3 => Fault::StorageStall,
                _ => Fault::FunctionOutage,
            });
        }
        rng.shuffle(&mut faults);
        faults
    }
}

/// What one fault cost.
struct Struck {
    fault: Fault,
    /// When it began and when the application was back (since the start of the load).
    window: (Duration, Duration),
    /// Fault -> detected (rollback started / checkpoint failed / dead letter).
    detected: Duration,
    /// Fault over (restart, SIGCONT, heal, resume, function back) -> running and output flows.
    recovered: Duration,
    /// What it left to replay (function outage: the dead letters).
    note: String,
}

/// Input `i`: (path, content type, body).
fn input(i: u64) -> (String, &'static str, Vec<u8>) {
    match i % 10 {
        0..=6 => (
            format!("/example/counter/c{}", i % COUNTERS),
            "application/vnd.example/Add",
            serde_json::json!({"seq": i, "value": (i % 13) as i64 + 1})
                .to_string()
                .into_bytes(),
        ),
        7 | 8 => (
            format!("/example/hop/h{}", i % u64::from(HOP_IDS)),
            "application/vnd.example/Hop",
            serde_json::json!({"seq": i, "remaining": HOPS_PER_CHAIN - 1, "spread": HOP_IDS})
                .to_string()
                .into_bytes(),
        ),
        _ => (
            format!("/example/person/p{}", i % PEOPLE),
            "application/vnd.example/Visit",
            b"{}".to_vec(),
        ),
    }
}

/// The coordinator's view right now (its /status), `None` while it does not answer.
async fn coordinator(admin: &[SocketAddr]) -> Option<serde_json::Value> {
    status(admin[0]).await
}

/// Waits until the coordinator started a rollback after `before` (its rollback count grew, or
/// it is a new process, or on a newer generation): how long after `t0`.
async fn rollback_started(admin: &[SocketAddr], before: &serde_json::Value, t0: Instant) -> Duration {
    let deadline = t0 + Duration::from_secs(120);
    loop {
        if let Some(s) = coordinator(admin).await
            && (s["incarnation"] != before["incarnation"]
                || s["rollbacks"].as_u64() > before["rollbacks"].as_u64()
                || s["generation"].as_u64() > before["generation"].as_u64())
        {
            return t0.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "the coordinator started no rollback within 120 s (before: {before})"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// True when the totals egress holds a record of an input numbered `n0` or later (read from
/// the file's end, where new records land).
fn output_from(totals: &Path, n0: u64) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(totals) else {
        return false;
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(256 * 1024);
    let mut tail = Vec::new();
    if f.seek(SeekFrom::Start(start)).is_err() || f.read_to_end(&mut tail).is_err() {
        return false;
    }
    String::from_utf8_lossy(&tail)
        .lines()
        .skip(usize::from(start > 0))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|v| v["value"]["seq"].as_u64().is_some_and(|s| s >= n0))
}

/// Output flows again: waits until a record of an input numbered `n0` or later is released
/// — for when no record of such an input can have been released before the fault ended.
/// Nothing to wait for when every input had been sent already.
async fn output_from_input(totals: &Path, n0: u64, inputs: u64, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while n0 < inputs && !output_from(totals, n0) {
        assert!(
            Instant::now() < deadline,
            "{what}: no record of input {n0} or later in the totals egress within 180 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// Output flows again: waits until the totals egress grows past `len` (records are released
/// only once a checkpoint holding them completed, so growth after a restore, or after the
/// storage came back, is a checkpoint of the application as it is now) — or the load is over
/// and every record is out.
async fn output_grows(totals: &Path, len: u64, done: &AtomicU64, inputs: u64, expected: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while file_len(totals) <= len {
        if done.load(Ordering::Relaxed) >= inputs && line_count(totals) >= expected {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: no output for 180 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until every worker runs one generation after `generation` and output flows again
/// (see [`output_grows`]): the new generation.
async fn back_to_running(
    admin: &[SocketAddr],
    generation: u64,
    totals: &Path,
    done: &AtomicU64,
    inputs: u64,
    expected: usize,
) -> u64 {
    let g = wait_running(admin, generation, Duration::from_secs(180)).await;
    let len = file_len(totals);
    output_grows(
        totals,
        len,
        done,
        inputs,
        expected,
        &format!("generation {g} runs on every worker"),
    )
    .await;
    g
}

/// The text without terminal colour codes (`ESC [ ... m`), which the workers' logs carry.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Complete lines: a last line without its newline is still being written.
fn line_count(path: &Path) -> usize {
    std::fs::read_to_string(path).unwrap_or_default().matches('\n').count()
}

/// The dead letters worker `admin` keeps, `None` while it does not answer.
async fn dead_letters(admin: SocketAddr) -> Option<Vec<serde_json::Value>> {
    let (code, body) = tokio::time::timeout(Duration::from_secs(5), get(admin, "/dead-letters"))
        .await
        .ok()?;
    if code != 200 {
        return None;
    }
    serde_json::from_str::<serde_json::Value>(&body)
        .ok()?
        .as_array()
        .cloned()
}

/// Replays every dead letter every worker keeps, a few at a time (a rolled-back replay leaves
/// its letter in the list, so the callers loop until none is left): how many replays were
/// acknowledged. `seen` counts the kinds (with a reason of each).
async fn replay_all(admin: &[SocketAddr], seen: &mut BTreeMap<String, (usize, String)>) -> usize {
    let mut replays = tokio::task::JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(16));
    for a in admin {
        let Some(letters) = dead_letters(*a).await else {
            continue;
        };
        for l in letters {
            let kind = l["kind"].as_str().unwrap_or("?").to_string();
            let e = seen
                .entry(kind)
                .or_insert((0, l["reason"].as_str().unwrap_or("").to_string()));
            e.0 += 1;
            let (a, id, slots) = (*a, l["id"].as_str().unwrap().to_string(), slots.clone());
            replays.spawn(async move {
                let _slot = slots.acquire().await;
                let answer = tokio::time::timeout(
                    Duration::from_secs(10),
                    post_with(a, &format!("/dead-letters/{id}/replay"), "text/plain", Vec::new(), &[]),
                )
                .await;
                matches!(answer, Ok(Some((200, _, _))))
            });
        }
    }
    replays.join_all().await.into_iter().filter(|ok| *ok).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_fault_at_random_loses_and_duplicates_nothing() {
    init_logs();
    let env = |name: &str| std::env::var(name).ok().and_then(|s| s.parse::<u64>().ok());
    let inputs = env("SPINDLE_CHAOS_INPUTS").unwrap_or(100_000).max(1000);
    let fault_count = env("SPINDLE_CHAOS_FAULTS").unwrap_or(8).max(6) as usize;
    let seed = env("SPINDLE_CHAOS_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1
    });
    let mut rng = Rng(seed);
    let faults = Fault::schedule(&mut rng, fault_count);
    eprintln!(
        "chaos: {inputs} inputs, seed {seed} (SPINDLE_CHAOS_SEED={seed} repeats the schedule), load {}",
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    eprintln!("chaos: schedule {faults:?}");
    let dir = TempDir::new("chaos");
    let moto = Moto::start("spindle");
    let (fn_addr, _stop_functions) = example_functions().await;
    // The workers reach the functions through a proxy, so they can stop answering.
    let fn_proxy = Proxy::start(fn_addr).await;
    let nats = Nats::start(dir.path(), "");
    let js = nats.jetstream(None).await;
    Nats::create_stream(&js, "GREETS", &["greets"]).await;
    eprintln!(
        "started: example functions (Rust SDK) on {fn_addr} behind a proxy at {}, nats-server (JetStream stream GREETS) at {}",
        fn_proxy.addr, nats.url
    );
    let yaml = format!(
        r#"apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {{name: chaos}}
spec:
  functions:
    - typename: example/*
      endpoint: http://{fn_proxy}/statefun
      maxBatchSize: 100
      maxInFlight: 64
      callTimeout: {call}ms
  ingresses:
    - name: web
      http: {{}}
  egresses:
    - typename: example/totals
      file: {{path: totals.jsonl}}
    - typename: example/greets
      nats: {{servers: ["{nats}"], subject: greets}}
  workers: {WORKERS}
  failureTimeout: {failure}ms
  checkpoint:
    interval: 200ms
    storage: {storage}
"#,
        fn_proxy = fn_proxy.addr,
        call = CALL_TIMEOUT.as_millis(),
        failure = FAILURE_TIMEOUT.as_millis(),
        storage = moto.url("checkpoints"),
        nats = nats.url,
    );
    let app = dir.path().join("app.yaml");
    std::fs::write(&app, yaml).unwrap();
    let mut procs = Procs::new(dir.path(), app, WORKERS, moto.env());
    let links = Links::start(&mut procs).await;
    procs.spawn_all();
    let admin = procs.admin.clone();
    let ingress = procs.ingress.clone();
    let mut generation = procs.wait_started(Duration::from_secs(120)).await;
    eprintln!(
        "started: {WORKERS} spindle worker processes (generation {generation}, failureTimeout {FAILURE_TIMEOUT:?}, callTimeout {CALL_TIMEOUT:?}), every peer link through a proxy; logs in {}",
        dir.path().display()
    );
    let totals_file = dir.path().join("totals.jsonl");
    let counters: Vec<u64> = (0..inputs).filter(|i| i % 10 <= 6).collect();
    let chains: Vec<u64> = (0..inputs).filter(|i| matches!(i % 10, 7 | 8)).collect();
    let visits = inputs - counters.len() as u64 - chains.len() as u64;
    let expected_totals = counters.len() + chains.len();

    // Load: each input once, with an idempotency key and a durable acknowledgement, retried
    // (at another worker) until acknowledged — what a careful HTTP caller does. A frozen
    // worker's ingress accepts connections and never answers, hence the callers' timeout.
    let next = Arc::new(AtomicU64::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicU64::new(0));
    // When each input was first sent (ms since the start), to tell which fault a lost or
    // duplicated record ran into.
    let sent: Arc<Vec<AtomicU64>> = Arc::new((0..inputs).map(|_| AtomicU64::new(0)).collect());
    let started = Instant::now();
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..512 {
        let (next, retries, done, ingress, sent) = (
            next.clone(),
            retries.clone(),
            done.clone(),
            ingress.clone(),
            sent.clone(),
        );
        load.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= inputs {
                    return;
                }
                sent[i as usize].store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                let (path, ct, body) = input(i);
                let key = format!("in-{i}");
                let headers = [("spindle-ack", "durable"), ("idempotency-key", key.as_str())];
                let mut attempt = 0;
                loop {
                    let at = ingress[(i as usize + attempt) % WORKERS];
                    let answer = tokio::time::timeout(
                        Duration::from_secs(10),
                        post_with(at, &path, ct, body.clone(), &headers),
                    )
                    .await;
                    if let Ok(Some((200, _, _))) = answer {
                        break;
                    }
                    attempt += 1;
                    retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    // Chaos: fault k strikes somewhere in the (k+1)-th of `faults + 2` equal slices of the
    // inputs, one at a time (so each one's detection and recovery can be measured).
    let mut struck: Vec<Struck> = Vec::new();
    let mut dead_seen: BTreeMap<String, (usize, String)> = BTreeMap::new();
    let mut replayed = 0;
    let slices = faults.len() as u64 + 2;
    for (k, fault) in faults.iter().copied().enumerate() {
        let slice = inputs / slices;
        let target = slice * (k as u64 + 1) + rng.below((slice / 2).max(1));
        let deadline = Instant::now() + Duration::from_secs(1800);
        while done.load(Ordering::Relaxed) < target && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let before = loop {
            if let Some(s) = coordinator(&admin).await {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let at_done = done.load(Ordering::Relaxed);
        let t0 = Instant::now();
        let from = started.elapsed();
        let (detected, recovered, note) = match fault {
            Fault::Kill(w) => {
                procs.kill9(w);
                procs.spawn(w);
                let detected = rollback_started(&admin, &before, t0).await;
                generation = back_to_running(&admin, generation, &totals_file, &done, inputs, expected_totals).await;
                (detected, t0.elapsed(), String::new())
            }
            Fault::Freeze(w) | Fault::Partition(w) => {
                let freeze = matches!(fault, Fault::Freeze(_));
                if freeze {
                    procs.signal(w, Signal::STOP);
                } else {
                    links.isolate(w, true);
                }
                let detected = rollback_started(&admin, &before, t0).await;
                // Gone a while longer than it took to notice, as a long pause would be.
                tokio::time::sleep(FAILURE_TIMEOUT * 2).await;
                if freeze {
                    procs.signal(w, Signal::CONT);
                } else {
                    links.isolate(w, false);
                }
                let woken = Instant::now();
                generation = back_to_running(&admin, generation, &totals_file, &done, inputs, expected_totals).await;
                let log = procs.log(0);
                assert!(
                    log.contains(&format!("worker {w} did not answer")),
                    "the coordinator's log names the silent worker {w} as a rollback's cause"
                );
                (detected, woken.elapsed(), String::new())
            }
            Fault::StorageStall => {
                // Until the application noticed: a checkpoint failed, or a store call gave up
                // (a rollback under way when the storage stops cannot look up its checkpoint
                // and retries, and starts no checkpoint that could fail).
                let failed_before = before["checkpointsFailed"].as_u64().unwrap_or(0);
                let unavailable = |procs: &Procs| -> usize {
                    (0..WORKERS)
                        .map(|i| procs.log(i).matches("checkpoint storage unavailable").count())
                        .sum()
                };
                let unavailable_before = unavailable(&procs);
                moto.pause();
                let deadline = t0 + Duration::from_secs(120);
                let mut polls = 0u32;
                loop {
                    let failed = coordinator(&admin).await.unwrap_or_default()["checkpointsFailed"]
                        .as_u64()
                        .unwrap_or(0);
                    polls += 1;
                    if failed > failed_before || (polls.is_multiple_of(25) && unavailable(&procs) > unavailable_before)
                    {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "nothing noticed within 120 s that the storage was stopped"
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                let detected = t0.elapsed();
                moto.resume();
                let resumed = Instant::now();
                let len = file_len(&totals_file);
                let deadline = resumed + Duration::from_secs(180);
                let completed = loop {
                    let s = coordinator(&admin).await.unwrap_or_default();
                    if s["completedCheckpoint"].as_u64() > before["completedCheckpoint"].as_u64() {
                        break s["completedCheckpoint"].clone();
                    }
                    assert!(
                        Instant::now() < deadline,
                        "no checkpoint completed within 180 s after the storage stall"
                    );
                    tokio::time::sleep(Duration::from_millis(10)).await;
                };
                // The stall may have met a rollback (then its restore waited for the storage):
                // wait for that generation as well.
                let now = coordinator(&admin).await.unwrap_or_default()["generation"]
                    .as_u64()
                    .unwrap_or(generation);
                if now > generation {
                    generation =
                        back_to_running(&admin, generation, &totals_file, &done, inputs, expected_totals).await;
                } else {
                    output_grows(
                        &totals_file,
                        len,
                        &done,
                        inputs,
                        expected_totals,
                        "after the storage stall",
                    )
                    .await;
                }
                (
                    detected,
                    resumed.elapsed(),
                    format!("checkpoint {completed} completed after"),
                )
            }
            Fault::FunctionOutage => {
                let ids = |letters: Vec<serde_json::Value>| -> BTreeSet<String> {
                    letters
                        .iter()
                        .filter_map(|l| l["id"].as_str().map(str::to_string))
                        .collect()
                };
                let mut old = BTreeSet::new();
                for a in &admin {
                    old.extend(dead_letters(*a).await.map(ids).unwrap_or_default());
                }
                fn_proxy.partition();
                // Inputs from here on cannot be answered before the function is back.
                let n0 = next.load(Ordering::Relaxed);
                let deadline = t0 + Duration::from_secs(120);
                // Detected: a batch in flight ran out of its callTimeout and became a dead letter.
                'detect: loop {
                    for a in &admin {
                        if !ids(dead_letters(*a).await.unwrap_or_default()).is_subset(&old) {
                            break 'detect;
                        }
                    }
                    assert!(
                        Instant::now() < deadline,
                        "no batch became a dead letter while the function did not answer"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let detected = t0.elapsed();
                // Down for longer than the budget of every batch in flight.
                tokio::time::sleep((CALL_TIMEOUT + Duration::from_secs(1)).saturating_sub(detected)).await;
                fn_proxy.heal();
                let back = Instant::now();
                output_from_input(&totals_file, n0, inputs, "after the function came back").await;
                let recovered = back.elapsed();
                // What the outage set aside goes back in: the operator's replay.
                let replaying = Instant::now();
                let mut n = 0;
                let deadline = replaying + Duration::from_secs(120);
                loop {
                    let r = replay_all(&admin, &mut dead_seen).await;
                    n += r;
                    if r == 0 {
                        break;
                    }
                    assert!(Instant::now() < deadline, "dead letters kept coming back");
                }
                replayed += n;
                (
                    detected,
                    recovered,
                    format!(
                        "{n} dead letters replayed in {:.0} ms",
                        replaying.elapsed().as_secs_f64() * 1000.0
                    ),
                )
            }
        };
        eprintln!(
            "chaos: {fault:?} at {at_done} acknowledged: detected after {:.0} ms, back (generation {generation}, output flowing) {:.0} ms after the fault ended {note}",
            detected.as_secs_f64() * 1000.0,
            recovered.as_secs_f64() * 1000.0,
        );
        struck.push(Struck {
            fault,
            window: (from, started.elapsed()),
            detected,
            recovered,
            note,
        });
    }

    // A clean stop of the whole application mid-stream (SIGTERM to every worker at once), and
    // a start from its final checkpoint: the callers retry meanwhile.
    let target = inputs * (slices - 1) / slices + inputs / slices / 2;
    while done.load(Ordering::Relaxed) < target && started.elapsed() < Duration::from_secs(1800) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let finals_before: Vec<usize> = (0..WORKERS)
        .map(|i| procs.log(i).matches("final checkpoint complete").count())
        .collect();
    let at = Instant::now();
    eprintln!(
        "chaos: stopping every worker cleanly at {} acknowledged",
        done.load(Ordering::Relaxed)
    );
    let clean = tokio::task::block_in_place(|| procs.term_all(Duration::from_secs(60)));
    let stop_took = at.elapsed();
    assert!(clean, "every worker exits cleanly on SIGTERM (see the worker logs)");
    for (i, before) in finals_before.iter().enumerate() {
        let after = procs.log(i).matches("final checkpoint complete").count();
        assert!(after > *before, "worker {i} stopped without a final checkpoint");
    }
    procs.spawn_all();
    let restarted = Instant::now();
    generation = back_to_running(&admin, generation, &totals_file, &done, inputs, expected_totals).await;
    let restart_took = restarted.elapsed();
    eprintln!(
        "chaos: clean stop with a final checkpoint on every worker in {:.0} ms; running again (generation {generation}, output flowing) {:.0} ms after the restart",
        stop_took.as_secs_f64() * 1000.0,
        restart_took.as_secs_f64() * 1000.0
    );

    let mut progress = Instant::now();
    while !load.is_empty() {
        if let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(5), load.join_next()).await {
            r.unwrap();
        }
        if progress.elapsed() > Duration::from_secs(10) {
            eprintln!("chaos: {} of {inputs} acknowledged", done.load(Ordering::Relaxed));
            progress = Instant::now();
        }
        assert!(started.elapsed() < Duration::from_secs(1800), "the load did not finish");
    }
    let load_time = started.elapsed();
    eprintln!(
        "chaos: all {inputs} inputs durable in {:.1} s ({:.0}/s), {} retries",
        load_time.as_secs_f64(),
        inputs as f64 / load_time.as_secs_f64(),
        retries.load(Ordering::Relaxed)
    );

    // Every effect of the inputs must arrive: wait for the egresses, replaying any dead letter
    // still kept (a batch slow beyond its callTimeout on a busy machine is one too), then
    // check everything. The egresses as plain readers see them — no deduplication by key: the
    // file's lines and the stream's messages.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        replayed += replay_all(&admin, &mut dead_seen).await;
        let totals = line_count(&totals_file);
        let greets = js
            .get_stream("GREETS")
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .messages;
        if totals >= expected_totals && greets >= visits {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "egress incomplete: {totals}/{expected_totals} lines in the totals file, {greets}/{visits} greetings in the stream"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Settle: anything sent twice would arrive about now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&totals_file)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("a torn or malformed line in the totals file: {e}: {l}"))
        })
        .collect();
    let mut seqs: BTreeMap<u64, usize> = BTreeMap::new();
    let mut keys = BTreeSet::new();
    let mut key_repeats = 0;
    for line in &lines {
        assert!(
            line["key"].is_string(),
            "every released record has an idempotency key: {line}"
        );
        if !keys.insert(line["key"].as_str().unwrap().to_string()) {
            key_repeats += 1;
        }
        *seqs.entry(line["value"]["seq"].as_u64().unwrap()).or_default() += 1;
    }
    let stream = Nats::read_stream(&js, "GREETS").await;
    let mut greets: BTreeMap<String, BTreeMap<i64, usize>> = BTreeMap::new();
    for m in &stream {
        let value: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        *greets
            .entry(value["name"].as_str().unwrap().to_string())
            .or_default()
            .entry(value["visits"].as_i64().unwrap())
            .or_default() += 1;
    }
    let greet_records = stream.len();
    let greets_duplicated: usize = greets.values().flat_map(|v| v.values()).filter(|n| **n > 1).count();
    let want: BTreeSet<u64> = counters.iter().chain(&chains).copied().collect();
    let lost: Vec<u64> = want.iter().filter(|s| !seqs.contains_key(s)).copied().collect();
    let duplicated: Vec<u64> = seqs.iter().filter(|(_, n)| **n > 1).map(|(s, _)| *s).collect();
    let unexpected = seqs.keys().filter(|s| !want.contains(s)).count();

    // State: every counter, the hop counts, every person's visits.
    let mut expected_counter: BTreeMap<u64, i64> = BTreeMap::new();
    for i in &counters {
        *expected_counter.entry(i % COUNTERS).or_default() += (i % 13) as i64 + 1;
    }
    let mut wrong_counters = Vec::new();
    for (k, sum) in &expected_counter {
        let got = state(&admin, &format!("/example/counter/c{k}"), "total").await;
        if got != Some(*sum) {
            wrong_counters.push(format!("c{k}: {got:?}, want {sum}"));
        }
    }
    let mut hops = 0;
    for h in 0..HOP_IDS {
        hops += state(&admin, &format!("/example/hop/h{h}"), "hops").await.unwrap_or(0);
    }
    let mut wrong_people = Vec::new();
    for p in 0..PEOPLE {
        let n = (0..inputs).filter(|i| i % 10 == 9 && i % PEOPLE == p).count() as i64;
        let got = state(&admin, &format!("/example/person/p{p}"), "visits")
            .await
            .unwrap_or(0);
        let seen: BTreeSet<i64> = greets
            .get(&format!("p{p}"))
            .map(|v| v.keys().copied().collect())
            .unwrap_or_default();
        // One greeting per visit, in a cycle person -> greeter -> person.
        if got != n || seen != (1..=n).collect() {
            wrong_people.push(format!(
                "p{p}: {got} visits, {} distinct greetings, want {n}",
                seen.len()
            ));
        }
    }
    let mut dead_left = 0;
    for a in &admin {
        dead_left += dead_letters(*a).await.expect("every worker answers").len();
    }

    // Which fault each lost or duplicated record ran into: the one whose window (fault to
    // back to running, plus a second) holds the time its input was first sent.
    let during = |seq: u64| -> Option<usize> {
        let t = Duration::from_millis(sent[seq as usize].load(Ordering::Relaxed));
        struck
            .iter()
            .position(|s| s.window.0 <= t + Duration::from_secs(1) && t <= s.window.1 + Duration::from_secs(1))
    };
    // Per kind: count, detections, recoveries, lost, duplicated.
    type Row = (usize, Vec<Duration>, Vec<Duration>, usize, usize);
    let mut rows: BTreeMap<&str, Row> = BTreeMap::new();
    for s in &struck {
        let row = rows.entry(s.fault.kind()).or_default();
        row.0 += 1;
        row.1.push(s.detected);
        row.2.push(s.recovered);
    }
    let mut between = (0, 0);
    for (list, dup) in [(&lost, false), (&duplicated, true)] {
        for seq in list {
            let slot = match during(*seq) {
                Some(i) => {
                    let row = rows.get_mut(struck[i].fault.kind()).unwrap();
                    if dup { &mut row.4 } else { &mut row.3 }
                }
                None => {
                    if dup {
                        &mut between.1
                    } else {
                        &mut between.0
                    }
                }
            };
            *slot += 1;
        }
    }
    let ms = |d: &Duration| d.as_secs_f64() * 1000.0;
    let stats = |v: &[Duration]| {
        let mean = v.iter().map(ms).sum::<f64>() / v.len().max(1) as f64;
        let max = v.iter().map(ms).fold(0.0, f64::max);
        format!("{mean:.0} ms (max {max:.0})")
    };
    eprintln!(
        "chaos results (seed {seed}, load at the end {}):",
        std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
    );
    eprintln!(
        "  inputs {inputs}: {} counter adds, {} chains of {HOPS_PER_CHAIN} hops, {visits} visits; {:.1} s, {} retries",
        counters.len(),
        chains.len(),
        load_time.as_secs_f64(),
        retries.load(Ordering::Relaxed)
    );
    eprintln!("  | fault | count | detection (mean, max) | recovery (mean, max) | lost | duplicated |");
    eprintln!("  |---|---|---|---|---|---|");
    for (kind, (count, det, rec, l, d)) in &rows {
        eprintln!("  | {kind} | {count} | {} | {} | {l} | {d} |", stats(det), stats(rec));
    }
    eprintln!(
        "  | clean stop of every worker (SIGTERM) | 1 | — | {:.0} ms after the restart | — | — |",
        restart_took.as_secs_f64() * 1000.0
    );
    eprintln!(
        "  | (outside any fault window) | — | — | — | {} | {} |",
        between.0, between.1
    );
    for s in &struck {
        eprintln!(
            "  {:?} at {:.1} s: detected {:.0} ms, recovered {:.0} ms {}",
            s.fault,
            s.window.0.as_secs_f64(),
            ms(&s.detected),
            ms(&s.recovered),
            s.note
        );
    }
    eprintln!(
        "  totals file: {} lines for {expected_totals} records: lost {}, duplicated {}, unexpected {unexpected}, keys twice {key_repeats} (read without dedup)",
        lines.len(),
        lost.len(),
        duplicated.len()
    );
    eprintln!(
        "  greetings stream: {greet_records} messages for {visits} visits: duplicated {greets_duplicated} (read without dedup)"
    );
    eprintln!(
        "  counters exact {}/{}, people exact {}/{PEOPLE}, hops {hops}/{}",
        expected_counter.len() - wrong_counters.len(),
        expected_counter.len(),
        PEOPLE as usize - wrong_people.len(),
        chains.len() as i64 * i64::from(HOPS_PER_CHAIN)
    );
    eprintln!("  dead letters replayed {replayed} ({dead_seen:?}), left {dead_left}");
    // Rollbacks by cause, from the coordinator's log (all its processes): more than the faults
    // made means healthy workers were taken for silent ones (false suspicions).
    let mut whys: BTreeMap<String, usize> = BTreeMap::new();
    for line in strip_ansi(&procs.log(0))
        .lines()
        .filter(|l| l.contains("rolling back why="))
    {
        let why = line.split("why=").nth(1).unwrap_or("").trim_matches('"');
        let why = why.split(" for ").next().unwrap_or(why);
        *whys.entry(why.to_string()).or_default() += 1;
    }
    let made = struck
        .iter()
        .filter(|s| matches!(s.fault, Fault::Kill(1..) | Fault::Freeze(_) | Fault::Partition(_)))
        .count();
    eprintln!(
        "  rollbacks by cause (coordinator log, `start` = a coordinator process starting): {whys:?}; faults that roll back a running coordinator: {made}"
    );
    assert!(
        lost.is_empty() && duplicated.is_empty() && unexpected == 0 && key_repeats == 0,
        "the totals file, read without dedup: lost {:?}, duplicated {:?}, unexpected {unexpected}, keys twice {key_repeats}",
        &lost[..lost.len().min(20)],
        &duplicated[..duplicated.len().min(20)]
    );
    assert_eq!(
        (greets_duplicated, greet_records as u64),
        (0, visits),
        "the greetings stream, read without dedup"
    );
    assert!(wrong_counters.is_empty(), "counters: {wrong_counters:?}");
    assert!(wrong_people.is_empty(), "people: {wrong_people:?}");
    assert_eq!(
        hops,
        chains.len() as i64 * i64::from(HOPS_PER_CHAIN),
        "every hop counted once"
    );
    assert_eq!(dead_left, 0, "every dead letter replayed");
    assert!(
        dead_seen.contains_key("invocation_failed"),
        "the function outage made dead letters: {dead_seen:?}"
    );
}
