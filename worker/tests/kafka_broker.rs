//! What the Kafka brokers of the tests do with transactions and compressed batches, checked
//! with an independent client (kafka-python, `e2e/kafka/check_broker.py`) — the ground the
//! transactional egress and the compressed-batch ingress stand on:
//! - Apache Kafka: a `read_committed` consumer does not see the records of an aborted
//!   transaction (a `read_uncommitted` one does, so the check can fail), and batches produced
//!   with gzip, snappy, lz4 and zstd are served as produced, compressed.
//! - tansu: the same script, its findings printed (tansu serves aborted records to
//!   `read_committed` consumers; its findings are printed, and the codecs checked as on Apache Kafka).
//!
//! Beside them, what Spindle's Kafka client (rskafka, patched in `vendor/rskafka`: transaction
//! markers, aborted transactions, pure-Rust codecs) reads from the same topics: on Apache Kafka
//! exactly what kafka-python's `read_committed` consumer reads.

mod support;

use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};
use support::brokers::{Flavor, Kafka};
use support::*;

const CODECS: [&str; 4] = ["gzip", "snappy", "lz4", "zstd"];

/// Runs the script against `broker`: its JSON findings.
fn check(broker: &Kafka) -> serde_json::Value {
    let venv = python_venv();
    let script = workspace_root().join("e2e/kafka/check_broker.py");
    let out = std::process::Command::new(venv.join("bin/python"))
        .arg(&script)
        .arg(&broker.addr)
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("running check_broker.py");
    assert!(
        out.status.success(),
        "{} failed against {}",
        script.display(),
        broker.name()
    );
    serde_json::from_slice(&out.stdout).expect("check_broker.py prints JSON")
}

/// What rskafka reads from partition 0 of `topic`: its values, or the error.
async fn rskafka_reads(broker: &Kafka, topic: &str) -> Result<Vec<String>, String> {
    let client = broker.client().await;
    let pc = client
        .partition_client(topic, 0, UnknownTopicHandling::Retry)
        .await
        .map_err(|e| e.to_string())?;
    let end = pc.get_offset(OffsetAt::Latest).await.map_err(|e| e.to_string())?;
    let mut next = 0;
    let mut out = Vec::new();
    while next < end {
        let f = pc.fetch(next, 1..1_000_000, 100).await.map_err(|e| e.to_string())?;
        for r in f.records {
            out.push(String::from_utf8_lossy(r.record.value.as_deref().unwrap_or_default()).into_owned());
        }
        if f.next_offset == next {
            return Err(format!("no progress at offset {next} (end {end})"));
        }
        next = f.next_offset;
    }
    Ok(out)
}

async fn findings(broker: &Kafka) -> serde_json::Value {
    let mut found = check(broker);
    let name = broker.name();
    let txn = found["transactions"].clone();
    eprintln!(
        "{name}: read_committed consumer (kafka-python) reads {}",
        txn["read_committed"]
    );
    eprintln!(
        "{name}: read_uncommitted consumer (kafka-python) reads {}",
        txn["read_uncommitted"]
    );
    let txn_read = rskafka_reads(broker, "txn").await;
    eprintln!("{name}: rskafka (fetches with read_committed) reads {txn_read:?}");
    let mut codec_reads = Vec::new();
    for codec in CODECS {
        let c = &found["compression"][codec];
        let read = rskafka_reads(broker, &format!("codec-{codec}")).await;
        eprintln!(
            "{name}: batch produced with {codec}: served as {} ({} records read by kafka-python); rskafka: {:?}",
            c["served_as"],
            c["records_read"],
            read.as_ref().map(|v| format!("{} records", v.len()))
        );
        codec_reads.push((codec, read));
    }
    // On both brokers every codec decodes, to the records kafka-python read.
    for (codec, read) in codec_reads {
        let values = read.unwrap_or_else(|e| panic!("{name}: rskafka reading the {codec} topic: {e}"));
        assert_eq!(values.len(), 20, "{name}: rskafka reads the 20 {codec} records");
        assert!(
            values.iter().all(|v| v.starts_with(&format!("{codec} record "))),
            "{name}: {values:?}"
        );
    }

    found["rskafka_txn"] =
        serde_json::json!(txn_read.unwrap_or_else(|e| panic!("{name}: rskafka reading the transactional topic: {e}")));
    // The checker itself: an uncommitted reader sees every record, aborted ones too.
    let all: Vec<String> = (0..3)
        .map(|i| format!("committed-{i}"))
        .chain((0..3).map(|i| format!("aborted-{i}")))
        .chain(["committed-3".to_string()])
        .collect();
    assert_eq!(
        txn["read_uncommitted"],
        serde_json::json!(all),
        "{name}: read_uncommitted"
    );
    for codec in CODECS {
        assert_eq!(
            found["compression"][codec]["records_read"], 20,
            "{name}: {codec} records read back"
        );
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apache_kafka_read_committed_hides_aborted_records_and_serves_compressed_batches() {
    init_logs();
    let Some(broker) = Kafka::start(
        Flavor::Apache,
        "apache_kafka_read_committed_hides_aborted_records_and_serves_compressed_batches",
    )
    .await
    else {
        return;
    };
    let found = findings(&broker).await;
    let committed: Vec<String> = (0..4).map(|i| format!("committed-{i}")).collect();
    assert_eq!(
        found["transactions"]["read_committed"],
        serde_json::json!(committed),
        "a read_committed consumer sees exactly the committed records"
    );
    assert_eq!(
        found["rskafka_txn"],
        serde_json::json!(committed),
        "Spindle's client reads past the markers and drops the aborted records, like kafka-python"
    );
    for codec in CODECS {
        assert_eq!(
            found["compression"][codec]["served_as"],
            serde_json::json!([codec]),
            "a {codec} batch is served as produced"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tansu_transactions_and_compression_findings() {
    init_logs();
    let broker = Kafka::start(Flavor::Tansu, "tansu_transactions_and_compression_findings")
        .await
        .unwrap();
    findings(&broker).await;
}
