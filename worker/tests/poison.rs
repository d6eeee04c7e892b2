//! A poison batch: one message whose invocation stalls its worker, so the worker is killed
//! (`kill -9`, as a liveness probe or an operator would) each time the message is in flight.
//! Every restore brings the message back from the checkpoint; without poison detection the
//! application would loop for ever. After `poisonAfterRollbacks` (3) consecutive rollbacks with
//! the message in flight, the restore sets it aside as a dead letter with the reason, and
//! every other record comes out exactly once.
//!
//! Real components: a function written with the official StateFun Python SDK 3.3.0
//! (`e2e/python/poison.py`, aiohttp), three `spindle worker` processes, checkpoints in a local
//! directory, the file egress read by a plain reader (no deduplication: lines counted per
//! record), the dead letter read with `spindle dead-letters list`. Twice: with the poison on
//! a worker other than the coordinator, and on the coordinator itself (each kill is then the
//! coordinator's death too; its counts survive in checkpoint storage).

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use spindle_spec::{HumanDuration, LocalProcess, TypeName};
use spindle_worker::Address;
use spindle_worker::keygroup::{key_group, range_of};
use spindle_worker::local::FunctionProcess;
use support::procs::{Procs, status};
use support::*;

const WORKERS: usize = 3;
const KEY_GROUPS: u32 = 128;
const KEYS: u64 = 30;
const INPUTS: u64 = 600;
const K: usize = 3;

/// The worker owning `id` of `py/item`.
fn owner(id: &str) -> usize {
    let kg = key_group(&Address::new(TypeName::parse("py/item").unwrap(), id), KEY_GROUPS);
    (0..WORKERS)
        .find(|w| range_of(*w as u32, WORKERS as u32, KEY_GROUPS).contains(&kg))
        .unwrap()
}

