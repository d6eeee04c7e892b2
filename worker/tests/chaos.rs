//! Chaos, with real parts: three `spindle worker` processes, checkpoints to a real S3 server
//! (moto, on loopback), the example functions, and a workload of counters, chains of hops
//! between addresses (cycles across workers) and the greeter cycle (person -> greeter ->
//! person). While it runs, workers — the coordinator among them — are killed with SIGKILL at
//! random moments and restarted, the storage server stops answering for a while, and the whole
//! application is stopped cleanly (SIGTERM to every worker: final checkpoint) and started
//! again. Then every record is checked: nothing lost, nothing applied twice, every counter
//! exact — and the two egresses, a JSON-lines file and a NATS JetStream stream, are read by
//! plain readers that do not deduplicate: every record must be there exactly once.
//!
//! `SPINDLE_CHAOS_INPUTS` (default 100000) sets the number of input records; `SPINDLE_CHAOS_SEED`
//! the random seed (printed, so a failing run can be repeated).

mod support;

use std::collections::{BTreeMap, BTreeSet};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::brokers::Nats;
use support::moto::Moto;
use support::procs::{Procs, state, status, wait_running};
use support::*;
use tokio::net::TcpListener;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_killed_at_random_and_storage_outage_lose_and_duplicate_nothing() {
    init_logs();
    let inputs: u64 = std::env::var("SPINDLE_CHAOS_INPUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let seed: u64 = std::env::var("SPINDLE_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("chaos: {inputs} inputs, seed {seed} (SPINDLE_CHAOS_SEED={seed} repeats the kill schedule)");
    let dir = TempDir::new("chaos");
    let moto = Moto::start("spindle");
    let (fn_addr, _stop_functions) = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(spindle_sdk::serve(
            listener,
            Arc::new(spindle_example_greeter::functions()),
            async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            },
        ));
        (addr, stop)
    };
    let nats = Nats::start(dir.path(), "");
    let js = nats.jetstream(None).await;
    Nats::create_stream(&js, "GREETS", &["greets"]).await;
    eprintln!(
        "started: example functions (Rust SDK) on {fn_addr}, nats-server (JetStream stream GREETS) at {}",
        nats.url
    );
    let yaml = format!(
        r#"apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {{name: chaos}}
spec:
  functions:
    - typename: example/*
      endpoint: http://{fn_addr}/statefun
      maxBatchSize: 100
      maxInFlight: 64
      callTimeout: 60s
  ingresses:
    - name: web
      http: {{}}
  egresses:
    - typename: example/totals
      file: {{path: totals.jsonl}}
    - typename: example/greets
      nats: {{servers: ["{nats}"], subject: greets}}
  workers: {WORKERS}
  checkpoint:
    interval: 200ms
    storage: {}
"#,
        moto.url("checkpoints"),
        nats = nats.url,
    );
    let app = dir.path().join("app.yaml");
    std::fs::write(&app, yaml).unwrap();
    let mut procs = Procs::new(dir.path(), app, WORKERS, moto.env());
    procs.spawn_all();
    let admin = procs.admin.clone();
    let ingress = procs.ingress.clone();
    let mut generation = wait_running(&admin, 0, Duration::from_secs(120)).await;
    eprintln!(
        "started: {WORKERS} spindle worker processes (generation {generation}); logs in {}",
        dir.path().display()
    );

    // Load: each input once, with an idempotency key and a durable acknowledgement, retried
    // (at another worker) until acknowledged — what a careful HTTP caller does.
    let next = Arc::new(AtomicU64::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..512 {
        let (next, retries, done, ingress) = (next.clone(), retries.clone(), done.clone(), ingress.clone());
        load.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= inputs {
                    return;
                }
                let (path, ct, body) = input(i);
                let key = format!("in-{i}");
                let headers = [("spindle-ack", "durable"), ("idempotency-key", key.as_str())];
                let mut attempt = 0;
                loop {
                    let at = ingress[(i as usize + attempt) % WORKERS];
                    match post_with(at, &path, ct, body.clone(), &headers).await {
                        Some((200, _, _)) => break,
                        _ => {
                            attempt += 1;
                            retries.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    // Chaos: kill a worker (the coordinator on the second round), restart it at once, and
    // measure until every worker runs the next generation; pause the storage once.
    let mut rng = Rng(seed);
    let mut recoveries = Vec::new();
    let mut outage_failed = 0;
    let mut outage = Duration::ZERO;
    let kills: u64 = 4;
    for round in 0..kills {
        // Spread over the run: round r strikes somewhere in the r-th fifth of the inputs.
        let target = inputs * (round + 1) / (kills + 1) + rng.below((inputs / (kills + 1) / 2).max(1));
        let deadline = Instant::now() + Duration::from_secs(1800);
        while done.load(Ordering::Relaxed) < target.min(inputs - 1) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if round == 2 {
            // The outage lasts until a checkpoint has failed (a stopped server makes every
            // request time out, and the store's retries give up after seconds), so the test
            // does not depend on how the outage lines up with the checkpoint schedule.
            let before = status(admin[0]).await.unwrap_or_default();
            let failed_before = before["checkpointsFailed"].as_u64().unwrap_or(0);
            eprintln!("chaos: storage paused at {} acknowledged", done.load(Ordering::Relaxed));
            let paused = Instant::now();
            moto.pause();
            let deadline = paused + Duration::from_secs(120);
            while status(admin[0]).await.unwrap_or_default()["checkpointsFailed"]
                .as_u64()
                .unwrap_or(0)
                <= failed_before
            {
                assert!(
                    Instant::now() < deadline,
                    "no checkpoint failed while the storage was stopped"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            outage = paused.elapsed();
            moto.resume();
            let deadline = Instant::now() + Duration::from_secs(60);
            let after = loop {
                let s = status(admin[0]).await.unwrap_or_default();
                if s["completedCheckpoint"].as_u64() > before["completedCheckpoint"].as_u64() {
                    break s;
                }
                assert!(
                    Instant::now() < deadline,
                    "checkpoints did not recover after the storage outage"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            outage_failed = after["checkpointsFailed"].as_u64().unwrap_or(0) - failed_before;
            eprintln!(
                "chaos: storage resumed after {:.1} s; {outage_failed} checkpoints failed meanwhile, checkpoint {} completed after",
                outage.as_secs_f64(),
                after["completedCheckpoint"]
            );
        }
        let victim = if round == 1 {
            0
        } else {
            rng.below(WORKERS as u64) as usize
        };
        let at = Instant::now();
        procs.kill9(victim);
        procs.spawn(victim);
        generation = wait_running(&admin, generation, Duration::from_secs(120)).await;
        let took = at.elapsed();
        recoveries.push(took);
        eprintln!(
            "chaos: kill -9 worker {victim} at {} acknowledged -> generation {generation} running on all after {:.0} ms",
            done.load(Ordering::Relaxed),
            took.as_secs_f64() * 1000.0
        );
    }
    // A clean stop of the whole application mid-stream (SIGTERM to every worker at once), and
    // a start from its final checkpoint: the callers retry meanwhile.
    let target = inputs * 9 / 10;
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
    generation = wait_running(&admin, generation, Duration::from_secs(120)).await;
    let restart_took = at.elapsed();
    eprintln!(
        "chaos: clean stop with a final checkpoint on every worker in {:.0} ms; running again (generation {generation}) after {:.0} ms",
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

    // Every effect of the inputs must arrive: wait for the egress, then check everything.
    let counters: Vec<u64> = (0..inputs).filter(|i| i % 10 <= 6).collect();
    let chains: Vec<u64> = (0..inputs).filter(|i| matches!(i % 10, 7 | 8)).collect();
    let visits = inputs - counters.len() as u64 - chains.len() as u64;
    let expected_totals = counters.len() + chains.len();
    // The egresses as plain readers see them — no deduplication by key: the file's lines and
    // the stream's messages. Wait until both hold at least what is expected, then count.
    let totals_file = dir.path().join("totals.jsonl");
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let totals = std::fs::read_to_string(&totals_file)
            .unwrap_or_default()
            .lines()
            .count();
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
    let lost = want.iter().filter(|s| !seqs.contains_key(s)).count();
    let duplicated = seqs.values().filter(|n| **n > 1).count();
    let unexpected = seqs.keys().filter(|s| !want.contains(s)).count();

    // State: every counter, the hop counts, every person's visits.
    let mut expected_counter: BTreeMap<u64, i64> = BTreeMap::new();
    for i in &counters {
        *expected_counter.entry(i % COUNTERS).or_default() += (i % 13) as i64 + 1;
    }
    let mut exact = 0;
    for (k, sum) in &expected_counter {
        let got = state(&admin, &format!("/example/counter/c{k}"), "total").await;
        assert_eq!(got, Some(*sum), "counter c{k}");
        exact += 1;
    }
    let mut hops = 0;
    for h in 0..HOP_IDS {
        hops += state(&admin, &format!("/example/hop/h{h}"), "hops").await.unwrap_or(0);
    }
    let mut visits_exact = 0;
    for p in 0..PEOPLE {
        let n = (0..inputs).filter(|i| i % 10 == 9 && i % PEOPLE == p).count() as i64;
        let got = state(&admin, &format!("/example/person/p{p}"), "visits")
            .await
            .unwrap_or(0);
        assert_eq!(got, n, "visits of p{p}");
        let seen: BTreeSet<i64> = greets
            .get(&format!("p{p}"))
            .map(|v| v.keys().copied().collect())
            .unwrap_or_default();
        assert_eq!(
            seen,
            (1..=n).collect(),
            "greetings of p{p} in the stream: one per visit, in a cycle person -> greeter -> person"
        );
        visits_exact += 1;
    }
    let mut dead = 0;
    for a in &admin {
        let (_, body) = get(*a, "/dead-letters").await;
        dead += serde_json::from_str::<serde_json::Value>(&body)
            .unwrap()
            .as_array()
            .map_or(0, Vec::len);
    }
    let mean = recoveries.iter().map(Duration::as_secs_f64).sum::<f64>() / recoveries.len().max(1) as f64;
    let worst = recoveries.iter().max().copied().unwrap_or_default();
    eprintln!("chaos results (seed {seed}):");
    eprintln!(
        "  inputs {inputs}: {} counter adds, {} chains of {HOPS_PER_CHAIN} hops, {visits} visits",
        counters.len(),
        chains.len()
    );
    eprintln!(
        "  kills {} (coordinator included), storage outage {:.1} s ({outage_failed} checkpoints failed, then recovered), generation {generation}",
        recoveries.len(),
        outage.as_secs_f64()
    );
    eprintln!(
        "  kill -9 -> all workers running again: mean {:.0} ms, worst {:.0} ms",
        mean * 1000.0,
        worst.as_secs_f64() * 1000.0
    );
    eprintln!(
        "  totals file: {} lines for {expected_totals} records: lost {lost}, duplicated {duplicated}, unexpected {unexpected}, keys twice {key_repeats} (read without dedup)",
        lines.len()
    );
    eprintln!(
        "  greetings stream: {greet_records} messages for {visits} visits: duplicated {greets_duplicated} (read without dedup)"
    );
    eprintln!(
        "  counters exact {exact}/{}, people exact {visits_exact}/{PEOPLE} ({greet_records} greetings), hops {hops}/{}",
        expected_counter.len(),
        chains.len() as i64 * i64::from(HOPS_PER_CHAIN)
    );
    eprintln!("  dead letters {dead}");
    assert_eq!(
        (lost, duplicated, unexpected, key_repeats),
        (0, 0, 0, 0),
        "the totals file, read without dedup"
    );
    assert_eq!(
        (greets_duplicated, greet_records as u64),
        (0, visits),
        "the greetings stream, read without dedup"
    );
    assert_eq!(
        hops,
        chains.len() as i64 * i64::from(HOPS_PER_CHAIN),
        "every hop counted once"
    );
    assert_eq!(dead, 0, "no dead letters");
    assert!(recoveries.len() >= 3, "the chaos ran: {} kills", recoveries.len());
    assert!(
        outage_failed >= 1,
        "the storage outage failed checkpoints (then they recovered)"
    );
}
