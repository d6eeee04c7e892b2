//! Kafka startup positions and StateFun SDK compatibility, against a broker started here (each
//! test once on tansu and once on Apache Kafka, named after the broker):
//! - earliest, latest, timestamp and group-offsets, each in a fresh application (no checkpointed
//!   positions), each reading exactly the records it should;
//! - a function written with the official StateFun Python SDK emitting `kafka_egress_message`
//!   (a `KafkaProducerRecord`) reaches its topic with its key, fed by a Kafka ingress of
//!   StateFun string values.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use spindle_protocol::Primitive;
use support::brokers::{Flavor, Kafka, TestRecord, now_ms};
use support::*;

async fn committed(broker: &Kafka, group: &str) -> i64 {
    let Ok(mut conn) = spindle_worker::ingress::kafka::group::coordinator(
        std::slice::from_ref(&broker.addr),
        group,
        Duration::from_secs(5),
    )
    .await
    else {
        return -1;
    };
    conn.fetch(group, "sp", &[0])
        .await
        .ok()
        .and_then(|v| v.first().map(|(_, o)| *o))
        .unwrap_or(-1)
}

/// The seqs in an egress file of totals.
fn seqs(path: &Path) -> BTreeSet<u64> {
    egress_lines(path)
        .iter()
        .filter_map(|l| l["value"]["seq"].as_u64())
        .collect()
}

