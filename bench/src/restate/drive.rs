//! The load generator both systems get: closed-loop clients over one pooled HTTP/1.1 client,
//! the same keys, message bodies and completion rules; and the final correctness check.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use spindle_example_greeter::Total;
use tokio::sync::oneshot;

use super::restate_side::RestateProcesses;
use super::{Floor, RestateArgs, Side, SideKind, Workload};
use crate::checkpoint::traffic::{get, histogram, scrape};
use crate::harness::{Harness, Waiters, percentile};
use crate::report::load_average;
use crate::usage::{self, Snapshot};

/// What one side was sent over the run, for the final check.
#[derive(Debug, Default, Clone)]
pub(crate) struct Sent {
    /// Adds acknowledged (every add has value 1).
    pub adds: u64,
    /// Chains started and completed.
    pub chains: u64,
}

/// One measured row.
pub(crate) struct Row {
    pub system: String,
    pub kind: SideKind,
    pub workload: Workload,
    pub concurrency: usize,
    pub guarantee: &'static str,
    pub window: Duration,
    /// Completed invocations (request-reply, one-way) or chains, in the window.
    pub completed: u64,
    /// Invocations per completion (chains: hops + 1).
    pub invocations_each: u32,
    /// Latency of the operations begun in the window, sorted: completion (request-reply,
    /// chain) or acknowledgement (one-way).
    pub latencies: Vec<Duration>,
    /// Per process (role, share of a core, RSS at the end), the load generator last.
    pub processes: Vec<(String, f64, u64)>,
    pub load: String,
    /// Spindle: checkpoints completed per second and their mean duration in the window.
    pub checkpoints: Option<(f64, Duration)>,
}

impl Row {
    pub fn per_second(&self) -> f64 {
        self.completed as f64 / self.window.as_secs_f64()
    }

    pub fn invocations_per_second(&self) -> f64 {
        self.per_second() * f64::from(self.invocations_each)
    }

    pub fn p(&self, q: f64) -> Duration {
        percentile(&self.latencies, q)
    }

    /// CPU (all of the system's processes, not the load generator) per completed invocation.
    pub fn cpu_per_invocation(&self) -> Duration {
        let cores: f64 = self.processes.iter().filter(|p| p.0 != LOADGEN).map(|p| p.1).sum();
        let per = cores / self.invocations_per_second().max(1e-9);
        Duration::from_secs_f64(per.min(1e6))
    }
}

pub(crate) const LOADGEN: &str = "load generator + webhook (spindle-bench)";

/// Sequence numbers, unique over the run: the webhook wakes clients by them.
static SEQ: AtomicU64 = AtomicU64::new(1);

struct Ctx {
    client: Client<HttpConnector, Full<Bytes>>,
    side_kind: SideKind,
    ingress: std::net::SocketAddr,
    workload: Workload,
    keys: u64,
    hops: u32,
    waiters: Waiters,
    direct: Option<Arc<super::floor::Direct>>,
}

impl Ctx {
    async fn post(&self, path: String, content_type: &str, body: Vec<u8>, durable: bool) -> anyhow::Result<StatusCode> {
        let header = durable.then_some(("spindle-ack", "durable"));
        Ok(self.post_for(path, content_type, body, header).await?.0)
    }

