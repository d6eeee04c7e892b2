//! Checkpoints and restores through real workers (in this process) and the Rust-SDK counter
//! function: a restart resumes from the latest checkpoint, durable acknowledgements and
//! idempotency keys give a retrying caller exactly-once, and a checkpoint restores onto another
//! worker count (rescaling 3 → 2 → 4).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use spindle_spec::TypeName;
use spindle_worker::{Address, Worker};
use support::*;
use tokio::net::TcpListener;

const IDLE: Duration = Duration::from_secs(60);

/// Serves the example functions (Rust SDK) in this process; returns the endpoint.
async fn functions() -> (String, tokio::sync::watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
    let functions = Arc::new(spindle_example_greeter::functions());
    tokio::spawn(spindle_sdk::serve(listener, functions, async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    eprintln!("started: example functions (Rust SDK) on {addr}");
    (format!("http://{addr}/statefun"), stop)
}

fn app(endpoint: &str, store: &Path) -> String {
    format!(
        r#"
apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {{name: ck}}
spec:
  functions:
    - typename: example/*
      endpoint: {endpoint}
  ingresses:
    - name: web
      http: {{}}
  egresses:
    - typename: example/totals
      file: {{path: totals.jsonl}}
  checkpoint:
    interval: 100ms
    storage: {}
"#,
        store.display()
    )
}

/// Adds `value` to counter `key` with a durable acknowledgement and an idempotency key,
/// retrying until the answer says it is in a completed checkpoint; returns that checkpoint.
async fn add(ingress: std::net::SocketAddr, key: &str, seq: u64, value: i64) -> u64 {
    let body = serde_json::json!({"seq": seq, "value": value}).to_string().into_bytes();
    let idem = format!("add-{seq}");
    let headers = [("spindle-ack", "durable"), ("idempotency-key", idem.as_str())];
    let deadline = tokio::time::Instant::now() + IDLE;
    loop {
        let answer = post_with(
            ingress,
            &format!("/example/counter/{key}"),
            "application/vnd.example/Add",
            body.clone(),
            &headers,
        )
        .await;
        if let Some((200, h, _)) = &answer {
            return h["spindle-checkpoint"].to_str().unwrap().parse().unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "add {seq} not durable: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn total(workers: &[Worker], key: &str) -> Option<i64> {
    let addr = Address::new(TypeName::parse("example/counter").unwrap(), key);
    for w in workers {
        for (name, value) in w.read_state(addr.clone()).await.unwrap() {
            if name == "total" {
                match spindle_protocol::Primitive::decode(&value.typename, &value.bytes) {
                    Some(spindle_protocol::Primitive::Long(n)) => return Some(n),
                    other => panic!("total of {key} is {other:?}"),
                }
            }
        }
    }
    None
}

/// Egress records by idempotency key: each key once, and the set of `seq`s they carry.
fn released(paths: &[std::path::PathBuf]) -> (usize, BTreeSet<u64>) {
    let mut by_key = BTreeMap::new();
    let mut lines = 0;
    for p in paths {
        for line in egress_lines(p) {
            lines += 1;
            let key = line["key"].as_str().expect("released records carry a key").to_string();
            let seq = line["value"]["seq"].as_u64().unwrap();
            if let Some(old) = by_key.insert(key.clone(), seq) {
                assert_eq!(old, seq, "one key, one record: {key}");
            }
        }
    }
    (lines, by_key.into_values().collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_from_the_latest_checkpoint_and_a_repeated_key_applies_once() {
    let (endpoint, _stop) = functions().await;
    let dir = TempDir::new("restart");
    let yaml = app(&endpoint, &dir.path().join("store"));
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    let worker = start_worker(&yaml, dir.path()).await;
    let ingress = worker.ingress_addr.unwrap();
    let mut checkpoints = BTreeSet::new();
    for seq in 0..50u64 {
        let key = format!("k{}", seq % 5);
        checkpoints.insert(add(ingress, &key, seq, seq as i64 + 1).await);
        *expected.entry(key).or_default() += seq as i64 + 1;
    }
    assert!(
        checkpoints.len() > 1,
        "the adds spread over several checkpoints: {checkpoints:?}"
    );
    // The caller did not hear the answer and sends add 7 again: acknowledged, not applied.
    add(ingress, "k2", 7, 8).await;
    worker.wait_idle(IDLE).await.unwrap();
    assert!(worker.metrics.ingress_duplicates.get() == 1);
    let before = worker.progress();
    worker.shutdown().await;

    let worker = start_worker(&yaml, dir.path()).await;
    worker.wait_idle(IDLE).await.unwrap();
    let after = worker.progress();
    assert!(after.generation > before.generation, "{before:?} -> {after:?}");
    assert!(
        after.restored >= *checkpoints.last().unwrap(),
        "{after:?} restores the checkpoint of the last durable add"
    );
    for (key, sum) in &expected {
        assert_eq!(
            total(std::slice::from_ref(&worker), key).await,
            Some(*sum),
            "counter {key}"
        );
    }
    let ingress = worker.ingress_addr.unwrap();
    add(ingress, "k2", 7, 8).await; // still remembered across the restart
    add(ingress, "k0", 100, 1000).await;
    worker.wait_idle(IDLE).await.unwrap();
    assert_eq!(
        total(std::slice::from_ref(&worker), "k0").await,
        Some(expected["k0"] + 1000)
    );
    assert_eq!(total(std::slice::from_ref(&worker), "k2").await, Some(expected["k2"]));
    worker.shutdown().await;

    let (lines, seqs) = released(&[dir.path().join("totals.jsonl")]);
    let mut want: BTreeSet<u64> = (0..50).collect();
    want.insert(100);
    assert_eq!(
        seqs, want,
        "every add reported once after dedup by idempotency key ({lines} lines)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_acknowledgement_needs_checkpoints_and_names_bad_headers() {
    let (endpoint, _stop) = functions().await;
    let dir = TempDir::new("ack");
    let yaml = app(&endpoint, &dir.path().join("store")).replace("interval: 100ms", "interval: 0s");
    let worker = start_worker(&yaml, dir.path()).await;
    let ingress = worker.ingress_addr.unwrap();
    let body = br#"{"seq":1,"value":1}"#.to_vec();
    let (status, _, text) = post_with(
        ingress,
        "/example/counter/a",
        "application/vnd.example/Add",
        body.clone(),
        &[("spindle-ack", "durable")],
    )
    .await
    .unwrap();
    assert_eq!(status, 400);
    assert!(text.contains("checkpoint.interval: 0s"), "{text}");
    let (status, _, text) = post_with(
        ingress,
        "/example/counter/a",
        "application/vnd.example/Add",
        body,
        &[("spindle-ack", "later")],
    )
    .await
    .unwrap();
    assert_eq!(status, 400);
    assert!(text.contains("`later`"), "{text}");
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_checkpoint_is_skipped_and_the_one_before_restored() {
    let (endpoint, _stop) = functions().await;
    let dir = TempDir::new("damaged");
    let store = dir.path().join("store");
    let yaml = app(&endpoint, &store);
    let worker = start_worker(&yaml, dir.path()).await;
    let ingress = worker.ingress_addr.unwrap();
    for seq in 0..10u64 {
        add(ingress, "k", seq, 1).await;
    }
    worker.wait_idle(IDLE).await.unwrap();
    let done = worker.progress().completed;
    wait_until("two more checkpoints", IDLE, || worker.progress().completed >= done + 2).await;
    worker.shutdown().await;
    // Truncate the newest checkpoint's part.
    let checkpoints = store.join("ck/checkpoints");
    let mut ids: Vec<u64> = std::fs::read_dir(&checkpoints)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|n: &u64| checkpoints.join(format!("{n:020}/MANIFEST.json")).exists())
        .collect();
    ids.sort_unstable();
    let (newest, previous) = (ids[ids.len() - 1], ids[ids.len() - 2]);
    let part = std::fs::read_dir(checkpoints.join(format!("{newest:020}")))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "bin"))
        .unwrap();
    let bytes = std::fs::read(&part).unwrap();
    std::fs::write(&part, &bytes[..bytes.len() / 2]).unwrap();

    let worker = start_worker(&yaml, dir.path()).await;
    worker.wait_idle(IDLE).await.unwrap();
    assert_eq!(
        worker.progress().restored,
        previous,
        "restored the checkpoint before the damaged {newest}"
    );
    assert_eq!(worker.metrics.checkpoints_damaged.get(), 1, "and said so");
    assert_eq!(
        total(std::slice::from_ref(&worker), "k").await,
        Some(10),
        "all ten adds were in both checkpoints"
    );
    worker.shutdown().await;
}

async fn check_totals(workers: &[Worker], expected: &BTreeMap<String, i64>) {
    wait_cluster_idle(workers, IDLE).await;
    for (key, sum) in expected {
        assert_eq!(
            total(workers, key).await,
            Some(*sum),
            "counter {key} on {} workers",
            workers.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_restores_onto_another_worker_count() {
    let (endpoint, _stop) = functions().await;
    let dir = TempDir::new("rescale");
    let yaml = app(&endpoint, &dir.path().join("store"));
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    let mut seq = 0u64;
    let mut egress_files = Vec::new();
    for (round, n) in [3usize, 2, 4].into_iter().enumerate() {
        let run = dir.path().join(format!("run{round}"));
        let workers = start_cluster(&yaml, &run, n).await;
        egress_files.extend((0..n).map(|i| run.join(format!("w{i}/totals.jsonl"))));
        if round > 0 {
            // Everything acknowledged before is here, on its new owner.
            check_totals(&workers, &expected).await;
        }
        for i in 0..120 {
            let key = format!("k{}", i % 40);
            let entry = workers[i % n].ingress_addr.unwrap();
            add(entry, &key, seq, (seq % 7) as i64 + 1).await;
            *expected.entry(key).or_default() += (seq % 7) as i64 + 1;
            seq += 1;
        }
        check_totals(&workers, &expected).await;
        eprintln!("{n} workers: 40 counters exact after {seq} adds");
        for w in workers {
            w.shutdown().await;
        }
    }
    let (_, seqs) = released(&egress_files);
    assert_eq!(seqs, (0..seq).collect(), "every add reported once after dedup");
}

/// Group commit: with checkpoints every 10 minutes and `minPause: 5ms`, durable
/// acknowledgements and egress still come within the test's deadline, because what waits for
/// a checkpoint makes the coordinator start one — also when it waits on another worker (the
/// `WantCheckpoint` control call).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_starts_a_checkpoint_when_something_waits_for_one() {
    let (endpoint, _stop) = functions().await;
    let dir = TempDir::new("group-commit");
    let yaml = app(&endpoint, &dir.path().join("store")).replace("interval: 100ms", "interval: 10m\n    minPause: 5ms");
    let workers = start_cluster(&yaml, dir.path(), 3).await;
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for seq in 0..30u64 {
        let key = format!("k{}", seq % 7);
        add(workers[seq as usize % 3].ingress_addr.unwrap(), &key, seq, 2).await;
        *expected.entry(key).or_default() += 2;
    }
    check_totals(&workers, &expected).await;
    let files: Vec<_> = (0..3).map(|i| dir.path().join(format!("w{i}/totals.jsonl"))).collect();
    wait_until("every egress record released", IDLE, || released(&files).1.len() == 30).await;
    let completed = workers[0].progress().completed;
    eprintln!(
        "30 durable adds and their egress over 3 workers: {completed} checkpoints, none of them by the 10 min interval"
    );
    assert!(completed >= 2, "checkpoints were started by what waited for them");
    for w in workers {
        w.shutdown().await;
    }
}
