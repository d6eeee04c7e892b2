//! `spindle-bench checkpoint`: the cost of exactly-once, measured in one run (issue 4, item 7).
//!
//! 1. [`overhead`]: throughput with checkpoints every `--interval` versus off, interleaved
//!    rounds (off, on, off, on …) through one worker, and latency of both.
//! 2. [`size`]: checkpoint duration, capture pause, upload time and size with 1k, 10k, 100k
//!    keys of counter state.
//! 3. [`recovery`]: from `kill -9` of a worker process (a non-coordinator, and the coordinator)
//!    to every worker running the new generation, and to the first new egress record.
//!
//! The counter function (Rust SDK) runs as its own process for all three; the egress webhook
//! and the load generator run in this process.

mod overhead;
pub(crate) mod recovery;
mod size;
pub(crate) mod traffic;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::app::{BenchApp, Checkpoints};
use crate::duration;
use crate::harness::{Harness, percentile};
use crate::report::load_average;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    Overhead,
    Size,
    Recovery,
}

#[derive(Debug, clap::Args)]
pub struct CheckpointArgs {
    /// Which measurements to run.
    #[arg(long, value_delimiter = ',', default_value = "overhead,size,recovery")]
    pub parts: Vec<Part>,
    /// Checkpoint interval when checkpoints are on.
    #[arg(long, default_value = "1s", value_parser = duration)]
    pub interval: Duration,
    /// Overhead: measured time per round (after a warm-up of a fifth of it).
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub round: Duration,
    /// Overhead: pairs of rounds (off, on).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Closed-loop clients (overhead rounds and preloading).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Counters the overhead and recovery loads spread over.
    #[arg(long, default_value_t = 1000)]
    pub keys: usize,
    /// Overhead: the worker's admission limit (`maxBufferedMessages`), which bounds queueing.
    #[arg(long, default_value_t = 512)]
    pub buffered: u32,
    /// Size: distinct counters of state to measure checkpoints with.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    pub state_keys: Vec<usize>,
    /// Size: checkpoints measured per state size.
    #[arg(long, default_value_t = 10)]
    pub checkpoints: usize,
    /// Size: messages/s of the light load while checkpoints are measured.
    #[arg(long, default_value_t = 200.0)]
    pub light_rate: f64,
    /// Recovery: kills of each kind (a non-coordinator, the coordinator).
    #[arg(long, default_value_t = 3)]
    pub kills: usize,
    /// Recovery: messages/s of the steady load over the three workers.
    #[arg(long, default_value_t = 500.0)]
    pub recovery_rate: f64,
    /// Recovery: addresses of state (100 B values) written into the checkpoint store before
    /// the workers start, which every restore reads back (the load does not touch them).
    #[arg(long, default_value_t = 0)]
    pub seed_keys: u64,
    /// A `spindle` binary for the recovery processes (default: Spindle built into this one).
    #[arg(long, env = "SPINDLE_BIN")]
    pub spindle: Option<PathBuf>,
}

/// What every measurement runs against.
pub(crate) struct Env {
    pub function_port: u16,
    pub function_pid: Option<u32>,
    pub webhook: SocketAddr,
    pub sink: traffic::Sink,
    /// Scratch directory of this run (checkpoint stores, worker files and logs).
    pub dir: PathBuf,
}

/// The counter application: `workers` workers, checkpoints every `interval` (`0s`: off).
pub(crate) fn app_yaml(
    name: &str,
    workers: usize,
    function_port: u16,
    webhook: SocketAddr,
    interval: Duration,
    storage: Option<&Path>,
    buffered: u32,
) -> String {
    BenchApp {
        workers: Some(workers),
        max_buffered: Some(buffered),
        max_batch: Some(100),
        max_in_flight: Some(64),
        checkpoint: Checkpoints {
            storage,
            retained: Some(3),
            ..Checkpoints::every(interval)
        },
        ..BenchApp::new(name)
    }
    .yaml(function_port, webhook)
}

pub(crate) fn pct(sorted_or_not: &[Duration], q: f64) -> Duration {
    let mut v = sorted_or_not.to_vec();
    v.sort();
    percentile(&v, q)
}

