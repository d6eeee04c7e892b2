//! The exactly-once Kafka egress (`deliverySemantic: {type: exactly-once}`: transactions per
//! worker) on Apache Kafka 4 — tansu serves aborted records to `read_committed` consumers, so
//! it cannot show this. Kafka → the example counter (Rust SDK) → Kafka, three `spindle worker`
//! processes, checkpoints every 200 ms; while inputs are produced, each worker in turn (the
//! coordinator among them) is killed with SIGKILL and restarted.
//!
//! Guarantee checked: a `read_committed` consumer (kafka-python, an independent client) that
//! does **not** deduplicate sees every input's output exactly once — no seq missing, none
//! twice, no idempotency key twice. Then the whole application stops cleanly (SIGTERM) and
//! starts again: the topic gets no record more (a clean restart re-sends nothing).

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::brokers::{Flavor, Kafka, TestRecord};
use support::procs::{Procs, state, status, wait_running};
use support::*;

const WORKERS: usize = 3;
const PARTITIONS: i32 = 4;
const OUT_PARTITIONS: i32 = 3;
const KEYS: u64 = 100;

fn input(i: u64) -> TestRecord {
    let value = serde_json::json!({"seq": i, "value": (i % 7) as i64 + 1}).to_string();
    TestRecord::new(Some(&format!("c{}", i % KEYS)), value.as_bytes())
}

/// A record as the reader saw it.
struct Seen {
    seq: u64,
    key: Option<String>,
}

