//! `spindle-bench`: messages/s and latency through one worker to the Rust-SDK counter function.
//!
//! The counter function runs as its own process (this binary re-executed with
//! `serve-counter`); the worker and the load generator share this process. Each of `c`
//! closed-loop clients sends `example/Add {seq, value}` to one of `keys` counters through the
//! HTTP ingress and waits until the counter's egress record for that `seq` reaches the
//! benchmark's webhook: latency is ingress → function → egress, end to end. With fewer keys than
//! clients, messages queue per address and the batch limit matters.

mod app;
mod chain;
pub(crate) mod checkpoint;
mod connectors;
mod harness;
mod load;
mod report;
mod restate;
mod scale;
mod statefun;
mod usage;

use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use spindle_spec::HumanDuration;

#[derive(Debug, Parser)]
#[command(name = "spindle-bench", about = "Throughput and latency through one Spindle worker")]
pub struct Args {
    #[command(subcommand)]
    pub serve: Option<Serve>,
    /// Measured time per configuration (after a warm-up of a fifth of it).
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub duration: Duration,
    /// Batch limits (`maxBatchSize`) to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    pub batch: Vec<u32>,
    /// Concurrent closed-loop clients.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    pub concurrency: Vec<usize>,
    /// Distinct counter addresses the clients share.
    #[arg(long, default_value_t = 8)]
    pub keys: usize,
}

#[derive(Debug, Subcommand)]
pub enum Serve {
    /// Serve the example functions on 127.0.0.1:$PORT (used by the benchmark itself).
    ServeCounter,
    /// Chains of `example/hop` messages across 1 and N workers connected over loopback gRPC:
    /// hops/s, per-hop latency, the share of cross-worker hops and bytes per message on the wire.
    Chain(chain::ChainArgs),
    /// The cost of exactly-once: throughput with checkpoints on versus off (interleaved
    /// rounds), checkpoint duration and size against state size, and recovery time from
    /// `kill -9` of a worker process (`spindle worker` processes run from this binary).
    Checkpoint(checkpoint::CheckpointArgs),
    /// Records/s Kafka -> function -> Kafka and NATS JetStream -> function -> JetStream,
    /// through 1 and 3 workers with checkpoints every second (brokers from the project venv).
    Connectors(connectors::ConnectorArgs),
    /// Spindle and Restate side by side in one run: request-reply, one-way and chain
    /// workloads at several concurrencies, with CPU and memory of every process; writes
    /// markdown, JSON and a PNG chart (needs Node.js and npm for Restate's side).
    Restate(restate::RestateArgs),
    /// Spindle beside Apache Flink StateFun 3.3.0 on one real Kafka broker (Apache Kafka 4.1.1):
    /// the same input and the same counter function through both; records/s, latency from
    /// produce to output, CPU and RSS of every process, checkpoint duration, exactly-once on
    /// what a `read_committed` reader sees (needs Java 17 and Maven, and the project venv).
    Statefun(statefun::StatefunArgs),
    /// Checkpoints and restores of large state (1M and 10M keys, 1 % changing per second) to
    /// the local filesystem and moto S3, through the checkpoint pipeline itself: bytes written
    /// against bytes changed, duration, capture pause, restores 1 → 1, 3 → 3 and 3 → 2 with
    /// bytes read and RSS, memory per idle address, TTL expiry; then kill -9 of worker
    /// processes holding 1M keys.
    Scale(scale::ScaleArgs),
    /// One worker's state stores filled in a fresh process; prints its RSS (used by `scale`).
    #[command(hide = true)]
    ScaleMemory {
        #[arg(long)]
        keys: u64,
        #[arg(long)]
        value_bytes: usize,
        #[arg(long)]
        key_groups: u32,
    },
    /// A bare hyper HTTP/1.1 echo server on 127.0.0.1:$PORT (the HTTP floor of `restate`).
    #[command(hide = true)]
    ServeEcho,
    /// The Kafka-record counter both systems run in `statefun` (used by the benchmark itself).
    #[command(hide = true)]
    ServeKafkaCounter,
    /// Spindle's own command line (`spindle worker …`), for the processes the benchmarks start.
    #[command(hide = true)]
    Spindle {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

/// `spindle-bench checkpoint` arguments from an argument list (for benchmarks that run
/// part of it).
pub(crate) fn checkpoint_args(argv: &[String]) -> anyhow::Result<checkpoint::CheckpointArgs> {
    #[derive(Parser)]
    struct Wrap {
        #[command(subcommand)]
        serve: Serve,
    }
    match Wrap::try_parse_from(std::iter::once("spindle-bench".to_string()).chain(argv.iter().cloned()))?.serve {
        Serve::Checkpoint(c) => Ok(c),
        other => anyhow::bail!("not checkpoint arguments: {other:?}"),
    }
}

pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    HumanDuration::parse(s)
        .map(HumanDuration::as_duration)
        .map_err(|e| e.to_string())
}

pub fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Serve::Spindle { args }) = args.serve {
        // Spindle builds its own runtime.
        let code = spindle_worker::cli::main_from(std::iter::once("spindle".into()).chain(args));
        std::process::exit(if code == std::process::ExitCode::SUCCESS { 0 } else { 1 });
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match args.serve {
        Some(Serve::ServeCounter) => rt.block_on(serve_counter()),
        Some(Serve::ServeEcho) => rt.block_on(restate::serve_echo()),
        Some(Serve::Chain(ref c)) => rt.block_on(chain::run(c)),
        Some(Serve::Checkpoint(ref c)) => rt.block_on(checkpoint::run(c)),
        Some(Serve::Connectors(ref c)) => rt.block_on(connectors::run(c)),
        Some(Serve::Restate(ref r)) => rt.block_on(restate::run(r)),
        Some(Serve::Statefun(ref s)) => rt.block_on(statefun::run(s)),
        Some(Serve::Scale(ref s)) => rt.block_on(scale::run(s)),
        Some(Serve::ScaleMemory {
            keys,
            value_bytes,
            key_groups,
        }) => rt.block_on(scale::memory::child(keys, value_bytes, key_groups)),
        Some(Serve::ServeKafkaCounter) => rt.block_on(statefun::serve_kafka_counter()),
        Some(Serve::Spindle { .. }) => unreachable!("handled above"),
        None => rt.block_on(load::run(&args)),
    }
}

async fn serve_counter() -> anyhow::Result<()> {
    let port: u16 = std::env::var("PORT").context("PORT is not set")?.parse()?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let functions = std::sync::Arc::new(spindle_example_greeter::functions());
    spindle_sdk::serve(listener, functions, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