pub(crate) fn median(v: &[u64]) -> u64 {
    let mut v = v.to_vec();
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

pub async fn run(args: &CheckpointArgs) -> anyhow::Result<()> {
    run_parts(args).await.map(|_| ())
}

/// As [`run`]; returns the recovery figures.
pub(crate) async fn run_parts(args: &CheckpointArgs) -> anyhow::Result<Vec<recovery::Kill>> {
    let load_start = load_average();
    let harness = Harness::start().await?;
    let (sink, webhook) = traffic::Sink::start().await?;
    let dir = std::env::temp_dir().join(format!("spindle-bench-checkpoint-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let env = Env {
        function_port: harness.function.port,
        function_pid: harness.function.pid(),
        webhook,
        sink,
        dir: dir.clone(),
    };
    println!(
        "spindle-bench checkpoint: counter function (Rust SDK, its own process) on 127.0.0.1:{}, egress webhook on {webhook}; interval {:?}; {} cores, load {load_start}",
        env.function_port,
        args.interval,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    if let Some(p) = &args.spindle {
        // Fail before spending minutes on the other parts.
        anyhow::ensure!(p.is_file(), "the worker binary {} does not exist", p.display());
    }
    let mut figures = Figures::default();
    let result = measure(args, &env, &mut figures).await;
    harness.stop().await;
    let load_end = load_average();
    figures.print(args, &load_start, &load_end);
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result.map(|()| figures.kills)
}

#[derive(Default)]
struct Figures {
    rounds: Vec<overhead::Round>,
    sizes: Vec<size::SizeRow>,
    kills: Vec<recovery::Kill>,
}

async fn measure(args: &CheckpointArgs, env: &Env, f: &mut Figures) -> anyhow::Result<()> {
    if args.parts.contains(&Part::Overhead) {
        println!(
            "overhead: {} rounds of {:?} each way, {} closed-loop clients, {} keys, maxBufferedMessages {}",
            args.rounds, args.round, args.concurrency, args.keys, args.buffered
        );
        for n in 0..args.rounds {
            for on in [false, true] {
                let r = overhead::round(args, env, n, on).await?;
                println!(
                    "  round {n} checkpoints {:<3}: {:>8.0} msgs/s (from state), CPU {:.0} µs/msg, latency p50 {} p99 {}{}",
                    if on { "on" } else { "off" },
                    r.per_second,
                    r.cpu_per_message.as_secs_f64() * 1e6,
                    ms(r.p(0.5)),
                    ms(r.p(0.99)),
                    r.mean_checkpoint.map_or(String::new(), |d| format!(
                        ", {} checkpoints, mean {}",
                        r.completed_checkpoints,
                        ms(d)
                    ))
                );
                f.rounds.push(r);
            }
        }
    }
    if args.parts.contains(&Part::Size) {
        println!(
            "size: checkpoints every {:?} with {:?} keys of state, {} checkpoints each, light load {} msgs/s",
            args.interval, args.state_keys, args.checkpoints, args.light_rate
        );
        size::run(args, env, &mut f.sizes).await?;
    }
    if args.parts.contains(&Part::Recovery) {
        println!(
            "recovery: 3 worker processes, local checkpoints every {:?}, load {} msgs/s, {} kills of each kind",
            args.interval, args.recovery_rate, args.kills
        );
        recovery::run(args, env, &mut f.kills).await?;
    }
    Ok(())
}

impl Figures {
    fn print(&self, args: &CheckpointArgs, load_start: &str, load_end: &str) {
        println!();
        println!("| Figure | Value | Target |");
        println!("|---|---|---|");
        println!(
            "| Machine load (1/5/15 min) at start → end | {load_start} → {load_end} ({} cores) | |",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        let side = |on: bool| self.rounds.iter().filter(move |r| r.checkpoints == on);
        let mean = |on: bool| {
            let v: Vec<f64> = side(on).map(|r| r.per_second).collect();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        if let (Some(off), Some(on)) = (mean(false), mean(true)) {
            let each = |on: bool| {
                side(on)
                    .map(|r| format!("{:.0}", r.per_second))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            println!(
                "| Throughput, checkpoints off ({} keys, {} clients) | {off:.0} msgs/s (rounds: {}) | |",
                args.keys,
                args.concurrency,
                each(false)
            );
            println!(
                "| Throughput, checkpoints every {:?} | {on:.0} msgs/s (rounds: {}) | |",
                args.interval,
                each(true)
            );
            println!(
                "| Throughput ratio on/off | {:.3} (overhead {:.1} %) | overhead < 5 % |",
                on / off,
                (1.0 - on / off) * 100.0
            );
            let cpu = |on: bool| {
                let v: Vec<f64> = side(on).map(|r| r.cpu_per_message.as_secs_f64() * 1e6).collect();
                v.iter().sum::<f64>() / v.len().max(1) as f64
            };
            println!(
                "| CPU per message (worker, load generator, function), off → on | {:.0} → {:.0} µs (+{:.1} %) | |",
                cpu(false),
                cpu(true),
                (cpu(true) / cpu(false).max(1e-9) - 1.0) * 100.0
            );
            for on in [false, true] {
                let mut all: Vec<Duration> = side(on).flat_map(|r| r.latencies.iter().copied()).collect();
                all.sort();
                println!(
                    "| Latency request → egress, checkpoints {} | p50 {} / p99 {} | {} |",
                    if on { "on" } else { "off" },
                    ms(percentile(&all, 0.5)),
                    ms(percentile(&all, 0.99)),
                    if on {
                        "includes the wait for the epoch's checkpoint (the guarantee)"
                    } else {
                        ""
                    }
                );
            }
        }
        for s in &self.sizes {
            let target = if s.keys >= 100_000 { "p99 < 500 ms" } else { "" };
            println!(
                "| Checkpoint duration, {} keys ({} checkpoints) | p50 {:.1} ms / p99 {:.1} ms | {target} |",
                s.keys,
                s.durations.len(),
                pct(&s.durations, 0.5).as_secs_f64() * 1e3,
                pct(&s.durations, 0.99).as_secs_f64() * 1e3
            );
            println!(
                "| Capture pause / part upload, {} keys | p50 {:.2} / p99 {:.2} ms; upload p50 {:.1} / p99 {:.1} ms | |",
                s.keys,
                pct(&s.captures, 0.5).as_secs_f64() * 1e3,
                pct(&s.captures, 0.99).as_secs_f64() * 1e3,
                pct(&s.uploads, 0.5).as_secs_f64() * 1e3,
                pct(&s.uploads, 0.99).as_secs_f64() * 1e3
            );
            let b = median(&s.bytes);
            println!(
                "| Checkpoint size, {} keys | {b} bytes ({:.1} bytes/key){} | |",
                s.keys,
                b as f64 / s.keys as f64,
                if s.failed > 0 {
                    format!(", {} checkpoints FAILED", s.failed)
                } else {
                    String::new()
                }
            );
        }
        for coordinator in [false, true] {
            let k: Vec<&recovery::Kill> = self.kills.iter().filter(|k| k.coordinator == coordinator).collect();
            if k.is_empty() {
                continue;
            }
            let who = if coordinator {
                "the coordinator (worker 0)"
            } else {
                "a non-coordinator"
            };
            let stat = |f: &dyn Fn(&recovery::Kill) -> Duration| {
                let v: Vec<f64> = k.iter().map(|x| f(x).as_secs_f64()).collect();
                let mean = v.iter().sum::<f64>() / v.len() as f64;
                let worst = v.iter().copied().fold(0.0, f64::max);
                format!(
                    "mean {:.0} ms / worst {:.0} ms ({} kills)",
                    mean * 1e3,
                    worst * 1e3,
                    v.len()
                )
            };
            println!(
                "| kill -9 {who} → all workers ready on the new generation | {} | |",
                stat(&|x: &recovery::Kill| x.all_ready)
            );
            println!(
                "| kill -9 {who} → first new completion at the egress | {} | < 2 s |",
                stat(&|x: &recovery::Kill| x.first_completion)
            );
            let reported: Vec<String> = k
                .iter()
                .filter_map(|x| x.reported)
                .map(|d| format!("{:.0}", d.as_secs_f64() * 1e3))
                .collect();
            if !reported.is_empty() {
                println!(
                    "| Coordinator's `spindle_recovery_duration_seconds` (rollback start → all restored), {who} | {} ms | |",
                    reported.join(", ")
                );
            }
        }
    }
}
