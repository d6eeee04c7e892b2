//! What real producers write, read end to end by Spindle's Kafka ingress on Apache Kafka 4:
//! kafka-python (an independent client) writes batches compressed with gzip, snappy, lz4 and
//! zstd, then two committed transactions around an aborted one, into one topic; a worker reads
//! it into the example counter and writes the totals to a file egress.
//!
//! Checked: every committed record's total comes out exactly once (so every codec decoded and
//! the reader moved past the transaction markers), no aborted record has any effect, and the
//! counters hold exactly the committed adds. (tansu serves aborted records to `read_committed`
//! consumers, so this runs on Apache Kafka only.)

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use support::brokers::{Flavor, Kafka};
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_batches_and_transactions_read_end_to_end_apache_kafka() {
    init_logs();
    let Some(broker) = Kafka::start(Flavor::Apache, "compressed_batches_and_transactions_read_end_to_end").await else {
        return;
    };
    broker.create_topic("mixed", 2).await;
    let script = workspace_root().join("e2e/kafka/produce_mixed.py");
    let out = std::process::Command::new(python_venv().join("bin/python"))
        .arg(&script)
        .args([&broker.addr, "mixed"])
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("running produce_mixed.py");
    assert!(out.status.success(), "{} failed", script.display());
    let written: serde_json::Value = serde_json::from_slice(&out.stdout).expect("produce_mixed.py prints JSON");
    let seqs = |k: &str| -> BTreeSet<u64> {
        written[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect()
    };
    let (committed, aborted) = (seqs("committed"), seqs("aborted"));
    eprintln!(
        "produced by kafka-python: {} committed records (50 each gzip, snappy, lz4, zstd; 40 in two committed transactions), {} in an aborted transaction",
        committed.len(),
        aborted.len()
    );

    let (fn_addr, _stop_functions) = example_functions().await;
    let dir = TempDir::new("kafka-mixed");
    let yaml = format!(
        r#"apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {{name: kafka-mixed}}
spec:
  functions:
    - typename: example/*
      endpoint: http://{fn_addr}/statefun
  ingresses:
    - name: mixed
      kafka:
        brokers: ["{broker}"]
        topics: [{{topic: mixed, valueType: example/Add, targets: [example/counter], valueFormat: json}}]
  egresses:
    - typename: example/totals
      file: {{path: totals.jsonl}}
  checkpoint: {{interval: 100ms}}
"#,
        broker = broker.addr
    );
    let worker = start_worker(&yaml, dir.path()).await;
    let file = dir.path().join("totals.jsonl");
    let read = || -> Vec<u64> {
        egress_lines(&file)
            .iter()
            .filter_map(|l| l["value"]["seq"].as_u64())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while read().len() < committed.len() {
        assert!(
            Instant::now() < deadline,
            "after 60 s the egress holds {} of {} totals; missing (first 20): {:?}",
            read().len(),
            committed.len(),
            committed
                .difference(&read().into_iter().collect())
                .take(20)
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worker.wait_idle(Duration::from_secs(30)).await.unwrap();
    let got = read();
    let mut per_seq: BTreeMap<u64, usize> = BTreeMap::new();
    for s in &got {
        *per_seq.entry(*s).or_default() += 1;
    }
    let got_set: BTreeSet<u64> = per_seq.keys().copied().collect();
    let twice = per_seq.values().filter(|n| **n > 1).count();
    let leaked: Vec<u64> = got_set.intersection(&aborted).copied().collect();
    // Each counter `k{j}` adds 1 per committed seq with seq % 10 == j.
    let mut exact = 0;
    for j in 0..10u64 {
        let want = committed.iter().filter(|s| *s % 10 == j).count() as i64;
        let got = support::procs::state(&[worker.admin_addr], &format!("/example/counter/k{j}"), "total").await;
        assert_eq!(got, Some(want), "counter k{j}");
        exact += 1;
    }
    eprintln!(
        "read by Spindle's ingress: {} totals out, {} distinct seqs, {twice} twice, aborted seqs with an effect: {leaked:?}; counters exact {exact}/10",
        got.len(),
        got_set.len()
    );
    assert_eq!(got_set, committed, "every committed record, and nothing else");
    assert_eq!(twice, 0);
    worker.shutdown().await;
}
