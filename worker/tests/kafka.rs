//! Kafka → functions → Kafka, with real parts: a broker started here (once tansu, once Apache
//! Kafka: one test per broker, named after it), three `spindle worker` processes, the example counter (Rust SDK), checkpoints every 200 ms. While records
//! are produced, a worker and then the coordinator are killed with SIGKILL and restarted. Then
//! every input is checked: its effect exactly once in state, its output exactly once after
//! dropping repeats of an idempotency key, every bad record in the dead letters, and the
//! consumer group's committed offsets at the end of every partition.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use support::brokers::{Flavor, Kafka, TestRecord};
use support::procs::{Procs, state, wait_running};
use support::*;

const WORKERS: usize = 3;
const PARTITIONS: i32 = 4;
const OUT_PARTITIONS: i32 = 3;
const KEYS: u64 = 100;

/// Input `i`: a good record for counter `c{i % KEYS}`.
fn good(i: u64) -> TestRecord {
    let value = serde_json::json!({"seq": i, "value": (i % 7) as i64 + 1}).to_string();
    TestRecord::new(Some(&format!("c{}", i % KEYS)), value.as_bytes())
}

/// Bad records, one of each kind.
fn bad() -> Vec<(TestRecord, &'static str)> {
    let mut no_key = TestRecord::new(None, b"{\"seq\":0,\"value\":1}");
    no_key.key = None;
    let not_json = TestRecord::new(Some("c1"), b"{not json");
    let mut unknown = TestRecord::new(Some("c1"), b"{\"seq\":0,\"value\":1}");
    unknown.headers.insert("spindle-target".into(), b"nobody/home".to_vec());
    vec![
        (no_key, "no key"),
        (not_json, "not JSON"),
        (unknown, "no function serves"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_in_and_out_exactly_once_through_kill_9_tansu() {
    exactly_once_through_kill_9(Flavor::Tansu).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kafka_in_and_out_exactly_once_through_kill_9_apache_kafka() {
    exactly_once_through_kill_9(Flavor::Apache).await;
}

/// Each variant runs a broker and three worker processes: one at a time on two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn exactly_once_through_kill_9(flavor: Flavor) {
    init_logs();
    let _one = ONE_AT_A_TIME.lock().await;
    let inputs: u64 = std::env::var("SPINDLE_KAFKA_INPUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let Some(broker) = Kafka::start(flavor, "kafka_in_and_out_exactly_once_through_kill_9").await else {
        return;
    };
    let dir = TempDir::new("kafka-e2e");
    broker.create_topic("adds", PARTITIONS).await;
    broker.create_topic("totals", OUT_PARTITIONS).await;
    let (fn_addr, _stop_functions) = example_functions().await;
    eprintln!(
        "started: example functions (Rust SDK) on {fn_addr}; topics adds ({PARTITIONS} partitions), totals ({OUT_PARTITIONS})"
    );
    let yaml = format!(
        r#"apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {{name: kafka-e2e}}
spec:
  functions:
    - typename: example/*
      endpoint: http://{fn_addr}/statefun
  ingresses:
    - name: adds
      kafka:
        brokers: ["{broker}"]
        topics: [{{topic: adds, valueType: example/Add, targets: [example/counter], valueFormat: json}}]
        consumerGroupId: kafka-e2e-group
  egresses:
    - typename: example/totals
      kafka: {{brokers: ["{broker}"], topic: totals}}
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

    // Produce in batches of 100, round-robin over the partitions, killing a worker after a
    // third and the coordinator after two thirds of the inputs.
    let client = broker.client().await;
    let mut bad_offsets: BTreeMap<String, &'static str> = BTreeMap::new();
    let mut produced = 0u64;
    let mut kills = Vec::new();
    while produced < inputs {
        let n = 100.min(inputs - produced);
        let p = (produced / 100) as i32 % PARTITIONS;
        let mut batch: Vec<TestRecord> = (produced..produced + n).map(good).collect();
        let mut reasons = Vec::new();
        if produced % 1000 == 500 {
            for (r, why) in bad() {
                batch.push(r);
                reasons.push(why);
            }
        }
        let offsets = broker.produce(&client, "adds", p, batch).await;
        for (o, why) in offsets[n as usize..].iter().zip(reasons) {
            bad_offsets.insert(format!("adds/{p}@{o}"), why);
        }
        produced += n;
        for (at, victim) in [(inputs / 3, 1), (2 * inputs / 3, 0)] {
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
    eprintln!("produced {inputs} good and {} bad records", bad_offsets.len());

    // Every input's total must come out: read the output topic until it has every seq.
    let deadline = Instant::now() + Duration::from_secs(180);
    let out = loop {
        let out = broker.read_all(&client, "totals", OUT_PARTITIONS).await;
        let seqs: BTreeSet<u64> = out
            .iter()
            .filter_map(|(_, _, r)| {
                serde_json::from_slice::<serde_json::Value>(r.value.as_deref()?).ok()?["seq"].as_u64()
            })
            .collect();
        if seqs.len() as u64 >= inputs {
            break out;
        }
        if Instant::now() >= deadline {
            // Say what is missing and where it stands: which inputs (by input partition),
            // and what every worker holds (egress pending, dead letters, checkpoints).
            let missing: Vec<u64> = (0..inputs).filter(|s| !seqs.contains(s)).collect();
            let mut by_partition: BTreeMap<i32, Vec<u64>> = BTreeMap::new();
            for s in &missing {
                by_partition.entry((s / 100) as i32 % PARTITIONS).or_default().push(*s);
            }
            let mut workers = Vec::new();
            for (i, a) in admin.iter().enumerate() {
                let st = support::procs::status(*a).await.unwrap_or_default();
                let (_, dead) = get(*a, "/dead-letters").await;
                workers.push(format!(
                    "worker {i}: generation {} completed checkpoint {} egress pending {} dead letters {}",
                    st["generation"], st["completedCheckpoint"], st["egressPending"], dead
                ));
            }
            let shown: Vec<String> = by_partition
                .iter()
                .map(|(p, s)| format!("adds/{p}: {} missing, first {:?}", s.len(), &s[..s.len().min(10)]))
                .collect();
            panic!(
                "output incomplete after 180 s: {} of {inputs} seqs\n{}\n{}",
                seqs.len(),
                shown.join("\n"),
                workers.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut by_key: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut resent = 0;
    for (_, _, r) in &out {
        let key = r
            .headers
            .get("idempotency-key")
            .cloned()
            .expect("every record carries its idempotency key");
        let value = r.value.clone().unwrap();
        if let Some(old) = by_key.insert(key, value.clone()) {
            assert_eq!(old, value, "a re-sent record is the same record");
            resent += 1;
        }
    }
    let mut seqs: BTreeMap<u64, usize> = BTreeMap::new();
    for v in by_key.values() {
        let v: serde_json::Value = serde_json::from_slice(v).unwrap();
        *seqs.entry(v["seq"].as_u64().unwrap()).or_default() += 1;
    }
    let lost = (0..inputs).filter(|s| !seqs.contains_key(s)).count();
    let duplicated = seqs.values().filter(|n| **n > 1).count();
    let unexpected = seqs.keys().filter(|s| **s >= inputs).count();

    // State: every counter exact.
    let mut want: BTreeMap<u64, i64> = BTreeMap::new();
    for i in 0..inputs {
        *want.entry(i % KEYS).or_default() += (i % 7) as i64 + 1;
    }
    let mut exact = 0;
    for (k, sum) in &want {
        let got = state(&admin, &format!("/example/counter/c{k}"), "total").await;
        assert_eq!(got, Some(*sum), "counter c{k}");
        exact += 1;
    }

    // Bad records: each in the dead letters (a rollback may write one again), none applied.
    let dead: BTreeSet<String> = procs
        .dead_letters()
        .iter()
        .filter_map(|d| {
            let reason = d["reason"].as_str()?;
            let at = reason.strip_prefix("kafka record ")?.split(':').next()?;
            Some(at.to_string())
        })
        .collect();
    let want_dead: BTreeSet<String> = bad_offsets.keys().cloned().collect();
    assert_eq!(dead, want_dead, "every bad record, and nothing else, is a dead letter");
    for d in procs.dead_letters() {
        let reason = d["reason"].as_str().unwrap();
        let at = reason.strip_prefix("kafka record ").unwrap().split(':').next().unwrap();
        assert!(reason.contains(bad_offsets[at]), "{reason}");
    }

    // The consumer group reaches the end of every partition (committed after checkpoints).
    let ends = broker.end_offsets(&client, "adds", PARTITIONS).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let committed = loop {
        let mut conn = spindle_worker::ingress::kafka::group::coordinator(
            std::slice::from_ref(&broker.addr),
            "kafka-e2e-group",
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        let got: Vec<i64> = conn
            .fetch("kafka-e2e-group", "adds", &(0..PARTITIONS).collect::<Vec<_>>())
            .await
            .unwrap()
            .into_iter()
            .map(|(_, o)| o)
            .collect();
        if got == ends {
            break got;
        }
        assert!(
            Instant::now() < deadline,
            "committed offsets {got:?} never reached the end offsets {ends:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    eprintln!("kafka e2e results ({}):", broker.name());
    eprintln!(
        "  inputs {inputs} over {PARTITIONS} partitions, {} bad records; kills {:?}",
        bad_offsets.len(),
        kills
            .iter()
            .map(|(v, t)| format!("worker {v} ({} ms to recover)", t.as_millis()))
            .collect::<Vec<_>>()
    );
    eprintln!(
        "  output records {}, re-sent with the same key (dropped) {resent}",
        out.len()
    );
    eprintln!("  lost {lost}, duplicated {duplicated}, unexpected {unexpected} (after idempotency-key dedup)");
    eprintln!(
        "  counters exact {exact}/{KEYS}; dead letters {} distinct, all bad records",
        dead.len()
    );
    eprintln!("  consumer group offsets {committed:?} = end offsets");
    assert_eq!((lost, duplicated, unexpected), (0, 0, 0));
    assert_eq!(kills.len(), 2, "both kills happened");
}
