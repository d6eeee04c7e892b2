//! Memory bounded by bytes under a flood, two ways. (1) While checkpoints fail: a `spindle worker` process
//! (started here, with moto as its S3 storage and an echo function in this process) takes a
//! flood of 32 KiB records while the storage is stopped (SIGSTOP). Egress output is held until
//! a checkpoint completes, so without a bound it would grow with the flood; with
//! `spec.memory.heldEgressBytes` the ingress answers `503` + `Retry-After` once the held bytes
//! reach the bound. Checked: the worker's RSS (VmRSS) stays far below what the flood would need,
//! the gauge shows the held bytes at the bound, 503s were answered; then the storage resumes,
//! the callers retry what was refused, and every record comes out of the file egress exactly
//! once (lines counted per record, no dedup in the reader; callers send an idempotency key, so
//! a retry after an unclear answer is applied once by the worker). (2) For a hung peer: two
//! processes, worker 1 SIGSTOPped, a flood into worker 0 for addresses worker 1 owns fills
//! worker 0's peer queues to `spec.memory.peerQueueBytes`; the same checks, after SIGCONT.

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
/// The bound the application sets on the queue under test.
const BOUND: u64 = 4 << 20;
/// Records in the flood: 62.5 MiB of values, 15 times the bound.
const RECORDS: usize = 2000;
const SENDERS: usize = 16;
/// Admitted-but-unprocessed records (count bound): what may pass the byte bound before the
/// door closes.
const MAX_BUFFERED: u64 = 32;

