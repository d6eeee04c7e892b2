//! Compatibility with the official Apache Flink StateFun JavaScript SDK (npm
//! `apache-flink-statefun` 3.3.0, unchanged): the apps of `e2e/js` (the SDK's handler behind
//! node's http module) as real Node.js processes, driven through an in-process Spindle worker,
//! outputs checked exactly. `e2e/js/build.sh` runs `npm ci` on first use; without Node.js/npm
//! the tests print one `skip:` line.

mod support;

use support::brokers::{Flavor, Kafka};
use support::sdk::{SdkProcess, SeenType, build, compat_scenario};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_sdk_functions_run_unchanged() {
    if build("js").is_none() {
        return;
    }
    let dir = support::TempDir::new("js-fn");
    let tansu = Kafka::start(Flavor::Tansu, "js_sdk")
        .await
        .expect("tansu always starts");
    let function = SdkProcess::start(
        "js",
        &["node", "functions.js"],
        &[],
        dir.path(),
        "StateFun JavaScript SDK 3.3.0 app (node http)",
    );
    compat_scenario("js", &function, &tansu, SeenType::Int).await;
}

/// The round-trip function of `e2e/js/roundtrip.js` (the one the exactly-once tests use): every
/// input comes out once on each egress named in `ROUNDTRIP_EGRESSES`, with its sequence number
/// and the address's counter, in arrival order per address; the counters in state are exact.
/// Without failures, so a reader that does not deduplicate must see each record exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn js_sdk_round_trip_function() {
    if build("js").is_none() {
        return;
    }
    const INPUTS: u64 = 300;
    const IDS: u64 = 7;
    let dir = support::TempDir::new("js-roundtrip");
    let function = SdkProcess::start(
        "js",
        &["node", "roundtrip.js"],
        &[("ROUNDTRIP_EGRESSES", "js/rt-out,js/rt-copy")],
        dir.path(),
        "StateFun JavaScript SDK 3.3.0 round-trip function (node http)",
    );
    let yaml = format!(
        r#"
apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {{name: js-roundtrip}}
spec:
  functions:
    - typename: js/*
      endpoint: http://127.0.0.1:{port}/statefun
  ingresses:
    - name: web
      http: {{}}
  egresses:
    - typename: js/rt-out
      file: {{path: rt.jsonl}}
    - typename: js/rt-copy
      file: {{path: rt-copy.jsonl}}
  checkpoint: {{interval: 100ms}}
"#,
        port = function.port
    );
    let worker = support::start_worker(&yaml, dir.path()).await;
    let ingress = worker.ingress_addr.unwrap();
    eprintln!("started: Spindle worker in-process, ingress {ingress}; egresses js/rt-out, js/rt-copy -> files");
    for seq in 0..INPUTS {
        let body = serde_json::json!({"seq": seq}).to_string().into_bytes();
        let (status, text) = support::post(
            ingress,
            &format!("/js/roundtrip/r{}", seq % IDS),
            "application/vnd.js/RoundTrip",
            body,
        )
        .await;
        assert_eq!(status, 202, "input {seq}: {text}");
    }
    if let Err(e) = worker.wait_idle(std::time::Duration::from_secs(60)).await {
        panic!("not idle ({e}); dead letters {:?}", worker.dead_letters.recent());
    }
    assert!(
        worker.dead_letters.recent().is_empty(),
        "{:?}",
        worker.dead_letters.recent()
    );

    for file in ["rt.jsonl", "rt-copy.jsonl"] {
        let lines = support::egress_lines(&dir.path().join(file));
        assert_eq!(lines.len() as u64, INPUTS, "{file}: one line per input");
        let mut seqs = std::collections::BTreeSet::new();
        let mut per_id: std::collections::BTreeMap<String, Vec<(u64, u64)>> = Default::default();
        for l in &lines {
            assert_eq!(l["typename"], "js/RoundTripOut", "{file}: {l}");
            let v = &l["value"];
            let (id, seq, count) = (
                v["id"].as_str().unwrap(),
                v["seq"].as_u64().unwrap(),
                v["count"].as_u64().unwrap(),
            );
            assert!(seqs.insert(seq), "{file}: seq {seq} twice");
            assert_eq!(id, format!("r{}", seq % IDS), "{file}: {l}");
            per_id.entry(id.to_string()).or_default().push((seq, count));
        }
        assert_eq!(seqs, (0..INPUTS).collect(), "{file}: every seq once");
        for (id, mut records) in per_id {
            // Per address, the counter follows the arrival order (the order the inputs were sent).
            records.sort();
            let counts: Vec<u64> = records.iter().map(|r| r.1).collect();
            assert_eq!(
                counts,
                (1..=records.len() as u64).collect::<Vec<_>>(),
                "{file}: counters of {id}"
            );
        }
    }
    for i in 0..IDS {
        let addr =
            spindle_worker::Address::new(spindle_spec::TypeName::parse("js/roundtrip").unwrap(), format!("r{i}"));
        let want = INPUTS / IDS + u64::from(i < INPUTS % IDS);
        assert_eq!(
            worker.read_state(addr).await.unwrap(),
            [("count".to_string(), support::sdk::int(want as i32))],
            "state of js/roundtrip/r{i}"
        );
    }
    eprintln!(
        "checked: {INPUTS} inputs -> {INPUTS} records on each of js/rt-out and js/rt-copy (read without dedup), per-id counters exact in state"
    );
    worker.shutdown().await;
    drop(function);
}
