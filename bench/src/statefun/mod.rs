//! `spindle-bench statefun`: Spindle beside Apache Flink Stateful Functions 3.3.0 in one run,
//! on the same real Kafka broker (Apache Kafka 4.1.1, KRaft) with the same input and the same
//! function — the Rust-SDK counter ([`counter`]), each system with its own function process.
//!
//! For each system in turn: a fresh input topic is preloaded with the same `--backlog` inputs,
//! the system starts reading it from the earliest offset, and a reader process
//! (`read_committed`, no dedup: [`output`]) follows its output topic. Measured:
//! 1. backlog throughput: inputs/s from the first output to the last backlog output;
//! 2. latency: `--rate` inputs/s produced live for `--live`, each from its produce to its
//!    output reaching the reader (p50/p99) — at the exactly-once guarantee on both sides, so
//!    bounded below by the checkpoint interval;
//! 3. CPU (share of one core) and RSS of every process in both phases: broker, system,
//!    function, reader;
//! 4. checkpoint duration (Spindle's `spindle_checkpoint_duration_seconds`, StateFun's
//!    `checkpointDuration` from Flink's log);
//! 5. exactly-once on what the reader saw: every input's output once, each key's totals
//!    1, 2, 3, … ([`output::verdict`]).
//!
//! What each side guarantees: StateFun's Kafka egress is transactional (`exactly-once`
//! delivery, committed with the checkpoint), so a `read_committed` reader sees each output once
//! even across failures. Spindle's Kafka egress is not transactional yet: it releases each
//! epoch's records after the checkpoint completes, with an `idempotency-key` header; a reader
//! sees them exactly once as long as nothing fails (this benchmark injects no failure), and
//! after a failure may see re-sends with the same key (the Kafka tests check that).

mod broker;
mod counter;
mod output;
mod results;
mod spindle_side;
mod statefun_side;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use spindle_spec::{HumanDuration, LocalProcess};
use spindle_worker::local::FunctionProcess;

pub(crate) use counter::serve as serve_kafka_counter;

use crate::duration;
use crate::report::load_average;
use crate::usage::{Snapshot, between, snapshot};
use broker::Broker;
use output::{Reader, verdict};
use results::{Phase, SystemRun};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum System {
    Spindle,
    Statefun,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Spindle => "spindle",
            System::Statefun => "statefun",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct StatefunArgs {
    /// Inputs preloaded before each system starts (the throughput phase).
    #[arg(long, default_value_t = 50_000)]
    pub backlog: u64,
    /// Inputs per second produced live after the backlog (the latency phase).
    #[arg(long, default_value_t = 500)]
    pub rate: u64,
    /// Length of the live phase.
    #[arg(long, default_value = "20s", value_parser = duration)]
    pub live: Duration,
    /// Checkpoint interval of both systems.
    #[arg(long, default_value = "1s", value_parser = duration)]
    pub interval: Duration,
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Distinct counters (record keys).
    #[arg(long, default_value_t = 1000)]
    pub keys: u64,
    /// Systems to run, in this order.
    #[arg(long, value_delimiter = ',', default_value = "spindle,statefun")]
    pub systems: Vec<System>,
    /// The venv with kafka-python (`e2e/python/setup-venv.sh`), for the output readers.
    #[arg(long, env = "SPINDLE_PY_VENV", default_value = "target/py-venv")]
    pub venv: PathBuf,
    /// The Spindle repository (for the e2e scripts); default: the current directory.
    #[arg(long)]
    pub repo: Option<PathBuf>,
    /// Where `statefun.md` and `statefun.json` go.
    #[arg(long, default_value = "bench/results")]
    pub out: PathBuf,
    /// A `spindle` binary for the worker (default: this binary's own `spindle` subcommand).
    #[arg(long)]
    pub spindle: Option<PathBuf>,
    /// After the measured phases, a failure round: `--rate` inputs/s for 10 s with `kill -9`
    /// of the system's process halfway, then a restart (Spindle from its checkpoints, StateFun
    /// from its newest retained checkpoint); the verdict covers it.
    #[arg(long)]
    pub kill: bool,
}

/// Runs a fetch script (`bash SCRIPT`): the directory it prints, and how long it took.
fn fetch(repo: &Path, script: &str) -> anyhow::Result<(PathBuf, Duration)> {
    let started = Instant::now();
    let out = std::process::Command::new("bash")
        .arg(repo.join(script))
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {script}"))?;
    if !out.status.success() {
        bail!("{script} failed ({})", out.status);
    }
    Ok((
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()),
        started.elapsed(),
    ))
}