    /// POSTs and returns the status and the response's body.
    async fn post_for(
        &self,
        path: String,
        content_type: &str,
        body: Vec<u8>,
        extra: Option<(&str, &str)>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let mut req =
            Request::post(format!("http://{}{path}", self.ingress)).header(header::CONTENT_TYPE, content_type);
        if let Some((name, value)) = extra {
            req = req.header(name, value);
        }
        let resp = self.client.request(req.body(Full::new(Bytes::from(body)))?).await?;
        let status = resp.status();
        // Read the whole body, which also puts the connection back in the pool.
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// A request-reply call: both systems answer with the counter's new total (`{seq, key,
    /// total}`), which must be this add's — the reply to another request would be a bug.
    async fn call(&self, path: String, content_type: &str, add: Vec<u8>, seq: u64, key: u64) -> anyhow::Result<()> {
        let wait = match self.side_kind {
            SideKind::Spindle(_) => Some(("spindle-reply", "wait")),
            _ => None,
        };
        let (status, body) = self.post_for(path, content_type, add, wait).await?;
        ensure!(
            status == StatusCode::OK,
            "the ingress answered {status} (expected 200): {}",
            String::from_utf8_lossy(&body)
        );
        let total: Total = serde_json::from_slice(&body)
            .with_context(|| format!("the reply is not a total: {}", String::from_utf8_lossy(&body)))?;
        ensure!(
            total.seq == seq && total.key == format!("k{key}") && total.total >= 1,
            "the reply to add {seq} on k{key} is {total:?}"
        );
        Ok(())
    }

    /// Sends one operation and returns once it is complete (as the workload defines).
    async fn op(&self, seq: u64) -> anyhow::Result<()> {
        let key = seq % self.keys;
        let wait = |seq: u64| {
            let (tx, rx) = oneshot::channel();
            self.waiters.lock().unwrap().insert(seq, tx);
            rx
        };
        let add = serde_json::to_vec(&serde_json::json!({"seq": seq, "value": 1}))?;
        let hop = serde_json::to_vec(&serde_json::json!({"seq": seq, "remaining": self.hops, "spread": self.keys}))?;
        let (status, done, expect) = match (self.side_kind, self.workload) {
            (SideKind::Floor(Floor::Http), w) => {
                let exchanges = if w == Workload::Chain { self.hops + 1 } else { 1 };
                for _ in 0..exchanges {
                    let (status, body) = self.post_for("/".into(), "application/json", add.clone(), None).await?;
                    ensure!(
                        status == StatusCode::OK && body == add,
                        "the echo server answered {status} with {} bytes (sent {})",
                        body.len(),
                        add.len()
                    );
                }
                return Ok(());
            }
            (SideKind::Floor(Floor::Statefun), w) => {
                let direct = self.direct.as_ref().context("the function floor has no state")?;
                return match w {
                    Workload::Chain => {
                        direct
                            .chain(&self.client, self.ingress, seq, key, self.hops, self.keys)
                            .await
                    }
                    _ => {
                        direct
                            .add(&self.client, self.ingress, seq, key, w == Workload::RequestReply)
                            .await
                    }
                };
            }
            (SideKind::Restate(_), Workload::RequestReply) => {
                return self
                    .call(format!("/counter/k{key}/add"), "application/json", add, seq, key)
                    .await;
            }
            (SideKind::Restate(_), Workload::OneWay) => (
                self.post(format!("/counter/k{key}/add/send"), "application/json", add, false)
                    .await?,
                None,
                StatusCode::ACCEPTED,
            ),
            (SideKind::Restate(_), Workload::Chain) => {
                let rx = wait(seq);
                (
                    self.post(format!("/hop/h{key}/hop/send"), "application/json", hop, false)
                        .await?,
                    Some(rx),
                    StatusCode::ACCEPTED,
                )
            }
            (SideKind::Spindle(_), Workload::RequestReply) => {
                return self
                    .call(
                        format!("/example/counter/k{key}"),
                        "application/vnd.example/Add",
                        add,
                        seq,
                        key,
                    )
                    .await;
            }
            (SideKind::Spindle(_), Workload::OneWay) => (
                self.post(
                    format!("/example/counter/k{key}"),
                    "application/vnd.example/Add",
                    add,
                    true,
                )
                .await?,
                None,
                StatusCode::OK,
            ),
            (SideKind::Spindle(_), Workload::Chain) => {
                let rx = wait(seq);
                let s = self
                    .post(
                        format!("/example/hop/h{key}"),
                        "application/vnd.example/Hop",
                        hop,
                        false,
                    )
                    .await?;
                (s, Some(rx), StatusCode::ACCEPTED)
            }
        };
        if status != expect {
            self.waiters.lock().unwrap().remove(&seq);
            anyhow::bail!("the ingress answered {status} (expected {expect})");
        }
        if let Some(rx) = done {
            tokio::time::timeout(Duration::from_secs(60), rx)
                .await
                .context("no completion within 60 s")?
                .context("the webhook dropped the waiter")?;
        }
        Ok(())
    }
}

/// Completions so far for the one-way workload (its clients only see acknowledgements):
/// Restate's from the counters' state, Spindle's from the egress records this worker has
/// delivered (one per completed add, released after its checkpoint).
/// The Restate server of `side`.
fn server_of<'a>(side: &Side, restate: &'a [RestateProcesses]) -> anyhow::Result<&'a RestateProcesses> {
    restate
        .iter()
        .find(|r| side.kind == SideKind::Restate(r.config))
        .with_context(|| format!("{} is not running", side.label))
}

