//! Memory bounded by bytes under a flood while checkpoints fail: a `spindle worker` process
//! (started here, with moto as its S3 storage and an echo function in this process) takes a
//! flood of 32 KiB records while the storage is stopped (SIGSTOP). Egress output is held until
//! a checkpoint completes, so without a bound it would grow with the flood; with
//! `spec.memory.heldEgressBytes` the ingress answers `503` + `Retry-After` once the held bytes
//! reach the bound. Checked: the worker's RSS (VmRSS) stays far below what the flood would need,
//! the gauge shows the held bytes at the bound, 503s were answered; then the storage resumes,
//! the callers retry what was refused, and every record comes out of the file egress exactly
//! once (lines counted per record, no dedup in the reader; callers send an idempotency key, so
//! a retry after an unclear answer is applied once by the worker).

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::function::{self, echo_to_egress};
use support::moto::Moto;
use support::procs::{Procs, status, wait_running};
use support::*;

/// One record's body.
const RECORD: usize = 32 << 10;
/// The bound on held egress the application sets.
const HELD_BOUND: u64 = 4 << 20;
/// Records in the flood: 62.5 MiB of values, 15 times the bound.
const RECORDS: usize = 2000;
const SENDERS: usize = 16;
/// Admitted-but-unprocessed records (count bound): what may pass the byte bound before the
/// door closes.
const MAX_BUFFERED: u64 = 32;

