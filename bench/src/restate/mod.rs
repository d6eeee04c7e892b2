//! `spindle-bench restate`: Spindle and Restate side by side — same machine, same run, same
//! workloads, same load generator — reported as ratios (issue 7).
//!
//! Both systems stay up for the whole run and are measured in turn, row by row, so a change in
//! the machine's load hits both alike. Workloads (each at every `--concurrency`, closed loop):
//! - `request-reply`: `counter/{key}` adds the message's value to its state and answers with
//!   the new total; a client waits for that answer in the HTTP response — Restate's, once the
//!   invocation is complete and journaled; Spindle's (`Spindle-Reply: wait`), released once the
//!   checkpoint holding the effect and the reply is complete. Both are checked to be this add's.
//! - `one-way`: the same adds, each acknowledged once *durably accepted* — Restate's `/send`
//!   (202); Spindle's `Spindle-Ack: durable` (200). Completions are counted from state
//!   (Restate) and from the egress (Spindle) over the measured window.
//! - `chain`: each input is forwarded `--hops` times between `hop/{key}` addresses with
//!   one-way messages (Restate: one-way calls between objects); the last one reports to the
//!   webhook. Messages/s count every invocation of the chain (hops + 1).

mod drive;
mod floor;
mod restate_side;
mod results;
mod spindle_side;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use floor::{Floor, serve_echo};
pub use restate_side::RestateConfig;

use crate::duration;
use crate::harness::Harness;
use crate::report::load_average;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    RequestReply,
    OneWay,
    Chain,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::RequestReply => "request-reply",
            Workload::OneWay => "one-way",
            Workload::Chain => "chain",
        }
    }
}

/// How Spindle checkpoints in a run: every interval only, or with group commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SpindleMode {
    /// `checkpoint.interval` and `checkpoint.minPause`: a checkpoint starts as soon as
    /// something waits for one.
    Group,
    /// `checkpoint.interval` only.
    Periodic,
}

#[derive(Debug, clap::Args)]
pub struct RestateArgs {
    /// Workloads to measure.
    #[arg(long, value_delimiter = ',', default_value = "request-reply,one-way,chain")]
    pub workloads: Vec<Workload>,
    /// Closed-loop clients.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub concurrency: Vec<usize>,
    /// Measured time per row (after a warm-up of a fifth of it).
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub duration: Duration,
    /// Distinct counter (and hop) keys, used round robin.
    #[arg(long, default_value_t = 1000)]
    pub keys: u64,
    /// Forwards per chain.
    #[arg(long, default_value_t = 10)]
    pub hops: u32,
    /// Spindle configurations to run beside Restate.
    #[arg(long, value_delimiter = ',', default_value = "group,periodic")]
    pub spindle_modes: Vec<SpindleMode>,
    /// Spindle's checkpoint interval (local filesystem, fsynced).
    #[arg(long, default_value = "1s", value_parser = duration)]
    pub interval: Duration,
    /// Spindle's `checkpoint.minPause` in group-commit mode (0: the next checkpoint starts as
    /// soon as the previous one ended, when something waits).
    #[arg(long, default_value = "0ms", value_parser = duration)]
    pub min_pause: Duration,
    /// Skip Restate (Spindle only; no ratios).
    #[arg(long)]
    pub no_restate: bool,
    /// Restate configurations measured, each its own server: its defaults, and tuned for a
    /// small single node.
    #[arg(long, value_delimiter = ',', default_value = "default,tuned")]
    pub restate_configs: Vec<RestateConfig>,
    /// Floors measured beside the systems with the same load generator (`--floors` alone for
    /// none): a bare hyper echo server, and the Rust-SDK function called directly.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "http,statefun")]
    pub floors: Vec<Floor>,
    /// Where results go: `restate.md`, `restate.json`, `restate.png`.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/results"))]
    pub out: PathBuf,
    /// Where npm installs Restate and its SDK, and the chart's Python venv lives
    /// (default: `bench-restate` in the target directory).
    #[arg(long, env = "SPINDLE_BENCH_RESTATE_DIR")]
    pub tools: Option<PathBuf>,
    /// A `spindle` binary for Spindle's side (default: Spindle built into this one).
    #[arg(long, env = "SPINDLE_BIN")]
    pub spindle: Option<PathBuf>,
}