async fn completions(side: &Side, restate: &[RestateProcesses]) -> anyhow::Result<u64> {
    Ok(match side.kind {
        SideKind::Floor(_) => 0,
        SideKind::Restate(_) => server_of(side, restate)?.state_sum("counter", "total").await?.max(0) as u64,
        SideKind::Spindle(_) => {
            let admin = side.admin.context("no admin address")?;
            let (_, body) = get(admin, "/metrics").await.context("reading Spindle's /metrics")?;
            let text = String::from_utf8_lossy(&body);
            text.lines()
                .filter(|l| l.starts_with("spindle_egress_records_total{") && l.contains(r#"outcome="ok""#))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>() as u64
        }
    })
}

pub(crate) async fn row(
    args: &RestateArgs,
    side: &Side,
    workload: Workload,
    concurrency: usize,
    h: &Harness,
    restate: &[RestateProcesses],
    sent: &mut Sent,
) -> anyhow::Result<Row> {
    let ctx = Arc::new(Ctx {
        client: Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(concurrency)
            .build_http::<Full<Bytes>>(),
        side_kind: side.kind,
        ingress: side.ingress,
        workload,
        keys: args.keys,
        hops: args.hops,
        waiters: h.waiters.clone(),
        direct: side.direct.clone(),
    });
    let mut pids: Vec<u32> = side.processes.iter().map(|p| p.1).collect();
    pids.push(std::process::id());
    let from = Instant::now() + args.duration / 5;
    let stop = from + args.duration;
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let ctx = ctx.clone();
        clients.spawn(async move {
            let (mut latencies, mut ops) = (Vec::new(), 0u64);
            loop {
                let begun = Instant::now();
                if begun >= stop {
                    break;
                }
                ctx.op(SEQ.fetch_add(1, Ordering::Relaxed)).await?;
                ops += 1;
                if begun >= from {
                    latencies.push(begun.elapsed());
                }
            }
            anyhow::Ok((latencies, ops))
        });
    }
    // The window's edges: CPU and memory of every process, and (one-way) completions so far.
    tokio::time::sleep_until(from.into()).await;
    let (a, done_a, ck_a) = (
        usage::snapshot(&pids),
        completions_if(workload, side, restate).await?,
        checkpoints(side).await,
    );
    tokio::time::sleep_until(stop.into()).await;
    let (b, done_b, ck_b) = (
        usage::snapshot(&pids),
        completions_if(workload, side, restate).await?,
        checkpoints(side).await,
    );
    let load = load_average();
    let (mut latencies, mut ops) = (Vec::new(), 0);
    while let Some(r) = clients.join_next().await {
        let (l, n) = r??;
        latencies.extend(l);
        ops += n;
    }
    latencies.sort();
    match workload {
        Workload::Chain => sent.chains += ops,
        _ => sent.adds += ops,
    }
    let completed = match (side.kind, workload) {
        // A floor's answer is its completion.
        (SideKind::Floor(_), _) => latencies.len() as u64,
        (_, Workload::OneWay) => done_b.saturating_sub(done_a),
        (_, _) => latencies.len() as u64,
    };
    Ok(Row {
        system: side.label.clone(),
        kind: side.kind,
        workload,
        concurrency,
        guarantee: side.guarantee(workload),
        window: b.at.duration_since(a.at),
        completed,
        invocations_each: if workload == Workload::Chain { args.hops + 1 } else { 1 },
        latencies,
        processes: processes(side, &a, &b),
        load,
        checkpoints: ck_a.zip(ck_b).map(|((s0, n0), (s1, n1))| {
            let n = n1.saturating_sub(n0);
            let secs = b.at.duration_since(a.at).as_secs_f64();
            (
                n as f64 / secs,
                Duration::from_secs_f64(((s1 - s0) / n.max(1) as f64).max(0.0)),
            )
        }),
    })
}

/// Spindle's checkpoint histogram so far: (sum of seconds, count).
async fn checkpoints(side: &Side) -> Option<(f64, u64)> {
    let (_, body) = get(side.admin?, "/metrics").await?;
    let m = scrape(&String::from_utf8_lossy(&body));
    Some(histogram(&m, "spindle_checkpoint_duration_seconds"))
}

async fn completions_if(w: Workload, side: &Side, restate: &[RestateProcesses]) -> anyhow::Result<u64> {
    if w == Workload::OneWay {
        completions(side, restate).await
    } else {
        Ok(0)
    }
}

fn processes(side: &Side, a: &Snapshot, b: &Snapshot) -> Vec<(String, f64, u64)> {
    let names = side.processes.iter().map(|p| p.0).chain([LOADGEN]);
    names
        .zip(usage::between(a, b))
        .map(|(n, (cpu, rss))| (n.to_string(), cpu, rss))
        .collect()
}

/// Every add and every hop is in the state exactly once: the counters sum to the adds sent,
/// the hop counts to chains × (hops + 1). Waits (with a deadline) for one-way work to drain.
pub(crate) async fn verify(
    args: &RestateArgs,
    side: &Side,
    sent: &Sent,
    restate: &[RestateProcesses],
) -> anyhow::Result<String> {
    let want_hops = sent.chains * u64::from(args.hops + 1);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (adds, hops) = match side.kind {
            SideKind::Floor(Floor::Http) => return Ok("no state (the echo floor)".into()),
            SideKind::Floor(Floor::Statefun) => {
                side.direct
                    .as_ref()
                    .context("the function floor has no state")?
                    .sums()
                    .await
            }
            SideKind::Restate(_) => {
                let r = server_of(side, restate)?;
                (
                    r.state_sum("counter", "total").await?.max(0) as u64,
                    r.state_sum("hop", "hops").await?.max(0) as u64,
                )
            }
            SideKind::Spindle(_) => {
                let admin = side.admin.context("no admin address")?;
                (
                    spindle_sum(admin, "counter", "total", args.keys).await?,
                    spindle_sum(admin, "hop", "hops", args.keys).await?,
                )
            }
        };
        if adds == sent.adds && hops == want_hops {
            return Ok(format!(
                "counters sum to {adds} = adds sent; hop counts sum to {hops} = {} chains × {}",
                sent.chains,
                args.hops + 1
            ));
        }
        ensure!(
            adds <= sent.adds && hops <= want_hops && Instant::now() < deadline,
            "state does not match what was sent: counters {adds} (sent {}), hops {hops} (expected {want_hops})",
            sent.adds
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The sum of integer state `name` over `example/{ty}/{k|h}0..keys`, through `/state`.
async fn spindle_sum(admin: std::net::SocketAddr, ty: &str, name: &str, keys: u64) -> anyhow::Result<u64> {
    let prefix = if ty == "counter" { "k" } else { "h" };
    let mut sum = 0u64;
    for k in 0..keys {
        let (status, body) = get(admin, &format!("/state/example/{ty}/{prefix}{k}"))
            .await
            .with_context(|| format!("reading example/{ty}/{prefix}{k}"))?;
        ensure!(status == 200, "/state answered {status}");
        let v: serde_json::Value = serde_json::from_slice(&body)?;
        sum += v[name]["value"].as_u64().unwrap_or(0);
    }
    Ok(sum)
}