/// The application: one bounded queue (`spec.memory.{bounded}`), `workers` workers, `extra`
/// spec lines.
fn app(fn_addr: SocketAddr, storage: &str, bounded: &str, workers: u32, extra: &str) -> String {
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
  workers: {workers}
  memory:
    {bounded}: {BOUND}
{extra}  checkpoint:
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

/// One POST of record `id` (to address `t/fn/{id}`, its value starting `{id}:`): its status
/// and `Retry-After`, or `None` when the connection broke (the outcome is unknown: the
/// idempotency key makes a retry safe).
async fn send(client: &Client, ingress: SocketAddr, id: &str) -> Option<(u16, Option<u64>)> {
    let mut body = format!("{id}:").into_bytes();
    body.resize(RECORD, b'.');
    let req = http::Request::post(format!("http://{ingress}/t/fn/{id}"))
        .header("content-type", "application/vnd.t/Text")
        .header("idempotency-key", format!("k-{id}"))
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

fn client() -> Client {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// The peak RSS of `pid` while the flood runs.
struct Sampler {
    peak: Arc<AtomicU64>,
    running: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(pid: u32, base: u64) -> Sampler {
        let peak = Arc::new(AtomicU64::new(base));
        let running = Arc::new(AtomicBool::new(true));
        let task = tokio::spawn({
            let (peak, running) = (peak.clone(), running.clone());
            async move {
                while running.load(Ordering::Relaxed) {
                    if let Some(r) = rss_kib(pid) {
                        peak.fetch_max(r, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        Sampler { peak, running, task }
    }

    async fn stop(self) -> u64 {
        self.running.store(false, Ordering::Relaxed);
        self.task.await.unwrap();
        self.peak.load(Ordering::Relaxed)
    }
}

/// Each of [`SENDERS`] callers sends its share of `ids` once; returns what was not accepted.
async fn flood(ingress: SocketAddr, ids: &[String], tally: &Arc<Tally>) -> Vec<String> {
    let mut senders = tokio::task::JoinSet::new();
    for s in 0..SENDERS {
        let tally = tally.clone();
        let mine: Vec<String> = ids.iter().skip(s).step_by(SENDERS).cloned().collect();
        senders.spawn(async move {
            let client = client();
            let mut refused = Vec::new();
            for id in mine {
                match send(&client, ingress, &id).await {
                    Some((202, _)) => {
                        tally.accepted.fetch_add(1, Ordering::Relaxed);
                    }
                    Some((503, Some(after))) => {
                        assert!(after >= 1, "Retry-After {after}");
                        tally.refused_memory.fetch_add(1, Ordering::Relaxed);
                        refused.push(id);
                    }
                    _ => {
                        tally.other.fetch_add(1, Ordering::Relaxed);
                        refused.push(id);
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
    again
}

/// Sends `ids` again until each is accepted, as a caller that honours `503` does; the number
/// of retries.
async fn resend(ingress: SocketAddr, ids: Vec<String>) -> u64 {
    let retries = Arc::new(AtomicU64::new(0));
    let mut senders = tokio::task::JoinSet::new();
    for s in 0..SENDERS {
        let mine: Vec<String> = ids.iter().skip(s).step_by(SENDERS).cloned().collect();
        let retries = retries.clone();
        senders.spawn(async move {
            let client = client();
            for id in mine {
                let deadline = Instant::now() + Duration::from_secs(120);
                loop {
                    match send(&client, ingress, &id).await {
                        Some((202, _)) => break,
                        Some((503, after)) => {
                            retries.fetch_add(1, Ordering::Relaxed);
                            // Pacing as a caller would (a tenth of Retry-After, to keep the test
                            // short); correctness does not depend on it.
                            tokio::time::sleep(Duration::from_millis(after.unwrap_or(1) * 100)).await;
                        }
                        other => {
                            retries.fetch_add(1, Ordering::Relaxed);
                            eprintln!("record {id}: {other:?}, retrying");
                        }
                    }
                    assert!(Instant::now() < deadline, "record {id} was never accepted");
                }
            }
        });
    }
    while let Some(r) = senders.join_next().await {
        r.unwrap();
    }
    retries.load(Ordering::Relaxed)
}

/// Waits until every one of `ids` is in the egress file `out` and the workers are idle, then
/// checks each is there exactly once (lines counted per record, no dedup) and nothing else.
async fn exactly_once(out: &std::path::Path, ids: &[String], admin: &[SocketAddr]) {
    let deadline = Instant::now() + Duration::from_secs(180);
    let count = || {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for v in egress_values(out) {
            let id = v.split(':').next().unwrap_or("").to_string();
            *counts.entry(id).or_default() += 1;
        }
        counts
    };
    while count().len() < ids.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then until nothing is pending anywhere, so a late duplicate would show.
    'idle: while Instant::now() < deadline {
        for a in admin {
            if status(*a).await.unwrap_or_default()["idle"].as_bool() != Some(true) {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue 'idle;
            }
        }
        break;
    }
    let counts = count();
    let missing: Vec<&String> = ids.iter().filter(|id| !counts.contains_key(*id)).collect();
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n != 1).collect();
    eprintln!(
        "egress: {} distinct records of {}, {} missing, {} not exactly once",
        counts.len(),
        ids.len(),
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
    assert_eq!(counts.len(), ids.len(), "only the records sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_while_checkpoints_fail_is_pushed_back_and_comes_out_exactly_once() {
    let built = Instant::now();
    let moto = Moto::start("memory");
    let (fn_addr, _stop_fn) = function::serve(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        Arc::new(echo_to_egress),
    );
    eprintln!("started: echo function (in this test) on {fn_addr}");
    let dir = TempDir::new("memory-bounds");
    let path = dir.path().join("app.yaml");
    std::fs::write(
        &path,
        app(
            fn_addr,
            &moto.url("checkpoints"),
            "heldEgressBytes",
            1,
            &format!("  maxBufferedMessages: {MAX_BUFFERED}\n"),
        ),
    )
    .unwrap();
    let mut procs = Procs::new(dir.path(), path, 1, moto.env());
    procs.spawn_all();
    let (admin, ingress) = (procs.admin[0], procs.ingress[0]);
    wait_running(&[admin], 0, Duration::from_secs(120)).await;
    let pid = procs.pid(0).unwrap();
    // Warm up (connections, the function, a checkpoint) before measuring the base.
    let client = client();
    let warm: Vec<String> = (0..20).map(|i| format!("w{i}")).collect();
    for id in &warm {
        assert_eq!(send(&client, ingress, id).await.map(|r| r.0), Some(202));
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
    let sampler = Sampler::start(pid, base);
    let ids: Vec<String> = (0..RECORDS).map(|i| format!("r{i}")).collect();
    let tally = Arc::new(Tally::default());
    let again = flood(ingress, &ids, &tally).await;
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
    let peak = sampler.stop().await;
    let failed = status(admin).await.unwrap()["checkpointsFailed"].as_u64().unwrap_or(0);
    let refused = report(&tally, "held egress", held, peak, base);
    eprintln!("checkpoints failed during the outage: {}", failed - failed_before);
    assert!(refused > 0, "the ingress never pushed back");
    let (status_after, _) = send(&client, ingress, &again[0]).await.expect("the ingress answers");
    assert_eq!(status_after, 503, "the door stays closed while checkpoints fail");
    let refused_metric = metric(admin, "spindle_ingress_rejected_total{kind=\"memory_full\"}")
        .await
        .unwrap_or(0);
    assert_eq!(refused_metric, refused + 1, "the worker counted every 503 it answered");
    check_bound("held egress", held, peak, base, MAX_BUFFERED + SENDERS as u64);

    // The storage recovers: checkpoints complete, the held records leave, the door opens.
    moto.resume();
    eprintln!("storage resumed; sending the {} refused records again", again.len());
    let resent = Instant::now();
    let retries = resend(ingress, again).await;
    eprintln!(
        "every record accepted {:?} after the resume ({retries} retries)",
        resent.elapsed()
    );
    let all: Vec<String> = ids.into_iter().chain(warm).collect();
    exactly_once(&dir.path().join("out.jsonl"), &all, &[admin]).await;
    let drained = memory_gauge(admin, "held_egress").await.unwrap();
    eprintln!("held egress after the drain: {drained} bytes");
    assert!(procs.term_all(Duration::from_secs(30)), "the worker stops cleanly");
}

/// Prints what the flood met; the number of 503s for the memory bound.
fn report(tally: &Tally, queue: &str, held: u64, peak: u64, base: u64) -> u64 {
    let (accepted, refused) = (
        tally.accepted.load(Ordering::Relaxed),
        tally.refused_memory.load(Ordering::Relaxed),
    );
    eprintln!(
        "flood: {accepted} accepted (202), {refused} refused with 503 + Retry-After (memory bound), {} other answers; {queue} gauge {} KiB (bound {} KiB)",
        tally.other.load(Ordering::Relaxed),
        held / 1024,
        BOUND / 1024,
    );
    let flood_mib = (RECORDS * RECORD) >> 20;
    eprintln!(
        "RSS: {} MiB before, peak {} MiB during the flood (+{} MiB), the flood's values alone {flood_mib} MiB",
        base / 1024,
        peak / 1024,
        peak.saturating_sub(base) / 1024
    );
    refused
}

/// The queue reached its bound, passed it by no more than what was admitted before the door
/// closed, and the worker's memory stayed far below what the flood would need.
fn check_bound(queue: &str, held: u64, peak: u64, base: u64, slack_records: u64) {
    assert!(held >= BOUND, "{queue} {held} bytes: the door closed below the bound?");
    // Past the bound by at most what was admitted before the door closed (the count bound),
    // with its keys and overhead.
    let slack = slack_records * (RECORD as u64 + 1024);
    assert!(
        held <= BOUND + slack,
        "{queue} {held} bytes, bound {BOUND} + slack {slack}"
    );
    // Far below what the flood would need (its values alone): the base, the bound, the
    // records admitted before the door closed and the snapshots of failing checkpoints
    // (which copy the held records' lists and encode them) fit in half of it.
    let flood_mib = (RECORDS * RECORD) >> 20;
    let growth_mib = peak.saturating_sub(base) / 1024;
    assert!(
        (growth_mib as usize) < flood_mib / 2,
        "RSS grew by {growth_mib} MiB under a flood of {flood_mib} MiB"
    );
}

/// The peer queues: worker 1 hangs (SIGSTOP; `failureTimeout` longer than the test, so no
/// rollback), worker 0 takes a flood for addresses worker 1 owns and queues it for the link.
/// The count bound is set out of reach (a record's admission is held until the peer has it),
/// so the bytes are what closes the door: worker 0 answers 503 once its peer queues hold
/// `peerQueueBytes`, its RSS stays far below the flood; after SIGCONT the queue drains,
/// the refused records are sent again, and each comes out of worker 1's egress exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_for_a_hung_peer_is_pushed_back_and_comes_out_exactly_once() {
    let built = Instant::now();
    let (fn_addr, _stop_fn) = function::serve(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        Arc::new(echo_to_egress),
    );
    eprintln!("started: echo function (in this test) on {fn_addr}");
    let dir = TempDir::new("memory-bounds-peers");
    let path = dir.path().join("app.yaml");
    let storage = dir.path().join("checkpoints");
    let extra = "  maxBufferedMessages: 100000\n  failureTimeout: 600s\n";
    std::fs::write(
        &path,
        app(fn_addr, &storage.display().to_string(), "peerQueueBytes", 2, extra),
    )
    .unwrap();
    let mut procs = Procs::new(dir.path(), path, 2, vec![]);
    procs.spawn_all();
    let admin = procs.admin.clone();
    let ingress = procs.ingress[0];
    wait_running(&admin, 0, Duration::from_secs(120)).await;
    let pid = procs.pid(0).unwrap();
    let layout = spindle_worker::keygroup::Layout {
        worker: 0,
        workers: 2,
        key_groups: 128,
    };
    let fn_type = spindle_spec::TypeName::parse("t/fn").unwrap();
    let owned_by_1 = |prefix: &str, n: usize| -> Vec<String> {
        (0..)
            .map(|i| format!("{prefix}{i}"))
            .filter(|id| layout.owner(&spindle_worker::Address::new(fn_type.clone(), id.as_str())) == 1)
            .take(n)
            .collect()
    };
    let warm = owned_by_1("w", 20);
    let client = client();
    for id in &warm {
        assert_eq!(send(&client, ingress, id).await.map(|r| r.0), Some(202));
    }
    let base = rss_kib(pid).unwrap();
    eprintln!(
        "started: 2 spindle worker processes (pids {pid}, {}; checkpoints to a directory every 200ms) in {:?}; RSS of worker 0 before the flood {} MiB",
        procs.pid(1).unwrap(),
        built.elapsed(),
        base / 1024
    );

    let rollbacks = status(admin[0]).await.unwrap()["rollbacks"].as_u64();
    procs.signal(1, rustix::process::Signal::STOP);
    eprintln!(
        "worker 1 hung (SIGSTOP); flooding worker 0 with {RECORDS} records of {RECORD} bytes for worker 1's addresses from {SENDERS} callers"
    );
    let sampler = Sampler::start(pid, base);
    let ids = owned_by_1("p", RECORDS);
    let tally = Arc::new(Tally::default());
    let again = flood(ingress, &ids, &tally).await;
    let held = memory_gauge(admin[0], "peers").await.unwrap();
    let peak = sampler.stop().await;
    let refused = report(&tally, "peer queues", held, peak, base);
    assert!(refused > 0, "the ingress never pushed back");
    // Nothing else admitted what the door let through: the records are all in the queue.
    check_bound("peer queues", held, peak, base, 2 * SENDERS as u64);

    procs.signal(1, rustix::process::Signal::CONT);
    eprintln!(
        "worker 1 woken (SIGCONT); sending the {} refused records again",
        again.len()
    );
    let resent = Instant::now();
    let retries = resend(ingress, again).await;
    eprintln!(
        "every record accepted {:?} after the wake-up ({retries} retries)",
        resent.elapsed()
    );
    let all: Vec<String> = ids.into_iter().chain(warm).collect();
    exactly_once(&dir.path().join("out.jsonl"), &all, &admin).await;
    let s = status(admin[0]).await.unwrap();
    assert_eq!(
        s["rollbacks"].as_u64(),
        rollbacks,
        "no rollback: the hang was shorter than failureTimeout"
    );
    eprintln!(
        "peer queues after the drain: {} bytes",
        memory_gauge(admin[0], "peers").await.unwrap()
    );
    assert!(procs.term_all(Duration::from_secs(30)), "the workers stop cleanly");
}
