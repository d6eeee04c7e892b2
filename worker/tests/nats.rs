//! NATS JetStream → functions → JetStream, with real parts: a nats-server with JetStream and
//! token authentication started here, three `spindle worker` processes, the example counter
//! (Rust SDK), checkpoints every 200 ms. While messages are published, the worker reading the
//! stream (also the coordinator) and then another are killed with SIGKILL and restarted. Then:
//! every input's effect exactly once in state, its output exactly once *in the output stream*
//! (re-sends are dropped by the stream's duplicate window through `Nats-Msg-Id`), and every bad
//! message in the dead letters. A second test authenticates with an nkey.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use support::brokers::Nats;
use support::procs::{Procs, state, status, wait_running};
use support::*;
use tokio::net::TcpListener;

const WORKERS: usize = 3;
const KEYS: u64 = 100;
const TOKEN: &str = "s3cret-token-for-tests";

fn add(i: u64) -> Vec<u8> {
    serde_json::json!({"seq": i, "value": (i % 7) as i64 + 1})
        .to_string()
        .into_bytes()
}

fn app_yaml(name: &str, fn_addr: std::net::SocketAddr, nats: &str, auth: &str, egress: &str, extra: &str) -> String {
    format!(
        r#"apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {{name: {name}}}
spec:
  functions:
    - typename: example/*
      endpoint: http://{fn_addr}/statefun
  ingresses:
    - name: adds
      nats:
        servers: ["{nats}"]
        auth: {auth}
        stream: IN
        subjects: [{{subject: "in.>", valueType: example/Add, targets: [example/counter], valueFormat: json}}]
  egresses:
    - typename: example/totals
      {egress}
{extra}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jetstream_in_and_out_exactly_once_through_kill_9() {
    init_logs();
    let inputs: u64 = std::env::var("SPINDLE_NATS_INPUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let dir = TempDir::new("nats-e2e");
    let nats = Nats::start(dir.path(), &format!("authorization {{ token: \"{TOKEN}\" }}"));
    let js = nats.jetstream(Some(TOKEN)).await;
    Nats::create_stream(&js, "IN", &["in.>"]).await;
    Nats::create_stream(&js, "OUT", &["out.>"]).await;
    let (fn_addr, _stop_functions) = example_functions().await;
    eprintln!("started: example functions (Rust SDK) on {fn_addr}; streams IN (in.>), OUT (out.>), token auth");
    let auth = "{token: {env: NATS_TOKEN, secretKeyRef: {name: nats-auth, key: token}}}";
    let egress = format!(
        "nats: {{servers: [\"{}\"], subject: out.totals, auth: {auth}}}",
        nats.url
    );
    let extra = format!(
        "  workers: {WORKERS}\n  checkpoint: {{interval: 200ms, storage: {}}}",
        dir.path().join("checkpoints").display()
    );
    let app = dir.path().join("app.yaml");
    std::fs::write(&app, app_yaml("nats-e2e", fn_addr, &nats.url, auth, &egress, &extra)).unwrap();
    let mut procs = Procs::new(dir.path(), app, WORKERS, vec![("NATS_TOKEN".into(), TOKEN.into())]);
    procs.spawn_all();
    let admin = procs.admin.clone();
    let mut generation = wait_running(&admin, 0, Duration::from_secs(120)).await;
    eprintln!(
        "started: {WORKERS} spindle worker processes (generation {generation}); logs in {}",
        dir.path().display()
    );

    // Publish, with a bad message of each kind every 1000; kill the reader (worker 0, also the
    // coordinator) after a third, worker 2 after two thirds.
    let mut bad: BTreeMap<u64, &'static str> = BTreeMap::new();
    let mut kills = Vec::new();
    let mut published = 0;
    while published < inputs {
        let mut acks = Vec::new();
        for i in published..(published + 100).min(inputs) {
            acks.push(js.publish(format!("in.c{}", i % KEYS), add(i).into()).await.unwrap());
        }
        if published % 1000 == 500 {
            let not_json = js.publish("in.c1", "{not json".into()).await.unwrap().await.unwrap();
            bad.insert(not_json.sequence, "not JSON");
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("spindle-target", "nobody/home");
            let unknown = js
                .publish_with_headers("in.c1", headers, add(0).into())
                .await
                .unwrap()
                .await
                .unwrap();
            bad.insert(unknown.sequence, "no function serves");
        }
        for a in acks {
            a.await.unwrap();
        }
        published = (published + 100).min(inputs);
        for (at, victim) in [(inputs / 3, 0), (2 * inputs / 3, 2)] {
            if published >= at && !kills.iter().any(|(v, _)| *v == victim) {
                let (g, took) = procs.kill_and_restart(victim, generation).await;
                generation = g;
                eprintln!(
                    "chaos: kill -9 worker {victim} after {published} published -> generation {generation} on all after {} ms",
                    took.as_millis()
                );
                kills.push((victim, took));
            }
        }
    }
    eprintln!("published {inputs} good and {} bad messages", bad.len());

    // Wait for every total in OUT, then for the workers to be idle (everything released).
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let n = js.get_stream("OUT").await.unwrap().info().await.unwrap().state.messages;
        if n >= inputs {
            break;
        }
        assert!(Instant::now() < deadline, "output incomplete: {n} of {inputs} messages");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut idle = 0;
    while idle < 2 {
        assert!(Instant::now() < deadline, "workers not idle");
        let mut all = true;
        for a in &admin {
            all &= status(*a).await.is_some_and(|s| s["idle"] == true);
        }
        idle = if all { idle + 1 } else { 0 };
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = Nats::read_stream(&js, "OUT").await;
    let mut seqs: BTreeMap<u64, usize> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for m in &out {
        let v: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        *seqs.entry(v["seq"].as_u64().unwrap()).or_default() += 1;
        let id = m
            .headers
            .get("Nats-Msg-Id")
            .expect("every message carries its Nats-Msg-Id");
        assert!(ids.insert(id.clone()), "message id {id} twice in the stream");
        assert_eq!(
            m.headers.get("spindle-typename").map(String::as_str),
            Some("example/Total")
        );
    }
    let lost = (0..inputs).filter(|s| !seqs.contains_key(s)).count();
    let duplicated = seqs.values().filter(|n| **n > 1).count();

    let mut want: BTreeMap<u64, i64> = BTreeMap::new();
    for i in 0..inputs {
        *want.entry(i % KEYS).or_default() += (i % 7) as i64 + 1;
    }
    let mut exact = 0;
    for (k, sum) in &want {
        assert_eq!(
            state(&admin, &format!("/example/counter/c{k}"), "total").await,
            Some(*sum),
            "counter c{k}"
        );
        exact += 1;
    }
    let dead: BTreeMap<u64, String> = procs
        .dead_letters()
        .iter()
        .filter_map(|d| {
            let reason = d["reason"].as_str()?;
            let seq = reason
                .strip_prefix("JetStream message IN#")?
                .split(' ')
                .next()?
                .parse()
                .ok()?;
            Some((seq, reason.to_string()))
        })
        .collect();
    assert_eq!(
        dead.keys().collect::<Vec<_>>(),
        bad.keys().collect::<Vec<_>>(),
        "every bad message, and nothing else, is a dead letter"
    );
    for (seq, why) in &bad {
        assert!(dead[seq].contains(why), "{}", dead[seq]);
    }
    let mut dropped = 0;
    for a in &admin {
        let (_, metrics) = get(*a, "/metrics").await;
        dropped += metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix("spindle_egress_duplicates_total ")?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or(0);
    }
    eprintln!("nats e2e results:");
    eprintln!(
        "  inputs {inputs}, {} bad messages; kills {:?}",
        bad.len(),
        kills
            .iter()
            .map(|(v, t)| format!("worker {v} ({} ms to recover)", t.as_millis()))
            .collect::<Vec<_>>()
    );
    eprintln!(
        "  output stream messages {} for {inputs} inputs: lost {lost}, duplicated {duplicated} (no dedup by the reader: the stream itself holds each once)",
        out.len()
    );
    eprintln!(
        "  re-sent after a restore and dropped by the stream's duplicate window (workers alive at the end): {dropped}"
    );
    eprintln!(
        "  counters exact {exact}/{KEYS}; dead letters {} distinct, all bad messages",
        dead.len()
    );
    assert_eq!((lost, duplicated, out.len() as u64), (0, 0, inputs));
    assert_eq!(kills.len(), 2);
}

#[tokio::test]
async fn nkey_authentication_and_missing_credentials() {
    let dir = TempDir::new("nats-nkey");
    let user = nkeys::KeyPair::new_user();
    let nats = Nats::start(
        dir.path(),
        &format!("authorization {{ users: [ {{ nkey: \"{}\" }} ] }}", user.public_key()),
    );
    let seed = user.seed().unwrap();
    let client = async_nats::ConnectOptions::new()
        .nkey(seed.clone())
        .connect(&nats.url)
        .await
        .expect("nkey accepted");
    let js = async_nats::jetstream::new(client);
    Nats::create_stream(&js, "IN", &["in.>"]).await;
    Nats::create_stream(&js, "OUT", &["out.>"]).await;
    let (fn_addr, _stop) = example_functions().await;
    let auth = "{nkeySeed: {env: SPINDLE_TEST_NKEY_SEED}}";
    let egress = format!(
        "nats: {{servers: [\"{}\"], subject: out.totals, auth: {auth}}}",
        nats.url
    );
    let yaml = app_yaml(
        "nats-nkey",
        fn_addr,
        &nats.url,
        auth,
        &egress,
        "  checkpoint: {interval: 100ms}",
    );

    // Without the variable the worker refuses to start, and says which one.
    let app = spindle_spec::from_yaml_str(&yaml, "t").unwrap();
    let config = spindle_worker::AppConfig::resolve(&app, dir.path());
    let listeners = spindle_worker::Listeners {
        ingress: None,
        admin: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        peer: None,
    };
    let err = spindle_worker::Worker::start(config, Default::default(), listeners)
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("SPINDLE_TEST_NKEY_SEED is not set"), "{err}");

    // With it (a worker process with the variable set), messages flow both ways.
    let app_file = dir.path().join("app.yaml");
    std::fs::write(&app_file, &yaml).unwrap();
    let mut procs = Procs::new(
        dir.path(),
        app_file,
        1,
        vec![("SPINDLE_TEST_NKEY_SEED".into(), seed.clone())],
    );
    procs.spawn_all();
    wait_running(&procs.admin, 0, Duration::from_secs(60)).await;
    for i in 0..10 {
        js.publish(format!("in.k{}", i % 2), add(i).into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = js.get_stream("OUT").await.unwrap().info().await.unwrap().state.messages;
        if n == 10 {
            break;
        }
        assert!(Instant::now() < deadline, "{n} of 10 totals in OUT");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let totals: Vec<i64> = Nats::read_stream(&js, "OUT")
        .await
        .iter()
        .map(|m| {
            serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap()["total"]
                .as_i64()
                .unwrap()
        })
        .collect();
    eprintln!("nkey: 10 messages in, 10 totals out ({totals:?})");
    // Values 1..7 by seq: key k0 gets 1+3+5+7+2, key k1 2+4+6+1+3.
    assert_eq!(totals.len(), 10);
    assert!(totals.contains(&18) && totals.contains(&16), "{totals:?}");
}