fn signals(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Posts one record with an idempotency key and a durable acknowledgement, at worker
/// `first` and then the others, until it is acknowledged.
async fn send(ingress: &[std::net::SocketAddr], first: usize, id: &str, seq: u64, poison: bool) {
    let path = format!("/py/item/{id}");
    let body = serde_json::json!({"seq": seq, "poison": poison})
        .to_string()
        .into_bytes();
    let key = format!("in-{seq}");
    let headers = [("spindle-ack", "durable"), ("idempotency-key", key.as_str())];
    for attempt in 0.. {
        let at = ingress[(first + attempt) % WORKERS];
        let sent = tokio::time::timeout(
            Duration::from_secs(5),
            post_with(at, &path, "application/vnd.py/Item", body.clone(), &headers),
        );
        if let Ok(Some((200, _, _))) = sent.await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The poison counts the coordinator saved in checkpoint storage: does its last report of
/// the running generation hold `target`?
fn saved_in_flight(checkpoints: &std::path::Path, target: &str) -> bool {
    fn find(dir: &std::path::Path) -> Option<std::path::PathBuf> {
        for e in std::fs::read_dir(dir).ok()? {
            let p = e.ok()?.path();
            if p.is_dir() {
                if let Some(f) = find(&p) {
                    return Some(f);
                }
            } else if p.file_name().is_some_and(|n| n == "poison-suspects.json") {
                return Some(p);
            }
        }
        None
    }
    let Some(saved) = find(checkpoints).and_then(|p| std::fs::read(p).ok()) else {
        return false;
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&saved) else {
        return false;
    };
    v["reports"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|r| r[1].as_array().into_iter().flatten().any(|m| m[1] == target))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_in_flight_at_three_consecutive_rollbacks_becomes_a_dead_letter_and_the_rest_is_exact() {
    scenario(false).await;
}

/// The poison batch runs on worker 0, so each kill is also the coordinator's death: the counts
/// survive in checkpoint storage.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poison_batch_on_the_coordinator_is_found_across_its_deaths() {
    scenario(true).await;
}

async fn scenario(on_coordinator: bool) {
    init_logs();
    let venv = python_venv();
    let dir = TempDir::new("poison");
    let signal_dir = dir.path().join("signals");
    std::fs::create_dir_all(&signal_dir).unwrap();
    let local = LocalProcess {
        command: vec![
            venv.join("bin/python").display().to_string(),
            workspace_root().join("e2e/python/poison.py").display().to_string(),
        ],
        env: [("SIGNAL_DIR".to_string(), signal_dir.display().to_string())].into(),
        working_dir: None,
        startup_timeout: HumanDuration::from_secs(60),
    };
    let function = FunctionProcess::start("py/*", &local, dir.path())
        .await
        .expect("python function starts");
    let yaml = format!(
        r#"apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {{name: poison}}
spec:
  functions:
    - typename: py/*
      endpoint: http://127.0.0.1:{port}/statefun
  ingresses:
    - name: web
      http: {{}}
  egresses:
    - typename: py/out
      file: {{path: out.jsonl}}
  workers: {WORKERS}
  keyGroups: {KEY_GROUPS}
  failureTimeout: 2s
  poisonAfterRollbacks: {K}
  checkpoint:
    interval: 200ms
    storage: {storage}
"#,
        port = function.port,
        storage = dir.path().join("checkpoints").display(),
    );
    let app = dir.path().join("app.yaml");
    std::fs::write(&app, yaml).unwrap();
    let mut procs = Procs::new(dir.path(), app, WORKERS, Vec::new());
    procs.spawn_all();
    let admin = procs.admin.clone();
    let ingress = procs.ingress.clone();
    let mut generation = procs.wait_started(Duration::from_secs(120)).await;
    // The poison's address on the coordinator (worker 0), or on another worker.
    let poison_id = (0..)
        .map(|n| format!("poison-{n}"))
        .find(|id| (owner(id) == 0) == on_coordinator)
        .unwrap();
    let victim = owner(&poison_id);
    let poison_target = format!("py/item/{poison_id}");
    eprintln!(
        "started: StateFun Python SDK 3.3.0 function (aiohttp) on 127.0.0.1:{}, {WORKERS} spindle worker processes (generation {generation}), poisonAfterRollbacks {K}; the poison message goes to {poison_target} (worker {victim}); logs in {}",
        function.port,
        dir.path().display()
    );

    // The load: INPUTS records over KEYS addresses, acknowledged durably, retried until then.
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (next, done, ingress) = (next.clone(), done.clone(), ingress.clone());
        load.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= INPUTS {
                    return;
                }
                send(&ingress, i as usize, &format!("k{}", i % KEYS), i, false).await;
                done.fetch_add(1, Ordering::Relaxed);
                // Spread over the kills rather than done before the first.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while done.load(Ordering::Relaxed) < INPUTS / 4 {
        assert!(
            Instant::now() < deadline,
            "the load stalled: {} acknowledged",
            done.load(Ordering::Relaxed)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let poison_sender = {
        let (ingress, id) = (ingress.clone(), poison_id.clone());
        tokio::spawn(async move { send(&ingress, victim, &id, INPUTS, true).await })
    };

    // Each time the message is in flight (its invocation created a signal file), and once the
    // coordinator has heard so on its heartbeat, kill -9 the worker invoking it and start it
    // again (as a StatefulSet would).
    let mut rounds = Vec::new();
    for round in 1..=K {
        let deadline = Instant::now() + Duration::from_secs(120);
        while signals(&signal_dir).len() < round {
            assert!(
                Instant::now() < deadline,
                "round {round}: the poison message was not invoked again within 120 s (signals: {:?}; acknowledged {})",
                signals(&signal_dir),
                done.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let seen = Instant::now();
        let deadline = seen + Duration::from_secs(30);
        loop {
            let suspects = status(admin[0]).await.map(|s| s["poisonSuspects"].clone());
            let heard = suspects.as_ref().and_then(|s| s.as_array()).is_some_and(|l| {
                l.iter()
                    .any(|s| s["target"] == poison_target.as_str() && s["inFlightOn"] == victim)
            });
            if heard {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: the coordinator did not hear {poison_target} in flight on worker {victim} within 30 s: {suspects:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // A coordinator about to die must have saved what it heard.
        while on_coordinator && !saved_in_flight(&dir.path().join("checkpoints"), &poison_target) {
            assert!(
                Instant::now() < deadline,
                "round {round}: the coordinator did not save {poison_target} in flight within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let reported = seen.elapsed();
        let (g, took) = procs.kill_and_restart(victim, generation).await;
        eprintln!(
            "poison: round {round}: in flight (signal file) -> heard by the coordinator after {:.0} ms; kill -9 worker {victim} -> generation {g} running on all after {:.0} ms ({} acknowledged)",
            reported.as_secs_f64() * 1000.0,
            took.as_secs_f64() * 1000.0,
            done.load(Ordering::Relaxed)
        );
        rounds.push((reported, took));
        generation = g;
    }

    // The dead letter, with its reason, read with the CLI from every worker's admin endpoint.
    let admins: Vec<String> = admin.iter().map(|a| format!("http://{a}")).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let letter = loop {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_spindle"))
            .args(["dead-letters", "list", "--admin", &admins.join(",")])
            .output()
            .expect("spindle dead-letters list runs");
        let listed = String::from_utf8_lossy(&out.stdout).into_owned();
        let found = listed
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|l| l["kind"] == "poison");
        if let Some(letter) = found {
            break letter;
        }
        assert!(
            Instant::now() < deadline,
            "no poison dead letter within 60 s after {K} rollbacks; `spindle dead-letters list` printed: {listed}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        letter["reason"],
        format!("in flight at {K} consecutive rollbacks"),
        "{letter}"
    );
    assert_eq!(letter["messages"][0]["target"], poison_target.as_str(), "{letter}");
    eprintln!("poison: dead letter: {letter}");

    // The rest of the load finishes; the poison's own caller is acknowledged too (its record
    // is accepted: it is a dead letter, not lost).
    let deadline = Instant::now() + Duration::from_secs(600);
    while !load.is_empty() {
        if let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(5), load.join_next()).await {
            r.unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the load did not finish: {} of {INPUTS} acknowledged",
            done.load(Ordering::Relaxed)
        );
    }
    tokio::time::timeout(Duration::from_secs(120), poison_sender)
        .await
        .expect("the poison record is acknowledged")
        .unwrap();

    // Every record once in the egress file, read as a plain reader does; per address the
    // counts 1..n each once (state applied exactly once); the poison never.
    let out = dir.path().join("out.jsonl");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = egress_values(&out).len() as u64;
        if n >= INPUTS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "egress incomplete: {n} of {INPUTS} lines in {}",
            out.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut seqs: BTreeMap<u64, usize> = BTreeMap::new();
    let mut counts: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for v in egress_values(&out) {
        let parts: Vec<&str> = v.split(':').collect();
        assert_eq!((parts.len(), parts[0]), (4, "done"), "an unexpected egress line: {v}");
        *seqs.entry(parts[2].parse().unwrap()).or_default() += 1;
        counts
            .entry(parts[1].to_string())
            .or_default()
            .push(parts[3].parse().unwrap());
    }
    let lost: Vec<u64> = (0..INPUTS).filter(|s| !seqs.contains_key(s)).collect();
    let duplicated: Vec<u64> = seqs.iter().filter(|(_, n)| **n > 1).map(|(s, _)| *s).collect();
    assert!(lost.is_empty(), "records missing from the egress file: {lost:?}");
    assert!(
        duplicated.is_empty(),
        "records twice in the egress file: {duplicated:?}"
    );
    assert!(!seqs.contains_key(&INPUTS), "the poison message was processed");
    for (key, mut seen) in counts {
        seen.sort();
        let want: Vec<u64> = (1..=seen.len() as u64).collect();
        assert_eq!(seen, want, "the counts of {key}: each increment once");
    }
    // Set aside, not invoked again.
    assert_eq!(signals(&signal_dir).len(), K, "invocations of the poison message");
    let metrics = get(admin[victim], "/metrics").await.1;
    assert!(
        metrics.lines().any(|l| l == "spindle_poison_dead_letters_total 1"),
        "worker {victim} counts the poison dead letter: {}",
        metrics
            .lines()
            .filter(|l| l.contains("poison"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    let mean = |f: fn(&(Duration, Duration)) -> Duration| {
        rounds.iter().map(f).sum::<Duration>().as_secs_f64() * 1000.0 / rounds.len() as f64
    };
    eprintln!(
        "poison: | {K} kills of worker {victim} with the message in flight | heard by the coordinator {:.0} ms after the signal (mean) | back to running {:.0} ms (mean) | set aside after {K} rollbacks | {INPUTS} records: lost 0 | duplicated 0 |",
        mean(|r| r.0),
        mean(|r| r.1)
    );
}
