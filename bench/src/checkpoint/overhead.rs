//! Throughput with checkpoints every interval versus off, interleaved in one run.
//!
//! Each round starts a fresh worker (in this process, its own checkpoint directory) and drives
//! it with closed-loop clients that wait for `202 Accepted`; the worker's admission limit
//! (`maxBufferedMessages`) bounds what is queued. Throughput is counted from *state*: the sum
//! of every counter, read at the start and the end of the measured window — messages
//! actually applied, not merely accepted. Latency is per message, from the request to its
//! `Total` arriving at the egress webhook; with checkpoints on, that includes waiting for the
//! checkpoint of its epoch (the exactly-once egress guarantee), so it is not overhead.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use spindle_protocol::Primitive;
use spindle_spec::TypeName;
use spindle_worker::{Address, AppConfig, Listeners, Worker, WorkerOptions};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use super::traffic::{Keys, Load, LoadSpec, histogram, scrape};
use super::{CheckpointArgs, Env, app_yaml};
use crate::harness::percentile;
use crate::usage;

pub(crate) struct Round {
    pub checkpoints: bool,
    pub per_second: f64,
    pub latencies: Vec<Duration>,
    pub completed_checkpoints: u64,
    pub mean_checkpoint: Option<Duration>,
    /// CPU of this process (worker, load generator, webhook) and the function process per
    /// message: steadier than throughput on a shared machine.
    pub cpu_per_message: Duration,
}

pub(crate) async fn round(args: &CheckpointArgs, env: &Env, n: usize, checkpoints: bool) -> anyhow::Result<Round> {
    let dir = env
        .dir
        .join(format!("overhead-{n}-{}", if checkpoints { "on" } else { "off" }));
    std::fs::create_dir_all(&dir)?;
    let interval = if checkpoints { args.interval } else { Duration::ZERO };
    let yaml = app_yaml(
        "ck-overhead",
        1,
        env.function_port,
        env.webhook,
        interval,
        None,
        args.buffered,
    );
    let spec = spindle_spec::from_yaml_str(&yaml, "overhead app")?;
    let listeners = Listeners {
        ingress: Some(TcpListener::bind("127.0.0.1:0").await?),
        admin: TcpListener::bind("127.0.0.1:0").await?,
        peer: None,
    };
    let options = WorkerOptions {
        data_dir: Some(dir.join("data")),
        ..WorkerOptions::default()
    };
    let worker = Arc::new(Worker::start(AppConfig::resolve(&spec, &dir), options, listeners).await?);
    let result = measure(args, env, &worker, checkpoints).await;
    // State reads of a failed round may still hold the worker for a moment (being aborted).
    let mut worker = worker;
    for _ in 0..250 {
        match Arc::try_unwrap(worker) {
            Ok(w) => {
                w.shutdown().await;
                let _ = std::fs::remove_dir_all(&dir);
                return result;
            }
            Err(w) => worker = w,
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("the worker of a throughput round was still in use 5 s after it ended");
}

async fn measure(args: &CheckpointArgs, env: &Env, worker: &Arc<Worker>, checkpoints: bool) -> anyhow::Result<Round> {
    let ingress = worker.ingress_addr.context("no ingress")?;
    env.sink.take();
    let load = Load::start(LoadSpec {
        clients: args.concurrency,
        ingresses: vec![ingress],
        keys: Keys::Cycle(args.keys as u64),
        rate: None,
    });
    tokio::time::sleep(args.round / 5).await;
    let pids: Vec<u32> = std::iter::once(std::process::id()).chain(env.function_pid).collect();
    let (t1, s1) = state_sum(worker, args.keys).await?;
    let (m1, u1) = (scrape(&worker.metrics.encode()), usage::snapshot(&pids));
    tokio::time::sleep(args.round).await;
    let (t2, s2) = state_sum(worker, args.keys).await?;
    let (m2, u2) = (scrape(&worker.metrics.encode()), usage::snapshot(&pids));
    let cores: f64 = usage::between(&u1, &u2).iter().map(|(cpu, _)| cpu).sum();
    let wall = u2.at.duration_since(u1.at).as_secs_f64();
    let errors = load.errors.load(std::sync::atomic::Ordering::Relaxed);
    let sent = load.stop().await?;
    ensure!(
        errors == 0,
        "{errors} ingress requests failed during a throughput round"
    );

    // Everything accepted is applied once and reported at the egress.
    worker
        .wait_idle(Duration::from_secs(60))
        .await
        .context("after the round")?;
    let (_, total) = state_sum(worker, args.keys).await?;
    ensure!(
        total == sent.len() as u64,
        "counters sum to {total}, but {} messages were accepted",
        sent.len()
    );
    ensure!(
        worker.dead_letters.recent().is_empty(),
        "dead letters: {:?}",
        worker.dead_letters.recent()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.sink.len() < sent.len() {
        ensure!(
            Instant::now() < deadline,
            "{} of {} egress records arrived",
            env.sink.len(),
            sent.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let arrived: HashMap<u64, Instant> = env.sink.take().into_iter().collect();
    let mut latencies = Vec::new();
    for (seq, at) in sent {
        if at >= t1 && at < t2 {
            let done = arrived
                .get(&seq)
                .with_context(|| format!("no egress record for seq {seq}"))?;
            latencies.push(done.saturating_duration_since(at));
        }
    }
    latencies.sort();
    let (sum1, n1) = histogram(&m1, "spindle_checkpoint_duration_seconds");
    let (sum2, n2) = histogram(&m2, "spindle_checkpoint_duration_seconds");
    Ok(Round {
        checkpoints,
        per_second: (s2 - s1) as f64 / (t2 - t1).as_secs_f64(),
        latencies,
        completed_checkpoints: n2 - n1,
        mean_checkpoint: (n2 > n1).then(|| Duration::from_secs_f64((sum2 - sum1) / (n2 - n1) as f64)),
        cpu_per_message: Duration::from_secs_f64(cores * wall / (s2 - s1).max(1) as f64),
    })
}

/// The sum of every counter's `total` and the moment it stands for (the middle of reading).
pub(crate) async fn state_sum(worker: &Arc<Worker>, keys: usize) -> anyhow::Result<(Instant, u64)> {
    let begun = Instant::now();
    let counter = TypeName::parse("example/counter")?;
    let mut reads = JoinSet::new();
    for k in 0..keys {
        let (w, addr) = (worker.clone(), Address::new(counter.clone(), format!("k{k}")));
        reads.spawn(async move { w.read_state(addr).await });
    }
    let mut total = 0u64;
    while let Some(r) = reads.join_next().await {
        for (name, v) in r?? {
            if name == "total" {
                match Primitive::decode(&v.typename, &v.bytes) {
                    Some(Primitive::Long(n)) => total += n as u64,
                    other => bail!("counter state `total` is {other:?}"),
                }
            }
        }
    }
    Ok((begun + (Instant::now() - begun) / 2, total))
}

impl Round {
    pub fn p(&self, q: f64) -> Duration {
        percentile(&self.latencies, q)
    }
}
