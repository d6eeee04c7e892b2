//! `spindle-bench scale`: checkpoints and restores of large state (issue 19, item 5).
//!
//! Millions of keys cannot be written through a function on two cores at 1 % per second, so
//! this drives the checkpoint pipeline itself (`spindle_worker::checkpoint::scale::Model`:
//! the real state stores, capture, part codec, uploader, chains and compaction, manifest,
//! storage, retention and owned-only restore — no partition loop, functions or peers) with
//! state of `--keys` addresses, rewriting `--change-percent` of them every `--interval` and
//! checkpointing after each, to the local filesystem and to moto S3. Per checkpoint it reports
//! bytes written against bytes changed, duration and capture pause; then restores the newest
//! checkpoint 1 → 1, 3 → 3 and 3 → 2, each worker timed with its bytes read and this
//! process's RSS before, at its peak and after; memory per idle address comes from a child
//! process that only fills state (nothing freed before it). The TTL part shows state and
//! checkpoints falling back once values expire; the recovery part runs `spindle-bench
//! checkpoint --parts recovery` with `--recovery-keys` of state in its three worker
//! processes (kill -9 → resumed processing).

pub(crate) mod memory;
mod moto;
mod report;
mod rss;
mod ttl;
mod workload;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use spindle_worker::checkpoint::scale::{Model, Restored};
use spindle_worker::checkpoint::store::CheckpointStore;