pub async fn run(args: &StatefunArgs) -> anyhow::Result<()> {
    let repo = broker::repo_root(args.repo.as_ref())?;
    let python = args.venv.join("bin/python");
    anyhow::ensure!(
        python.exists(),
        "{} has no python: run `bash e2e/python/setup-venv.sh {}`",
        args.venv.display(),
        args.venv.display()
    );
    let (kafka_libs, kafka_fetch) = fetch(&repo, "e2e/kafka/fetch.sh")?;
    let (statefun_dir, statefun_fetch) = fetch(&repo, "e2e/statefun/fetch.sh")?;
    let dir = std::env::temp_dir().join(format!("spindle-bench-statefun-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let broker = Broker::start(&repo, &dir).await?;
    let kafka_version = kafka_libs
        .parent()
        .and_then(|p| p.file_name())
        .map_or("?".into(), |v| v.to_string_lossy().into_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load_before = load_average();
    println!(
        "spindle-bench statefun: {} backlog inputs, then {} inputs/s for {:?}; {} partitions, {} keys, checkpoints every {:?}; {cores} cores, load {load_before}",
        args.backlog, args.rate, args.live, args.partitions, args.keys, args.interval
    );
    println!(
        "started: Apache Kafka {kafka_version} (KRaft, one node) at {} in {:.1} s; jars ready in {:.1} s (Kafka), {:.1} s (StateFun 3.3.0 + Flink 1.16.2 + launcher, {})",
        broker.addr,
        broker.started_in.as_secs_f64(),
        kafka_fetch.as_secs_f64(),
        statefun_fetch.as_secs_f64(),
        statefun_dir.display()
    );
    let client = broker.client().await?;
    let mut runs = Vec::new();
    let result = async {
        for &system in &args.systems {
            let run = run_system(args, system, &repo, &python, &broker, &client, &dir).await?;
            println!("{}", run.summary());
            if let Some(f) = run.failure_summary() {
                println!("{f}");
            }
            runs.push(run);
        }
        anyhow::Ok(())
    }
    .await;
    let load_after = load_average();
    println!("machine load after the run: {load_after}");
    result?;
    let meta = results::Meta {
        kafka_version,
        backlog: args.backlog,
        rate: args.rate,
        live: args.live,
        interval: args.interval,
        partitions: args.partitions,
        keys: args.keys,
        cores,
        load_before,
        load_after,
        kafka_fetch,
        statefun_fetch,
        broker_start: broker.started_in,
    };
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("statefun.md"), results::markdown(&meta, &runs))?;
    std::fs::write(
        args.out.join("statefun.json"),
        serde_json::to_string_pretty(&results::json(&meta, &runs))?,
    )?;
    println!("written: {}/statefun.{{md,json}}", args.out.display());
    let _ = std::fs::remove_dir_all(&dir);
    // Without a failure every system must be exactly once as read. With `--kill`, a re-send
    // of the same record is what Spindle's non-transactional egress does (reported above);
    // anything lost, or state applied other than once, fails the run.
    let failed: Vec<&str> = runs
        .iter()
        .filter(|r| match &r.failure {
            None => !r.verdict.exactly_once(),
            Some(f) => !f.after_dropping_repeats.exactly_once(),
        })
        .map(|r| r.system)
        .collect();
    anyhow::ensure!(failed.is_empty(), "not exactly once: {failed:?}");
    Ok(())
}

/// The system under test, as a process.
enum Running {
    Spindle(spindle_side::Spindle),
    StateFun(statefun_side::StateFun),
}

impl Running {
    fn pid(&self) -> u32 {
        match self {
            Running::Spindle(s) => s.pid(),
            Running::StateFun(s) => s.pid(),
        }
    }

    fn alive(&mut self, dir: &Path) -> anyhow::Result<()> {
        match self {
            Running::Spindle(s) => s.alive(dir),
            Running::StateFun(s) => s.alive(dir),
        }
    }

    fn kill9(&mut self) {
        match self {
            Running::Spindle(s) => s.kill9(),
            Running::StateFun(s) => s.kill9(),
        }
    }
}

/// Waits until `reader` holds `want` distinct seqs of `range`, checking that the system still
/// runs.
async fn wait_outputs(
    reader: &Reader,
    range: std::ops::Range<u64>,
    want: u64,
    system: &mut Running,
    dir: &Path,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let want = want as usize;
    loop {
        let have = reader.distinct_in(range.clone());
        if have >= want {
            return Ok(());
        }
        system.alive(dir)?;
        if Instant::now() > deadline {
            bail!(
                "only {have} of the {want} outputs of inputs {range:?} after {timeout:?} (logs in {})",
                dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_system(
    args: &StatefunArgs,
    system: System,
    repo: &Path,
    python: &Path,
    broker: &Broker,
    client: &rskafka::client::Client,
    base: &Path,
) -> anyhow::Result<SystemRun> {
    let name = system.name();
    let dir = base.join(name);
    std::fs::create_dir_all(&dir)?;
    let (input, output) = (format!("in-{name}"), format!("out-{name}"));
    broker.create_topic(client, &input, args.partitions).await?;
    broker.create_topic(client, &output, args.partitions).await?;
    broker::produce(client, &input, args.partitions, 0..args.backlog, args.keys).await?;
    let reader = Reader::start(
        python,
        &repo.join("e2e/statefun/read_topic.py"),
        &broker.addr,
        &output,
        args.partitions,
    )
    .await?;
    let local = LocalProcess {
        command: vec![
            std::env::current_exe()?.display().to_string(),
            "serve-kafka-counter".into(),
        ],
        env: [("OUT_TOPIC".to_string(), output.clone())].into(),
        working_dir: None,
        startup_timeout: HumanDuration::from_secs(30),
    };
    let function = FunctionProcess::start(counter::COUNTER, &local, &dir).await?;
    let start = |restore: Option<&Path>| -> anyhow::Result<Running> {
        Ok(match system {
            // Spindle restores from its checkpoint storage by itself.
            System::Spindle => Running::Spindle(spindle_side::Spindle::start(
                args.spindle.as_ref(),
                &dir,
                &spindle_side::app_yaml(
                    function.port,
                    &broker.addr,
                    &input,
                    args.interval,
                    &dir.join("checkpoints"),
                ),
            )?),
            System::Statefun => Running::StateFun(statefun_side::StateFun::start(
                repo,
                &dir,
                function.port,
                &broker.addr,
                &input,
                args.interval,
                restore,
            )?),
        })
    };
    let started = Instant::now();
    let mut running = start(None)?;
    let names = [
        "kafka broker",
        if system == System::Spindle {
            "spindle worker"
        } else {
            "statefun jvm"
        },
        "counter function",
        "reader",
    ];
    let pids = [Some(broker.pid()), Some(running.pid()), function.pid(), reader.pid()];
    let pids: Vec<u32> = pids.iter().map(|p| p.unwrap_or(0)).collect();
    let outcome = async {
        // Phase 1: the backlog, from the first output on (the start-up is reported apart).
        let timeout = Duration::from_secs(600);
        wait_outputs(&reader, 0..args.backlog, 1, &mut running, &dir, timeout).await?;
        let first = Instant::now();
        let s0 = snapshot(&pids);
        wait_outputs(&reader, 0..args.backlog, args.backlog, &mut running, &dir, timeout).await?;
        let s1 = snapshot(&pids);
        // Phase 2: live inputs at a fixed rate.
        let live_n = (args.rate as f64 * args.live.as_secs_f64()) as u64;
        let live = args.backlog..args.backlog + live_n;
        let s2 = snapshot(&pids);
        let sent = broker::produce_paced(client, &input, args.partitions, live.clone(), args.keys, args.rate).await?;
        wait_outputs(
            &reader,
            live.clone(),
            live_n,
            &mut running,
            &dir,
            Duration::from_secs(120),
        )
        .await?;
        let s3 = snapshot(&pids);
        // Late re-sends would show up here: two more checkpoint intervals before the verdict.
        tokio::time::sleep(2 * args.interval + Duration::from_millis(500)).await;
        let checkpoints = match &running {
            Running::Spindle(s) => {
                let (sum, count) = s.checkpoints().await;
                results::Checkpoints {
                    count,
                    mean_ms: if count > 0 { sum * 1e3 / count as f64 } else { 0.0 },
                    max_ms: None,
                }
            }
            Running::StateFun(_) => {
                let d = statefun_side::checkpoint_durations(
                    &std::fs::read_to_string(dir.join("statefun.log")).unwrap_or_default(),
                );
                results::Checkpoints {
                    count: d.len() as u64,
                    mean_ms: d.iter().sum::<f64>() / d.len().max(1) as f64,
                    max_ms: d.iter().copied().reduce(f64::max),
                }
            }
        };
        // Phase 3 (--kill): inputs at the live rate for 10 s, kill -9 halfway, restart.
        let mut end = live.end;
        let mut failure = None;
        if args.kill {
            let n = args.rate * 10;
            let range = end..end + n;
            end += n;
            let (c, topic, (partitions, keys, rate)) = (
                broker.client().await?,
                input.clone(),
                (args.partitions, args.keys, args.rate),
            );
            let r = range.clone();
            let producer =
                tokio::spawn(async move { broker::produce_paced(&c, &topic, partitions, r, keys, rate).await });
            tokio::time::sleep(Duration::from_secs(5)).await;
            running.kill9();
            let killed = Instant::now();
            let restore = statefun_side::latest_checkpoint(&dir);
            running = start(restore.as_deref())?;
            producer.await??;
            wait_outputs(&reader, range.clone(), n, &mut running, &dir, Duration::from_secs(300)).await?;
            let recovered = killed.elapsed();
            tokio::time::sleep(2 * args.interval + Duration::from_millis(500)).await;
            failure = Some((range, recovered, restore));
        }
        let arrivals = reader.arrivals();
        anyhow::ensure!(
            reader.malformed() == 0,
            "{} output records are not counter totals",
            reader.malformed()
        );
        Ok::<_, anyhow::Error>((first, [s0, s1, s2, s3], sent, arrivals, checkpoints, end, failure))
    }
    .await;
    drop(running);
    function.stop().await;
    reader.stop().await;
    let (first, [s0, s1, s2, s3], sent, arrivals, checkpoints, end, failure) = outcome?;
    let failure = failure.map(|(range, recovered, restore)| {
        if let Some(r) = &restore {
            println!("{name}: killed with kill -9, restarted from {}", r.display());
        }
        // The same records read again (same seq, same total) are re-sends; dropping them shows
        // whether anything else is wrong.
        let mut seen = std::collections::HashSet::new();
        let unique: Vec<_> = arrivals
            .iter()
            .filter(|a| seen.insert((a.seq, a.total)))
            .cloned()
            .collect();
        results::Failure {
            inputs: range.end - range.start,
            recovered,
            after_dropping_repeats: verdict(&unique, 0..end),
        }
    });
    Ok(SystemRun::new(
        name,
        first.duration_since(started),
        args.backlog,
        &arrivals,
        &sent,
        phase(&names, &s0, &s1),
        phase(&names, &s2, &s3),
        checkpoints,
        verdict(&arrivals, 0..end),
        failure,
    ))
}

fn phase(names: &[&'static str], a: &Snapshot, b: &Snapshot) -> Phase {
    Phase {
        seconds: b.at.duration_since(a.at).as_secs_f64(),
        processes: names.iter().copied().zip(between(a, b)).collect(),
    }
}