fn app(name: &str, fn_addr: std::net::SocketAddr, broker: &str, startup: &str, group: &str) -> String {
    format!(
        r#"apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {{name: {name}}}
spec:
  functions:
    - typename: example/*
      endpoint: http://{fn_addr}/statefun
  ingresses:
    - name: sp
      kafka:
        brokers: ["{broker}"]
        topics: [{{topic: sp, valueType: example/Add, targets: [example/counter]}}]
        startupPosition: {startup}
        {group}
  egresses:
    - typename: example/totals
      file: {{path: totals.jsonl}}
  checkpoint: {{interval: 100ms}}
"#
    )
}

/// Runs a fresh application until its totals file holds `want` and the group has committed
/// `end`; then checks nothing else arrived.
async fn run_until(
    dir: &Path,
    yaml: &str,
    broker: &Kafka,
    group: &str,
    end: i64,
    want: &BTreeSet<u64>,
    produce: impl AsyncFnOnce(),
) {
    let worker = start_worker(yaml, dir).await;
    // The reader has resolved its start once a checkpoint holds it and the group has it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while committed(broker, group).await < 0 {
        assert!(Instant::now() < deadline, "group {group} never committed a position");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    produce().await;
    let file = dir.join("totals.jsonl");
    while seqs(&file).len() < want.len() || committed(broker, group).await < end {
        assert!(
            Instant::now() < deadline,
            "{group}: have {:?}, want {want:?}",
            seqs(&file)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.wait_idle(Duration::from_secs(30)).await.unwrap();
    assert_eq!(&seqs(&file), want, "{group}");
    worker.shutdown().await;
}

fn add(seq: u64, ts: i64) -> TestRecord {
    let mut r = TestRecord::new(Some("k"), format!("{{\"seq\":{seq},\"value\":1}}").as_bytes());
    r.timestamp_ms = ts;
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_positions_earliest_latest_timestamp_and_group_offsets_tansu() {
    startup_positions(Flavor::Tansu).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_positions_earliest_latest_timestamp_and_group_offsets_apache_kafka() {
    startup_positions(Flavor::Apache).await;
}

async fn startup_positions(flavor: Flavor) {
    init_logs();
    let Some(broker) = Kafka::start(flavor, "startup_positions_earliest_latest_timestamp_and_group_offsets").await
    else {
        return;
    };
    broker.create_topic("sp", 1).await;
    let client = broker.client().await;
    let (fn_addr, _stop_functions) = example_functions().await;
    let now = now_ms();
    // Three records two minutes old, three from now.
    broker
        .produce(&client, "sp", 0, (0..3).map(|s| add(s, now - 120_000)).collect())
        .await;
    broker
        .produce(&client, "sp", 0, (3..6).map(|s| add(s, now)).collect())
        .await;
    let set = |r: std::ops::Range<u64>| r.collect::<BTreeSet<u64>>();
    let addr = broker.addr.clone();

    let d = TempDir::new("sp-earliest");
    let yaml = app("sp-earliest", fn_addr, &addr, "earliest", "");
    run_until(d.path(), &yaml, &broker, "sp-earliest", 6, &set(0..6), async || {}).await;
    eprintln!("{}: earliest: records 0..6", broker.name());

    let d = TempDir::new("sp-latest");
    let yaml = app("sp-latest", fn_addr, &addr, "latest", "");
    let produce = async || {
        broker
            .produce(&client, "sp", 0, (6..8).map(|s| add(s, now_ms())).collect())
            .await;
    };
    run_until(d.path(), &yaml, &broker, "sp-latest", 8, &set(6..8), produce).await;
    eprintln!(
        "{}: latest: only the records produced after the start, 6..8",
        broker.name()
    );

    let d = TempDir::new("sp-timestamp");
    let at = chrono::DateTime::from_timestamp_millis(now - 60_000)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    let yaml = app(
        "sp-timestamp",
        fn_addr,
        &addr,
        &format!("timestamp\n        startupTimestamp: \"{at}\""),
        "",
    );
    run_until(d.path(), &yaml, &broker, "sp-timestamp", 8, &set(3..8), async || {}).await;
    eprintln!(
        "{}: timestamp {at}: records from one minute ago on, 3..8",
        broker.name()
    );

    // The group sp-earliest committed 6 when its application stopped: a new application
    // starting from its offsets reads 6.. only.
    let d = TempDir::new("sp-group");
    let yaml = app(
        "sp-group",
        fn_addr,
        &addr,
        "group-offsets",
        "consumerGroupId: sp-earliest",
    );
    run_until(d.path(), &yaml, &broker, "sp-earliest", 8, &set(6..8), async || {}).await;
    eprintln!(
        "{}: group-offsets of sp-earliest (committed 6): records 6..8",
        broker.name()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefun_python_kafka_egress_message_reaches_its_topic_tansu() {
    python_kafka_egress_message(Flavor::Tansu).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefun_python_kafka_egress_message_reaches_its_topic_apache_kafka() {
    python_kafka_egress_message(Flavor::Apache).await;
}

async fn python_kafka_egress_message(flavor: Flavor) {
    init_logs();
    let venv = python_venv();
    let Some(broker) = Kafka::start(flavor, "statefun_python_kafka_egress_message_reaches_its_topic").await else {
        return;
    };
    broker.create_topic("words", 2).await;
    broker.create_topic("relayed", 2).await;
    let dir = TempDir::new("py-kafka");
    let yaml = format!(
        r#"apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {{name: py-kafka}}
spec:
  functions:
    - typename: py/*
      endpoint: http://py-functions:8000/statefun
      local:
        command: ["{python}", "{functions}"]
  ingresses:
    - name: words
      kafka:
        brokers: ["{broker}"]
        topics: [{{topic: words, valueType: io.statefun.types/string, targets: [py/relay]}}]
  egresses:
    - typename: py/kafka-out
      kafka: {{brokers: ["{broker}"]}}
  checkpoint: {{interval: 100ms}}
"#,
        python = venv.join("bin/python").display(),
        functions = workspace_root().join("e2e/python/functions.py").display(),
        broker = broker.addr
    );
    let app_file = dir.path().join("app.yaml");
    std::fs::write(&app_file, &yaml).unwrap();
    // `spindle run` starts the Python function from local.command, then the worker.
    let mut run = std::process::Command::new(env!("CARGO_BIN_EXE_spindle"))
        .arg("run")
        .arg(&app_file)
        .args(["--admin-addr", "127.0.0.1:0"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    eprintln!(
        "started: spindle run with the StateFun Python SDK function py/relay (pid {})",
        run.id()
    );
    let client = broker.client().await;
    let words = ["ada", "grace", "edsger", "barbara"];
    for (i, w) in words.iter().enumerate() {
        let r = TestRecord::new(Some(&format!("id{i}")), &Primitive::String(w.to_string()).encode());
        broker.produce(&client, "words", i as i32 % 2, vec![r]).await;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let out = loop {
        let out = broker.read_all(&client, "relayed", 2).await;
        if out.len() >= words.len() {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} relayed records",
            out.len(),
            words.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // SIGTERM: `spindle run` stops its function process too.
    let pid = rustix::process::Pid::from_raw(run.id() as i32).unwrap();
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let _ = run.wait();
    let mut got: Vec<(String, String)> = out
        .iter()
        .map(|(_, _, r)| {
            assert!(r.headers.contains_key("idempotency-key"), "{r:?}");
            (
                String::from_utf8(r.key.clone().unwrap()).unwrap(),
                String::from_utf8(r.value.clone().unwrap()).unwrap(),
            )
        })
        .collect();
    got.sort();
    let want: Vec<(String, String)> = words
        .iter()
        .enumerate()
        .map(|(i, w)| (format!("id{i}"), format!("{w}!")))
        .collect();
    eprintln!(
        "{}: relayed by the Python SDK's kafka_egress_message: {got:?}",
        broker.name()
    );
    assert_eq!(got, want);
}