/// Every record of `totals` a consumer of `isolation` can see, read by kafka-python.
fn read(broker: &Kafka, isolation: &str) -> Vec<Seen> {
    let script = workspace_root().join("e2e/kafka/read_all.py");
    let out = std::process::Command::new(python_venv().join("bin/python"))
        .arg(&script)
        .args([&broker.addr, "totals", &OUT_PARTITIONS.to_string(), isolation])
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("running read_all.py");
    assert!(out.status.success(), "{} failed", script.display());
    let rows: Vec<(i32, i64, String, Option<String>)> =
        serde_json::from_slice(&out.stdout).expect("read_all.py prints JSON");
    rows.into_iter()
        .map(|(p, o, value, key)| {
            let v: serde_json::Value =
                serde_json::from_str(&value).unwrap_or_else(|e| panic!("totals/{p}@{o} is not JSON ({e}): {value}"));
            Seen {
                seq: v["seq"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("totals/{p}@{o} has no seq: {value}")),
                key,
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_egress_exactly_once_for_read_committed_readers_through_kill_9_apache_kafka() {
    init_logs();
    let inputs: u64 = std::env::var("SPINDLE_KAFKA_INPUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12_000);
    let Some(broker) = Kafka::start(
        Flavor::Apache,
        "kafka_egress_exactly_once_for_read_committed_readers_through_kill_9",
    )
    .await
    else {
        return;
    };
    let dir = TempDir::new("kafka-eos");
    broker.create_topic("adds", PARTITIONS).await;
    broker.create_topic("totals", OUT_PARTITIONS).await;
    let (fn_addr, _stop_functions) = example_functions().await;
    eprintln!(
        "started: example functions (Rust SDK) on {fn_addr}; topics adds ({PARTITIONS} partitions), totals ({OUT_PARTITIONS})"
    );
    let yaml = format!(
        r#"apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {{name: kafka-eos}}
spec:
  functions:
    - typename: example/*
      endpoint: http://{fn_addr}/statefun
  ingresses:
    - name: adds
      kafka:
        brokers: ["{broker}"]
        topics: [{{topic: adds, valueType: example/Add, targets: [example/counter], valueFormat: json}}]
  egresses:
    - typename: example/totals
      kafka:
        brokers: ["{broker}"]
        topic: totals
        deliverySemantic: {{type: exactly-once, transactionTimeout: 30s}}
  workers: {WORKERS}
  checkpoint:
    interval: 200ms
    storage: {storage}
"#,
        broker = broker.addr,
        storage = dir.path().join("checkpoints").display()
    );
    let app = dir.path().join("app.yaml");
    std::fs::write(&app, yaml).unwrap();
    let mut procs = Procs::new(dir.path(), app, WORKERS, vec![]);
    procs.spawn_all();
    let admin = procs.admin.clone();
    let mut generation = wait_running(&admin, 0, Duration::from_secs(120)).await;
    eprintln!(
        "started: {WORKERS} spindle worker processes (generation {generation}); logs in {}",
        dir.path().display()
    );

    // Produce in batches of 100, round-robin over the partitions; kill -9 worker 1, then the
    // coordinator (0), then worker 2, at a quarter, half and three quarters of the inputs.
    let client = broker.client().await;
    let mut produced = 0u64;
    let mut kills = Vec::new();
    while produced < inputs {
        let n = 100.min(inputs - produced);
        let p = (produced / 100) as i32 % PARTITIONS;
        broker
            .produce(&client, "adds", p, (produced..produced + n).map(input).collect())
            .await;
        produced += n;
        for (at, victim) in [(inputs / 4, 1), (inputs / 2, 0), (3 * inputs / 4, 2)] {
            if produced >= at && !kills.iter().any(|(v, _)| *v == victim) {
                let (g, took) = procs.kill_and_restart(victim, generation).await;
                generation = g;
                eprintln!(
                    "chaos: kill -9 worker {victim} after {produced} produced -> generation {generation} on all after {} ms",
                    took.as_millis()
                );
                kills.push((victim, took));
            }
        }
    }
    eprintln!("produced {inputs} inputs");

    // The read_committed reader, without deduplication, until every seq is there.
    let deadline = Instant::now() + Duration::from_secs(180);
    let seen = loop {
        let seen = read(&broker, "read_committed");
        let distinct: std::collections::BTreeSet<u64> = seen.iter().map(|s| s.seq).collect();
        if distinct.len() as u64 >= inputs {
            break seen;
        }
        if Instant::now() >= deadline {
            let missing: Vec<u64> = (0..inputs).filter(|s| !distinct.contains(s)).take(20).collect();
            let mut workers = Vec::new();
            for (i, a) in admin.iter().enumerate() {
                let st = status(*a).await.unwrap_or_default();
                workers.push(format!(
                    "worker {i}: generation {} completed checkpoint {} egress pending {}",
                    st["generation"], st["completedCheckpoint"], st["egressPending"]
                ));
            }
            panic!(
                "read_committed output incomplete after 180 s: {} of {inputs} seqs; first missing {missing:?}\n{}",
                distinct.len(),
                workers.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut per_seq: BTreeMap<u64, usize> = BTreeMap::new();
    let mut per_key: BTreeMap<String, usize> = BTreeMap::new();
    for s in &seen {
        *per_seq.entry(s.seq).or_default() += 1;
        let key = s.key.clone().expect("every record carries its idempotency key");
        *per_key.entry(key).or_default() += 1;
    }
    let lost = (0..inputs).filter(|s| !per_seq.contains_key(s)).count();
    let twice: Vec<u64> = per_seq.iter().filter(|(_, n)| **n > 1).map(|(s, _)| *s).collect();
    let keys_twice = per_key.values().filter(|n| **n > 1).count();
    let unexpected = per_seq.keys().filter(|s| **s >= inputs).count();
    let uncommitted = read(&broker, "read_uncommitted").len();

    // State: every counter exact (the function side of exactly-once).
    let mut want: BTreeMap<u64, i64> = BTreeMap::new();
    for i in 0..inputs {
        *want.entry(i % KEYS).or_default() += (i % 7) as i64 + 1;
    }
    for (k, sum) in &want {
        let got = state(&admin, &format!("/example/counter/c{k}"), "total").await;
        assert_eq!(got, Some(*sum), "counter c{k}");
    }
    let read_backs: Vec<String> = (0..WORKERS)
        .flat_map(|i| {
            procs
                .log(i)
                .lines()
                .filter(|l| l.contains("read the topic back"))
                .map(|l| format!("worker {i}: {}", l.split("Kafka egress: ").nth(1).unwrap_or(l)))
                .collect::<Vec<_>>()
        })
        .collect();

    eprintln!("kafka exactly-once egress results (apache-kafka):");
    eprintln!(
        "  inputs {inputs} over {PARTITIONS} partitions; kills {:?}",
        kills
            .iter()
            .map(|(v, t)| format!("worker {v} ({} ms to recover)", t.as_millis()))
            .collect::<Vec<_>>()
    );
    eprintln!(
        "  read_committed (kafka-python, no dedup): {} records; lost {lost}, seqs twice {}, keys twice {keys_twice}, unexpected {unexpected}",
        seen.len(),
        twice.len()
    );
    eprintln!(
        "  read_uncommitted sees {uncommitted} records: {} in aborted transactions, hidden from read_committed",
        uncommitted.saturating_sub(seen.len())
    );
    for r in &read_backs {
        eprintln!("  recovery {r}");
    }
    eprintln!("  counters exact {}/{KEYS}", want.len());
    assert_eq!(
        (lost, twice.len(), keys_twice, unexpected),
        (0, 0, 0, 0),
        "every input's output exactly once for a read_committed reader; seqs twice (first 20): {:?}",
        &twice[..twice.len().min(20)]
    );
    assert_eq!(seen.len() as u64, inputs);
    assert_eq!(kills.len(), 3, "every kill happened");

    // A clean stop and start again: nothing is written twice.
    assert!(
        procs.term_all(Duration::from_secs(60)),
        "every worker stops cleanly on SIGTERM"
    );
    let committed_before = read(&broker, "read_committed").len();
    let all_before = read(&broker, "read_uncommitted").len();
    procs.spawn_all();
    let g = wait_running(&admin, 0, Duration::from_secs(120)).await;
    let started = status(admin[0]).await.unwrap_or_default()["completedCheckpoint"]
        .as_u64()
        .unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = status(admin[0]).await.unwrap_or_default()["completedCheckpoint"]
            .as_u64()
            .unwrap_or(0);
        if now >= started + 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no 3 checkpoints after the restart (completed {now}, started at {started})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let committed_after = read(&broker, "read_committed").len();
    let all_after = read(&broker, "read_uncommitted").len();
    eprintln!(
        "  clean stop and restart (generation {g}, 3 checkpoints later): read_committed {committed_before} -> {committed_after} records, read_uncommitted {all_before} -> {all_after}"
    );
    assert_eq!(
        (committed_after, all_after),
        (committed_before, all_before),
        "a clean restart re-sends nothing"
    );
}
