//! What both workloads run against: the example functions (Rust SDK) in their own process,
//! and a webhook that receives the `example/totals` egress and wakes the client waiting for
//! each sequence number.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spindle_example_greeter::Total;
use spindle_spec::{HumanDuration, LocalProcess, StatefulApplication};
use spindle_worker::local::FunctionProcess;
use spindle_worker::peer::Cluster;
use spindle_worker::{AppConfig, Listeners, Worker, WorkerOptions};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Completion signals, by message sequence number, fed by the egress webhook.
pub(crate) type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Instant>>>>;

pub(crate) struct Harness {
    pub function: FunctionProcess,
    pub webhook: SocketAddr,
    pub waiters: Waiters,
}

impl Harness {
    pub async fn start() -> anyhow::Result<Harness> {
        let function = start_functions().await?;
        let waiters: Waiters = Arc::default();
        let webhook = start_webhook(waiters.clone()).await?;
        Ok(Harness {
            function,
            webhook,
            waiters,
        })
    }

    pub async fn stop(self) {
        self.function.stop().await;
    }
}

/// The `p` quantile of sorted latencies (zero when there are none).
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// The example functions (Rust SDK) as their own process: this binary, `serve-counter`.
async fn start_functions() -> anyhow::Result<FunctionProcess> {
    let exe = std::env::current_exe()?;
    let local = LocalProcess {
        command: vec![exe.display().to_string(), "serve-counter".into()],
        env: Default::default(),
        working_dir: None,
        startup_timeout: HumanDuration::from_secs(30),
    };
    FunctionProcess::start("example/*", &local, &std::env::temp_dir()).await
}

/// A loopback address free a moment ago, for a child process to bind (it cannot be handed
/// a listener).
pub(crate) fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// `workers` workers of `spec` in this process, connected as a cluster over loopback gRPC
/// exactly as separate processes would be; each with an HTTP ingress if `ingress`.
pub(crate) async fn start_cluster(
    spec: &StatefulApplication,
    workers: u32,
    dir: &Path,
    ingress: bool,
) -> anyhow::Result<Vec<Worker>> {
    start_cluster_with(spec, workers, dir, ingress, false).await
}

/// As [`start_cluster`]; with `mtls`, the peer port runs mutual TLS with certificates of an
/// ephemeral CA (as `spindle run` does).
pub(crate) async fn start_cluster_with(
    spec: &StatefulApplication,
    workers: u32,
    dir: &Path,
    ingress: bool,
    mtls: bool,
) -> anyhow::Result<Vec<Worker>> {
    let ca = if mtls {
        Some(spindle_worker::tls::local::LocalCa::new("bench CA")?)
    } else {
        None
    };
    let mut peers = Vec::new();
    for _ in 0..workers {
        peers.push(TcpListener::bind("127.0.0.1:0").await?);
    }
    let addrs: Vec<String> = peers
        .iter()
        .map(|l| l.local_addr().map(|a| a.to_string()))
        .collect::<Result<_, _>>()?;
    let mut cluster = Vec::new();
    for (i, peer) in peers.into_iter().enumerate() {
        let listeners = Listeners {
            ingress: if ingress {
                Some(TcpListener::bind("127.0.0.1:0").await?)
            } else {
                None
            },
            admin: TcpListener::bind("127.0.0.1:0").await?,
            peer: Some(peer),
        };
        let peer_tls = match &ca {
            Some(ca) if workers > 1 => {
                let id = spindle_worker::tls::WorkerIdentity::new(None, &spec.metadata.name, i as u32);
                let tls_dir = dir.join(format!("bench-tls-{}-{i}", std::process::id()));
                ca.write_worker_dir(&id, &tls_dir)?;
                let tls = spindle_worker::tls::peer::PeerTls::from_dir(&tls_dir, id)?;
                let _ = std::fs::remove_dir_all(&tls_dir);
                Some(std::sync::Arc::new(tls))
            }
            _ => None,
        };
        let options = WorkerOptions {
            cluster: Cluster {
                index: i as u32,
                peers: if workers > 1 { addrs.clone() } else { Vec::new() },
            },
            peer_tls,
            ..WorkerOptions::default()
        };
        cluster.push(Worker::start(AppConfig::resolve(spec, dir), options, listeners).await?);
    }
    Ok(cluster)
}

/// How to start a Spindle process: `explicit` (a `spindle` binary), or this binary's
/// `spindle` subcommand, which is Spindle's own command line compiled in (same build profile).
pub(crate) fn spindle_command(explicit: Option<&PathBuf>) -> anyhow::Result<std::process::Command> {
    Ok(match explicit {
        Some(p) => {
            anyhow::ensure!(p.is_file(), "the worker binary {} does not exist", p.display());
            std::process::Command::new(p)
        }
        None => {
            let mut c = std::process::Command::new(std::env::current_exe()?);
            c.arg("spindle");
            c
        }
    })
}

/// Receives the counter's egress records and wakes the client waiting for each.
async fn start_webhook(waiters: Waiters) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let waiters = waiters.clone();
        async move {
            let now = Instant::now();
            match serde_json::from_slice::<Total>(&body) {
                Ok(t) => {
                    if let Some(tx) = waiters.lock().unwrap().remove(&t.seq) {
                        let _ = tx.send(now);
                    }
                    http::StatusCode::OK
                }
                Err(_) => http::StatusCode::BAD_REQUEST,
            }
        }
    });
    // Lives as long as the benchmark process.
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}