fn app(fn_addr: SocketAddr, storage: &str) -> String {
    format!(
        r#"
apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {{name: flood}}
spec:
  functions:
    - typename: t/*
      endpoint: http://{fn_addr}/x
  ingresses:
    - name: web
      http: {{}}
  egresses:
    - typename: t/out
      file: {{path: out.jsonl}}
  maxBufferedMessages: {MAX_BUFFERED}
  memory:
    heldEgressBytes: {HELD_BOUND}
  checkpoint:
    interval: 200ms
    storage: {storage}
"#
    )
}

/// The worker's resident set, in KiB (`VmRSS` of /proc/PID/status).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A sample of the worker's metrics, e.g. `spindle_memory_bytes{queue="held_egress"}`.
async fn metric(admin: SocketAddr, name: &str) -> Option<u64> {
    let (status, body) = get(admin, "/metrics").await;
    if status != 200 {
        return None;
    }
    let prefix = format!("{name} ");
    body.lines().find_map(|l| l.strip_prefix(&prefix)?.trim().parse().ok())
}

async fn memory_gauge(admin: SocketAddr, queue: &str) -> Option<u64> {
    metric(admin, &format!("spindle_memory_bytes{{queue=\"{queue}\"}}")).await
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
>;

/// One POST of record `i`: its status and `Retry-After`, or `None` when the connection broke
/// (the outcome is unknown: the idempotency key makes a retry safe).
async fn send(client: &Client, ingress: SocketAddr, i: usize) -> Option<(u16, Option<u64>)> {
    let mut body = format!("r{i}:").into_bytes();
    body.resize(RECORD, b'.');
    let req = http::Request::post(format!("http://{ingress}/t/fn/r{i}"))
        .header("content-type", "application/vnd.t/Text")
        .header("idempotency-key", format!("k{i}"))
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .ok()?
        .ok()?;
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    Some((resp.status().as_u16(), retry_after))
}

#[derive(Default)]
struct Tally {
    accepted: AtomicU64,
    refused_memory: AtomicU64,
    other: AtomicU64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_while_checkpoints_fail_is_pushed_back_and_comes_out_exactly_once() {
    let built = Instant::now();
    let _ = env!("CARGO_BIN_EXE_spindle");
    let moto = Moto::start("memory");
    let (fn_addr, _stop_fn) = function::serve(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        Arc::new(echo_to_egress),
    );
    eprintln!("started: echo function (in this test) on {fn_addr}");
    let dir = TempDir::new("memory-bounds");
    let path = dir.path().join("app.yaml");
    std::fs::write(&path, app(fn_addr, &moto.url("checkpoints"))).unwrap();
    let mut procs = Procs::new(dir.path(), path, 1, moto.env());
    procs.spawn_all();
    let (admin, ingress) = (procs.admin[0], procs.ingress[0]);
    wait_running(&[admin], 0, Duration::from_secs(120)).await;
    let pid = procs.pid(0).unwrap();
    // Warm up (connections, the function, a checkpoint) before measuring the base.
    let client: Client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let warm = RECORDS; // ids past the flood's
    for i in warm..warm + 20 {
        assert_eq!(send(&client, ingress, i).await.map(|r| r.0), Some(202));
    }
    let base = rss_kib(pid).unwrap();
    eprintln!(
        "started: spindle worker pid {pid} (1 process, checkpoints to moto every 200ms) in {:?}; RSS before the flood {} MiB",
        built.elapsed(),
        base / 1024
    );

    // Storage stops answering: no checkpoint completes, egress output is held.
    let failed_before = status(admin).await.unwrap()["checkpointsFailed"].as_u64().unwrap_or(0);
    moto.pause();
    eprintln!("storage paused (moto SIGSTOP); flooding {RECORDS} records of {RECORD} bytes from {SENDERS} callers");

    let peak = Arc::new(AtomicU64::new(base));
    let flooding = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn({
        let (peak, flooding) = (peak.clone(), flooding.clone());
        async move {
            while flooding.load(Ordering::Relaxed) {
                if let Some(r) = rss_kib(pid) {
                    peak.fetch_max(r, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    // Each caller sends its share once; what is refused is sent again after the outage.
    let tally = Arc::new(Tally::default());
    let mut senders = tokio::task::JoinSet::new();
    for s in 0..SENDERS {
        let tally = tally.clone();
        senders.spawn(async move {
            let client: Client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
            let mut refused = Vec::new();
            for i in (s..RECORDS).step_by(SENDERS) {
                match send(&client, ingress, i).await {
                    Some((202, _)) => {
                        tally.accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    Some((503, Some(after))) => {
                        assert!(after >= 1, "Retry-After {after}");
                        tally.refused_memory.fetch_add(1, Ordering::Relaxed);
                        refused.push(i);
                    }
                    _ => {
                        tally.other.fetch_add(1, Ordering::Relaxed);
                        refused.push(i);
                    }
                }
            }
            refused
        });
    }
    let mut again = Vec::new();
    while let Some(r) = senders.join_next().await {
        again.extend(r.unwrap());
    }
    // The outage lasts until a checkpoint has failed (the store's retries give up after
    // seconds), and the door stays closed through it.
    let deadline = Instant::now() + Duration::from_secs(120);
    while status(admin).await.unwrap()["checkpointsFailed"].as_u64().unwrap_or(0) <= failed_before {
        assert!(
            Instant::now() < deadline,
            "no checkpoint failed while the storage was stopped"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let held = memory_gauge(admin, "held_egress").await.unwrap();
    flooding.store(false, Ordering::Relaxed);
    sampler.await.unwrap();
    let failed = status(admin).await.unwrap()["checkpointsFailed"].as_u64().unwrap_or(0);
    let peak = peak.load(Ordering::Relaxed);
    let (accepted, refused) = (
        tally.accepted.load(Ordering::Relaxed),
        tally.refused_memory.load(Ordering::Relaxed),
    );
    eprintln!(
        "flood: {accepted} accepted (202), {refused} refused with 503 + Retry-After (memory bound), {} other answers; held egress gauge {} KiB (bound {} KiB); checkpoints failed during the outage: {}",
        tally.other.load(Ordering::Relaxed),
        held / 1024,
        HELD_BOUND / 1024,
        failed - failed_before
    );
    let flood_mib = (RECORDS * RECORD) >> 20;
    eprintln!(
        "RSS: {} MiB before, peak {} MiB during the flood (+{} MiB), the flood's values alone {flood_mib} MiB",
        base / 1024,
        peak / 1024,
        peak.saturating_sub(base) / 1024
    );
    assert!(refused > 0, "the ingress never pushed back");
    let (status_after, _) = send(&client, ingress, again[0]).await.expect("the ingress answers");
    assert_eq!(status_after, 503, "the door stays closed while checkpoints fail");
    let refused_metric = metric(admin, "spindle_ingress_rejected_total{kind=\"memory_full\"}")
        .await
        .unwrap_or(0);
    assert_eq!(refused_metric, refused + 1, "the worker counted every 503 it answered");
    assert!(
        held >= HELD_BOUND,
        "held egress {held} bytes: the door closed below the bound?"
    );
    // Past the bound by at most what was admitted before the door closed (the count bound),
    // with its keys and overhead.
    let slack = (MAX_BUFFERED + SENDERS as u64) * (RECORD as u64 + 1024);
    assert!(
        held <= HELD_BOUND + slack,
        "held egress {held} bytes, bound {HELD_BOUND} + slack {slack}"
    );
    // Far below what the flood would need (its values alone): the base, the bound, the
    // records admitted before the door closed and the snapshots of failing checkpoints
    // (which copy the held records' lists and encode them) fit in 96 MiB.
    let growth_mib = peak.saturating_sub(base) / 1024;
    assert!(
        growth_mib < 96 && (growth_mib as usize) < flood_mib / 2,
        "RSS grew by {growth_mib} MiB under a flood of {flood_mib} MiB"
    );

    // The storage recovers: checkpoints complete, the held records leave, the door opens.
    moto.resume();
    eprintln!("storage resumed; sending the {} refused records again", again.len());
    let resent = Instant::now();
    let retries = Arc::new(AtomicU64::new(0));
    let mut senders = tokio::task::JoinSet::new();
    for s in 0..SENDERS {
        let mine: Vec<usize> = again.iter().copied().skip(s).step_by(SENDERS).collect();
        let retries = retries.clone();
        senders.spawn(async move {
            let client: Client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
            for i in mine {
                let deadline = Instant::now() + Duration::from_secs(120);
                loop {
                    match send(&client, ingress, i).await {
                        Some((202, _)) => break,
                        Some((503, after)) => {
                            retries.fetch_add(1, Ordering::Relaxed);
                            // Pacing as a caller would (a tenth of Retry-After, to keep the test
                            // short); correctness does not depend on it.
                            tokio::time::sleep(Duration::from_millis(after.unwrap_or(1) * 100)).await;
                        }
                        other => {
                            retries.fetch_add(1, Ordering::Relaxed);
                            eprintln!("record r{i}: {other:?}, retrying");
                        }
                    }
                    assert!(
                        Instant::now() < deadline,
                        "record r{i} was never accepted after the outage"
                    );
                }
            }
        });
    }
    while let Some(r) = senders.join_next().await {
        r.unwrap();
    }
    eprintln!(
        "every record accepted {:?} after the resume ({} retries)",
        resent.elapsed(),
        retries.load(Ordering::Relaxed)
    );

    // Every record exactly once at the egress (the flood's and the warm-up's).
    let out = dir.path().join("out.jsonl");
    let total = RECORDS + 20;
    let deadline = Instant::now() + Duration::from_secs(180);
    let count = || {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for v in egress_values(&out) {
            let id = v.split(':').next().unwrap_or("").to_string();
            *counts.entry(id).or_default() += 1;
        }
        counts
    };
    while count().len() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then until nothing is pending anywhere in the worker, so a late duplicate would show.
    while Instant::now() < deadline {
        let s = status(admin).await.unwrap_or_default();
        if s["idle"].as_bool() == Some(true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let counts = count();
    let missing: Vec<String> = (0..total)
        .map(|i| format!("r{i}"))
        .filter(|id| !counts.contains_key(id))
        .collect();
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    eprintln!(
        "egress: {} distinct records of {total}, {} missing, {} not exactly once",
        counts.len(),
        missing.len(),
        twice.len()
    );
    assert!(
        missing.is_empty(),
        "missing at the egress: {:?}",
        &missing[..missing.len().min(20)]
    );
    assert!(
        twice.is_empty(),
        "not exactly once: {:?}",
        &twice[..twice.len().min(20)]
    );
    assert_eq!(counts.len(), total, "only the records sent");
    let drained = memory_gauge(admin, "held_egress").await.unwrap();
    eprintln!("held egress after the drain: {drained} bytes");
    assert!(procs.term_all(Duration::from_secs(30)), "the worker stops cleanly");
}
