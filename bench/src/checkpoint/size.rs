//! Checkpoint duration and size against state size: one worker (in this process) with
//! checkpoints every interval; counters are preloaded up to each N distinct keys, then, under
//! a light paced load, the worker's own metrics are read every 10 ms. A histogram's sum and
//! count grow once per observation, so each new observation's value is the growth of the sum:
//! every checkpoint's duration (trigger → manifest written), every capture pause and every
//! part upload is seen individually, and the size is the `spindle_checkpoint_bytes` gauge at
//! each completion.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use spindle_worker::{AppConfig, Listeners, Worker, WorkerOptions};
use tokio::net::TcpListener;

use super::traffic::{Keys, Load, LoadSpec, histogram, scrape};
use super::{CheckpointArgs, Env, app_yaml};

pub(crate) struct SizeRow {
    pub keys: usize,
    pub durations: Vec<Duration>,
    pub captures: Vec<Duration>,
    pub uploads: Vec<Duration>,
    pub bytes: Vec<u64>,
    pub failed: u64,
}

pub(crate) async fn run(args: &CheckpointArgs, env: &Env, rows: &mut Vec<SizeRow>) -> anyhow::Result<()> {
    let dir = env.dir.join("size");
    std::fs::create_dir_all(&dir)?;
    let yaml = app_yaml(
        "ck-size",
        1,
        env.function_port,
        env.webhook,
        args.interval,
        None,
        10_000,
    );
    let spec = spindle_spec::from_yaml_str(&yaml, "size app")?;
    let listeners = Listeners {
        ingress: Some(TcpListener::bind("127.0.0.1:0").await?),
        admin: TcpListener::bind("127.0.0.1:0").await?,
        peer: None,
    };
    let options = WorkerOptions {
        data_dir: Some(dir.join("data")),
        ..WorkerOptions::default()
    };
    let worker = Worker::start(AppConfig::resolve(&spec, &dir), options, listeners).await?;
    let result = measure_all(args, env, &worker, rows).await;
    worker.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn measure_all(args: &CheckpointArgs, env: &Env, worker: &Worker, rows: &mut Vec<SizeRow>) -> anyhow::Result<()> {
    let ingress = worker.ingress_addr.context("no ingress")?;
    let mut loaded = 0usize;
    let mut sizes = args.state_keys.clone();
    sizes.sort();
    for n in sizes {
        if n > loaded {
            let started = Instant::now();
            let mut fill = Load::start(LoadSpec {
                clients: args.concurrency,
                ingresses: vec![ingress],
                keys: Keys::Fill {
                    next: Arc::new(AtomicU64::new(loaded as u64)),
                    end: n as u64,
                },
                rate: None,
            });
            let sent = fill.wait_finished(Duration::from_secs(600)).await?;
            ensure!(
                sent.len() == n - loaded,
                "preloaded {} of {} keys",
                sent.len(),
                n - loaded
            );
            worker
                .wait_idle(Duration::from_secs(120))
                .await
                .context("after preloading")?;
            env.sink.take();
            println!(
                "  size: preloaded {} new keys ({n} in all) in {:.1} s",
                n - loaded,
                started.elapsed().as_secs_f64()
            );
            loaded = n;
        }
        let light = Load::start(LoadSpec {
            clients: 4,
            ingresses: vec![ingress],
            keys: Keys::Cycle(n as u64),
            rate: Some(args.light_rate),
        });
        let row = watch(args, worker, n).await;
        light.stop().await?;
        env.sink.take();
        let row = row?;
        println!(
            "  size: {n} keys: {} checkpoints, duration p50 {:.1} ms p99 {:.1} ms, capture p99 {:.2} ms, size {} bytes{}",
            row.durations.len(),
            ms(super::pct(&row.durations, 0.5)),
            ms(super::pct(&row.durations, 0.99)),
            ms(super::pct(&row.captures, 0.99)),
            super::median(&row.bytes),
            if row.failed > 0 {
                format!(", {} FAILED", row.failed)
            } else {
                String::new()
            }
        );
        rows.push(row);
    }
    ensure!(
        worker.dead_letters.recent().is_empty(),
        "dead letters: {:?}",
        worker.dead_letters.recent()
    );
    Ok(())
}

/// Reads the metrics every 10 ms until `args.checkpoints` checkpoints completed (after one
/// more to settle), each observation on its own.
async fn watch(args: &CheckpointArgs, worker: &Worker, keys: usize) -> anyhow::Result<SizeRow> {
    const DURATION: &str = "spindle_checkpoint_duration_seconds";
    const CAPTURE: &str = "spindle_checkpoint_capture_seconds";
    const UPLOAD: &str = "spindle_checkpoint_part_upload_seconds";
    let mut row = SizeRow {
        keys,
        durations: Vec::new(),
        captures: Vec::new(),
        uploads: Vec::new(),
        bytes: Vec::new(),
        failed: 0,
    };
    let start = scrape(&worker.metrics.encode());
    let failed0 = start.get("spindle_checkpoints_failed_total").copied().unwrap_or(0.0);
    let mut last = start;
    let mut settled = false;
    let deadline = Instant::now() + (args.interval + Duration::from_secs(5)) * (args.checkpoints as u32 + 2);
    while row.durations.len() < args.checkpoints {
        ensure!(
            Instant::now() < deadline,
            "only {} checkpoints completed with {keys} keys before the deadline ({} failed)",
            row.durations.len(),
            row.failed
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        let now = scrape(&worker.metrics.encode());
        row.failed = (now.get("spindle_checkpoints_failed_total").copied().unwrap_or(0.0) - failed0) as u64;
        let grew = |name: &str| {
            let ((s0, n0), (s1, n1)) = (histogram(&last, name), histogram(&now, name));
            (n1 > n0).then(|| Duration::from_secs_f64(((s1 - s0) / (n1 - n0) as f64).max(0.0)))
        };
        let d = grew(DURATION);
        if settled {
            row.captures.extend(grew(CAPTURE));
            row.uploads.extend(grew(UPLOAD));
            if let Some(d) = d {
                row.durations.push(d);
                row.bytes
                    .push(now.get("spindle_checkpoint_bytes").copied().unwrap_or(0.0) as u64);
            }
        } else if d.is_some() {
            // The first completion may have begun during preloading; measure from the next.
            settled = true;
        }
        last = now;
    }
    Ok(row)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
