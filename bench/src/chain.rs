//! Chains across workers: each closed-loop client sends an `example/hop` message that is
//! forwarded `hops` times between addresses spread over `spread` ids (so over every worker's
//! key groups) before the last hop reports to the egress webhook. All workers run in this
//! process, connected as a cluster over loopback gRPC, exactly as separate processes would be.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use bytes::Bytes;
use http::{Request, header};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use spindle_example_greeter::Hop;
use spindle_sdk::JsonType;
use spindle_worker::metrics::RouteLabels;
use tokio::sync::oneshot;

use crate::app::BenchApp;
use crate::duration;
use crate::harness::{Harness, percentile, start_cluster_with};
use crate::report::load_average;

#[derive(Debug, clap::Args)]
pub struct ChainArgs {
    /// Measured time per configuration (after a warm-up of a fifth of it).
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub duration: Duration,
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    pub workers: Vec<u32>,
    #[arg(long, value_delimiter = ',', default_value = "16,64")]
    pub concurrency: Vec<usize>,
    /// Forwards per chain (a chain is hops + 1 invocations).
    #[arg(long, default_value_t = 10)]
    pub hops: u32,
    /// Distinct addresses the chains visit.
    #[arg(long, default_value_t = 1000)]
    pub spread: u32,
    /// Peer port without and/or with mutual TLS (`false,true` measures both, side by side).
    #[arg(long, value_delimiter = ',', default_value = "false")]
    pub peer_tls: Vec<bool>,
}

pub async fn run(args: &ChainArgs) -> anyhow::Result<()> {
    let harness = Harness::start().await?;
    println!(
        "spindle-bench chain: {} hops per chain over {} addresses, {:?} per configuration, {} cores, load {}",
        args.hops,
        args.spread,
        args.duration,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load_average()
    );
    println!(
        "{:>7} {:>5} {:>5} {:>9} {:>9} {:>11} {:>11} {:>8} {:>10}",
        "workers", "mtls", "conc", "chains/s", "hops/s", "p50 hop ms", "p99 chain ms", "cross %", "bytes/msg"
    );
    let mut result = Ok(());
    'outer: for &workers in &args.workers {
        for &c in &args.concurrency {
            for &mtls in &args.peer_tls {
                if mtls && workers == 1 {
                    continue;
                }
                match measure(args, workers, c, mtls, &harness).await {
                    Ok(line) => println!("{line}"),
                    Err(e) => {
                        result = Err(e);
                        break 'outer;
                    }
                }
            }
        }
    }
    println!("machine load after the run: {}", load_average());
    harness.stop().await;
    result
}

async fn measure(
    args: &ChainArgs,
    workers: u32,
    concurrency: usize,
    mtls: bool,
    harness: &Harness,
) -> anyhow::Result<String> {
    // Without checkpoints: those are measured by `spindle-bench checkpoint`.
    let yaml = BenchApp {
        workers: Some(workers as usize),
        ..BenchApp::new("chain-bench")
    }
    .yaml(harness.function.port, harness.webhook);
    let spec = spindle_spec::from_yaml_str(&yaml, "chain bench")?;
    let cluster = start_cluster_with(&spec, workers, &std::env::temp_dir(), true, mtls).await?;
    let ingresses: Vec<SocketAddr> = cluster
        .iter()
        .map(|w| w.ingress_addr.context("no ingress"))
        .collect::<Result<_, _>>()?;

    let measure_from = Instant::now() + args.duration / 5;
    let stop = measure_from + args.duration;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..concurrency {
        let (client, waiters, ingress) = (client.clone(), harness.waiters.clone(), ingresses[c % ingresses.len()]);
        let (hops, spread) = (args.hops, args.spread);
        clients.spawn(async move {
            let mut latencies = Vec::new();
            for n in 0u64.. {
                let begun = Instant::now();
                if begun >= stop {
                    break;
                }
                let seq = (1 << 62) | ((c as u64) << 32) | n;
                let (tx, rx) = oneshot::channel();
                waiters.lock().unwrap().insert(seq, tx);
                let hop = Hop {
                    seq,
                    remaining: hops,
                    spread,
                };
                let req = Request::post(format!("http://{ingress}/example/hop/h{}", seq % u64::from(spread)))
                    .header(header::CONTENT_TYPE, format!("application/vnd.{}", Hop::TYPENAME))
                    .body(Full::new(Bytes::from(serde_json::to_vec(&hop)?)))?;
                let resp = client.request(req).await?;
                ensure!(resp.status() == 202, "ingress answered {}", resp.status());
                let done = tokio::time::timeout(Duration::from_secs(30), rx)
                    .await
                    .context("a chain did not finish within 30 s")??;
                if begun >= measure_from {
                    latencies.push(done - begun);
                }
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::new();
    while let Some(r) = clients.join_next().await {
        latencies.extend(r??);
    }
    latencies.sort();
    let (mut local, mut remote, mut bytes, mut envelopes) = (0, 0, 0, 0);
    for w in &cluster {
        w.wait_idle(Duration::from_secs(30)).await?;
        ensure!(
            w.dead_letters.recent().is_empty(),
            "dead letters: {:?}",
            w.dead_letters.recent()
        );
        local += w
            .metrics
            .messages_routed
            .get_or_create(&RouteLabels { route: "local" })
            .get();
        remote += w
            .metrics
            .messages_routed
            .get_or_create(&RouteLabels { route: "remote" })
            .get();
        bytes += w.metrics.peer_bytes_sent.get();
        envelopes += w.metrics.peer_envelopes_sent.get();
    }
    for w in cluster {
        w.shutdown().await;
    }
    let secs = args.duration.as_secs_f64();
    let chains = latencies.len() as f64 / secs;
    let pct = |p: f64| percentile(&latencies, p);
    let per_hop = pct(0.5).as_secs_f64() * 1e3 / f64::from(args.hops + 1);
    Ok(format!(
        "{:>7} {:>5} {:>5} {:>9.0} {:>9.0} {:>11.3} {:>11.2} {:>8.1} {:>10}",
        workers,
        if mtls { "on" } else { "off" },
        concurrency,
        chains,
        chains * f64::from(args.hops + 1),
        per_hop,
        pct(0.99).as_secs_f64() * 1e3,
        100.0 * remote as f64 / (local + remote).max(1) as f64,
        if envelopes == 0 {
            "-".to_string()
        } else {
            format!("{:.1}", bytes as f64 / envelopes as f64)
        }
    ))
}