/// One system under test, started and kept up for the run.
pub(crate) struct Side {
    pub label: String,
    pub kind: SideKind,
    pub ingress: std::net::SocketAddr,
    /// Spindle's admin endpoints (state reads for the final check).
    pub admin: Option<std::net::SocketAddr>,
    /// Processes whose CPU and memory count for this system, by role.
    pub processes: Vec<(&'static str, u32)>,
    /// The function floor's state, kept by the load generator.
    pub direct: Option<Arc<floor::Direct>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SideKind {
    Restate(RestateConfig),
    Spindle(SpindleMode),
    Floor(Floor),
}

impl Side {
    /// What an acknowledgement (or completion) means on this side, for the report.
    pub fn guarantee(&self, w: Workload) -> &'static str {
        match (self.kind, w) {
            (SideKind::Floor(f), _) => f.guarantee(),
            (SideKind::Restate(_), Workload::RequestReply) => {
                "response carrying the new total after the invocation completed, journaled durably (fsync)"
            }
            (SideKind::Restate(_), Workload::OneWay) => "202 once the invocation is durably enqueued (fsync)",
            (SideKind::Restate(_), Workload::Chain) => {
                "every hop a durable one-way call; completion reported from a journaled side effect"
            }
            (SideKind::Spindle(_), Workload::RequestReply) => {
                "response (`Spindle-Reply: wait`) carrying the new total, released after the checkpoint holding the effect and the reply completed (fsync)"
            }
            (SideKind::Spindle(_), Workload::OneWay) => {
                "200 once the checkpoint containing the record completed (fsync)"
            }
            (SideKind::Spindle(_), Workload::Chain) => {
                "egress of the last hop, released after its checkpoint completed (fsync); hops in between are checkpointed, not journaled"
            }
        }
    }
}

pub async fn run(args: &RestateArgs) -> anyhow::Result<()> {
    let load_start = load_average();
    let tools = match &args.tools {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .and_then(|p| p.parent())
            .map(|p| p.join("bench-restate"))
            .ok_or_else(|| anyhow::anyhow!("cannot place the tools directory; pass --tools"))?,
    };
    std::fs::create_dir_all(&tools)?;
    let scratch = std::env::temp_dir().join(format!("spindle-bench-restate-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    println!(
        "spindle-bench restate: {} cores, load {load_start}; workloads {:?}, concurrency {:?}, {:?} per row, {} keys, chains of {} hops",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.workloads.iter().map(|w| w.name()).collect::<Vec<_>>(),
        args.concurrency,
        args.duration,
        args.keys,
        args.hops
    );

    let harness = Harness::start().await?;
    let mut spindles = Vec::new();
    for &mode in &args.spindle_modes {
        spindles.push(spindle_side::SpindleProcess::start(args, mode, &harness, &scratch).await?);
    }
    let mut restate = Vec::new();
    if !args.no_restate {
        for &config in &args.restate_configs {
            restate.push(restate_side::RestateProcesses::start(&tools, &scratch, harness.webhook, config).await?);
        }
    }
    let echo = if args.floors.contains(&Floor::Http) {
        Some(floor::EchoProcess::start().await?)
    } else {
        None
    };
    let mut sides: Vec<Side> = Vec::new();
    if let Some(e) = &echo {
        sides.push(e.side());
    }
    if args.floors.contains(&Floor::Statefun) {
        sides.push(floor::statefun_side(&harness, args.keys));
    }
    sides.extend(restate.iter().map(|r| r.side()));
    sides.extend(spindles.iter().map(|s| s.side(&harness)));

    let mut rows = Vec::new();
    let mut totals = vec![drive::Sent::default(); sides.len()];
    let result = async {
        for &w in &args.workloads {
            for &c in &args.concurrency {
                for (i, side) in sides.iter().enumerate() {
                    let row = drive::row(args, side, w, c, &harness, &restate, &mut totals[i]).await?;
                    println!("{}", results::line(&row));
                    rows.push(row);
                    // One-way work acknowledged but not yet done keeps a system busy after its
                    // row; the next row (often the other system's) must not pay for it.
                    let begun = Instant::now();
                    drive::verify(args, side, &totals[i], &restate).await?;
                    println!(
                        "  drained in {:.1} s: every add and hop sent so far is in the state of {}",
                        begun.elapsed().as_secs_f64(),
                        side.label
                    );
                }
            }
        }
        println!("checking every counter and hop count on every system…");
        for (side, sent) in sides.iter().zip(&totals) {
            let check = drive::verify(args, side, sent, &restate).await?;
            println!("  {}: {check}", side.label);
        }
        anyhow::Ok(())
    }
    .await;
    let load_end = load_average();
    if !rows.is_empty() {
        let written = results::write(args, &tools, &rows, &load_start, &load_end)?;
        for p in written {
            println!("wrote {}", p.display());
        }
    }
    drop(restate);
    drop(spindles);
    drop(echo);
    harness.stop().await;
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&scratch);
    } else {
        println!("logs kept in {}", scratch.display());
    }
    result
}