use crate::duration;
use crate::report::load_average;
use workload::{Round, Workload, id};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Storage {
    /// The local filesystem (fsynced).
    File,
    /// moto_server from the project venv, on loopback.
    S3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScalePart {
    /// Checkpoints and restores at every `--keys` and `--storage`.
    Checkpoints,
    /// Memory per idle address (a child process per size).
    Memory,
    /// State with a TTL expiring: memory and checkpoint size afterwards.
    Ttl,
    /// kill -9 of worker processes holding `--recovery-keys` of state.
    Recovery,
}

#[derive(Debug, clap::Args)]
pub struct ScaleArgs {
    /// Which measurements to run.
    #[arg(long, value_delimiter = ',', default_value = "memory,checkpoints,ttl,recovery")]
    pub parts: Vec<ScalePart>,
    /// Addresses of state.
    #[arg(long, value_delimiter = ',', default_value = "1000000,10000000")]
    pub keys: Vec<u64>,
    /// Bytes per value.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Share of the keys rewritten every interval, percent.
    #[arg(long, default_value_t = 1.0)]
    pub change_percent: f64,
    /// Checkpoint interval.
    #[arg(long, default_value = "1s", value_parser = duration)]
    pub interval: Duration,
    /// Incremental checkpoints measured per configuration (after the first, full one).
    #[arg(long, default_value_t = 10)]
    pub checkpoints: usize,
    /// Where checkpoints go.
    #[arg(long, value_delimiter = ',', default_value = "file,s3")]
    pub storage: Vec<Storage>,
    /// Key groups of the application.
    #[arg(long, default_value_t = 128)]
    pub key_groups: u32,
    /// TTL part: keys (default: the smallest `--keys`) and their time to live.
    #[arg(long)]
    pub ttl_keys: Option<u64>,
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub ttl: Duration,
    /// Recovery part: keys of state the three worker processes restore after every kill.
    #[arg(long, default_value_t = 1_000_000)]
    pub recovery_keys: u64,
    /// Recovery part: kills of each kind (a non-coordinator, the coordinator).
    #[arg(long, default_value_t = 3)]
    pub kills: usize,
    /// The venv holding `bin/moto_server` (`e2e/python/setup-venv.sh`).
    #[arg(long, env = "SPINDLE_PY_VENV", default_value = "target/py-venv")]
    pub venv: PathBuf,
    /// A `spindle` binary for the recovery processes (default: Spindle built into this one).
    #[arg(long, env = "SPINDLE_BIN")]
    pub spindle: Option<PathBuf>,
}

/// One configuration's checkpoints and restores.
pub(crate) struct Run {
    pub keys: u64,
    pub storage: Storage,
    pub writers: u32,
    pub fill: Duration,
    pub first: spindle_worker::checkpoint::scale::CheckpointFigures,
    pub rounds: Vec<Round>,
    /// Whether each checkpoint ended within its interval.
    pub late: usize,
    /// Bytes of the state sections the newest checkpoint references, and the state's key +
    /// value bytes.
    pub chain_bytes: u64,
    pub logical_bytes: u64,
    pub restores: Vec<RestoreRun>,
}

pub(crate) struct RestoreRun {
    pub to: u32,
    pub workers: Vec<RestoredWorker>,
}

pub(crate) struct RestoredWorker {
    pub took: Duration,
    pub bytes_read: u64,
    pub addresses: usize,
    pub rss_before: u64,
    pub rss_peak: u64,
    pub rss_after: u64,
}

pub async fn run(args: &ScaleArgs) -> anyhow::Result<()> {
    let load_start = load_average();
    let dir = std::env::temp_dir().join(format!("spindle-bench-scale-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let moto = if args.parts.contains(&ScalePart::Checkpoints) && args.storage.contains(&Storage::S3) {
        let m = moto::Moto::start(&args.venv, "scale")?;
        println!("started: moto_server (S3) at {}, pid {}", m.endpoint, m.pid());
        Some(m)
    } else {
        None
    };
    println!(
        "spindle-bench scale: {:?} keys of {} B values, {} % rewritten every {:?}, {} key groups; {} cores, load {load_start}",
        args.keys,
        args.value_bytes,
        args.change_percent,
        args.interval,
        args.key_groups,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let transfer = spindle_worker::checkpoint::store::Transfer::from_env(&std::env::vars().collect::<Vec<_>>())
        .map_err(anyhow::Error::msg)?;
    println!(
        "storage requests (SPINDLE_STORAGE_*): pieces of {} MiB, {} in flight, {} retries, timeout {:?} per piece",
        transfer.piece >> 20,
        transfer.concurrency,
        transfer.retries,
        transfer.request_timeout()
    );
    let mut out = report::Report::default();
    let result = measure(args, &dir, moto.as_ref(), &mut out).await;
    drop(moto);
    out.print(args, &load_start, &load_average());
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("scratch directory kept: {}", dir.display());
    }
    result
}

async fn measure(
    args: &ScaleArgs,
    dir: &Path,
    moto: Option<&moto::Moto>,
    out: &mut report::Report,
) -> anyhow::Result<()> {
    if args.parts.contains(&ScalePart::Memory) {
        for &keys in &args.keys {
            let m = memory::measure(args, keys)?;
            println!(
                "memory: {keys} keys: {:.0} B per address after filling (changes tracked), {:.0} B after its checkpoint",
                m.per_address_filled(),
                m.per_address_checkpointed()
            );
            out.memory.push(m);
        }
    }
    if args.parts.contains(&ScalePart::Checkpoints) {
        for &keys in &args.keys {
            for &storage in &args.storage {
                for (writers, restores) in [(1, &[1][..]), (3, &[3, 2][..])] {
                    let n = out.runs.len();
                    let store = open(storage, dir, moto, &format!("run{n}"))?;
                    let reopen = || open(storage, dir, moto, &format!("run{n}"));
                    out.runs
                        .push(checkpoints(args, keys, storage, writers, restores, store, reopen).await?);
                }
            }
        }
    }
    if args.parts.contains(&ScalePart::Ttl) {
        let keys = args.ttl_keys.or(args.keys.iter().copied().min()).context("no --keys")?;
        let store = open(Storage::File, dir, None, "ttl")?;
        out.ttl = Some(ttl::run(args, keys, store).await?);
    }
    if args.parts.contains(&ScalePart::Recovery) {
        println!(
            "recovery: `spindle-bench checkpoint --parts recovery` with {} keys of state in the worker processes",
            args.recovery_keys
        );
        let mut argv: Vec<String> = vec![
            "checkpoint".into(),
            "--parts".into(),
            "recovery".into(),
            "--seed-keys".into(),
            args.recovery_keys.to_string(),
            "--kills".into(),
            args.kills.to_string(),
            "--interval".into(),
            format!("{}ms", args.interval.as_millis()),
        ];
        if let Some(s) = &args.spindle {
            argv.extend(["--spindle".into(), s.display().to_string()]);
        }
        let ck = crate::checkpoint_args(&argv)?;
        out.recovery = Some(crate::checkpoint::run_parts(&ck).await?);
    }
    Ok(())
}

fn open(storage: Storage, dir: &Path, moto: Option<&moto::Moto>, prefix: &str) -> anyhow::Result<CheckpointStore> {
    let app = "scale";
    Ok(match storage {
        Storage::File => {
            let path = dir.join(prefix);
            CheckpointStore::open(path.to_str().context("a UTF-8 scratch path")?, Path::new("/"), app)?
        }
        Storage::S3 => {
            let moto = moto.context("moto is not running")?;
            // The bench's own `SPINDLE_STORAGE_*` (piece size, concurrency) apply here too.
            let env = moto
                .env()
                .into_iter()
                .chain(std::env::vars().filter(|(k, _)| k.starts_with("SPINDLE_STORAGE_")));
            CheckpointStore::open_with_env(&format!("s3://scale/{prefix}"), Path::new("/"), app, env)?
        }
    })
}

/// `writers` workers fill `keys`, take a full checkpoint and `args.checkpoints` incremental
/// ones; the newest is then restored onto each of `restores` worker counts and checked.
async fn checkpoints(
    args: &ScaleArgs,
    keys: u64,
    storage: Storage,
    writers: u32,
    restores: &[u32],
    store: CheckpointStore,
    reopen: impl Fn() -> anyhow::Result<CheckpointStore>,
) -> anyhow::Result<Run> {
    let label = format!("{keys} keys, {storage:?}, {writers} worker(s)");
    println!("checkpoints: {label}: filling");
    let mut model = Model::new(store, "scale", args.key_groups, writers, None);
    let mut work = Workload::new(keys, args.value_bytes);
    let started = Instant::now();
    work.fill(&mut model, 0);
    let fill = started.elapsed();
    let first = model.checkpoint().await.map_err(anyhow::Error::msg)?;
    println!(
        "  filled in {:.1} s; first (full) checkpoint {} bytes in {:.0} ms",
        fill.as_secs_f64(),
        first.written,
        ms(first.duration)
    );
    let changes = (keys as f64 * args.change_percent / 100.0).round() as u64;
    let mut rounds = Vec::new();
    let mut late = 0;
    for _ in 0..args.checkpoints {
        let tick = Instant::now();
        let r = work.round(&mut model, changes, now_ms()).await?;
        model.retain(3).await.map_err(anyhow::Error::msg)?;
        let took = tick.elapsed();
        println!(
            "  checkpoint {}: {} keys changed ({} B, applied in {:.0} ms), wrote {} B (deltas {}, bases {}), {:.0} ms, capture {:.1} ms",
            r.checkpoint.checkpoint,
            r.changed_keys,
            r.changed_bytes,
            ms(r.apply),
            r.checkpoint.written + r.checkpoint.manifest_bytes,
            r.checkpoint.delta,
            r.checkpoint.base,
            ms(r.checkpoint.duration),
            ms(r.checkpoint.capture)
        );
        if took > args.interval {
            late += 1;
        } else {
            tokio::time::sleep(args.interval - took).await;
        }
        rounds.push(r);
    }
    let chain_bytes = model.chain_bytes();
    drop(model);
    let logical_bytes = work.logical_bytes();
    let mut restore_runs = Vec::new();
    for &to in restores {
        restore_runs.push(restore(&work, reopen()?, args.key_groups, writers, to).await?);
    }
    Ok(Run {
        keys,
        storage,
        writers,
        fill,
        first,
        rounds,
        late,
        chain_bytes,
        logical_bytes,
        restores: restore_runs,
    })
}

/// Every worker of `to` restores in turn (the ones before it stay in memory, as on a machine
/// running them all); then the address count and a sample of values are checked.
async fn restore(
    work: &Workload,
    store: CheckpointStore,
    key_groups: u32,
    from: u32,
    to: u32,
) -> anyhow::Result<RestoreRun> {
    let mut held: Vec<Restored> = Vec::new();
    let mut workers = Vec::new();
    for w in 0..to {
        let rss_before = rss::now();
        let peak = rss::Peak::start();
        let r = Restored::load(&store, "scale", key_groups, w, to)
            .await
            .map_err(anyhow::Error::msg);
        let rss_peak = peak.stop();
        let r = r?;
        let rw = RestoredWorker {
            took: r.figures.took,
            bytes_read: r.figures.bytes_read,
            addresses: r.figures.addresses,
            rss_before,
            rss_peak,
            rss_after: rss::now(),
        };
        println!(
            "  restore {from} → {to}, worker {w}: {} addresses, {} B read in {:.0} ms; RSS {:.0} → peak {:.0} → {:.0} MiB",
            rw.addresses,
            rw.bytes_read,
            ms(rw.took),
            rss::mib(rw.rss_before),
            rss::mib(rw.rss_peak),
            rss::mib(rw.rss_after)
        );
        workers.push(rw);
        held.push(r);
    }
    let addresses: usize = workers.iter().map(|w| w.addresses).sum();
    ensure!(
        addresses as u64 == work.keys,
        "restore {from} → {to}: {addresses} addresses, {} written",
        work.keys
    );
    for i in work.sample(10_000) {
        let found: Vec<Vec<u8>> = held.iter().filter_map(|r| r.get(&id(i))).collect();
        ensure!(
            found == [work.value(i)],
            "restore {from} → {to}: key {} held {} times, value {:?}",
            id(i),
            found.len(),
            found.first().map(|v| String::from_utf8_lossy(v).into_owned())
        );
    }
    Ok(RestoreRun { to, workers })
}

/// Wall-clock milliseconds, what state expiry is measured in.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
