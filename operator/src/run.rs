//! The operator process: the health/metrics server, leader election, and — while this
//! replica leads — the controller. Ends at SIGTERM/Ctrl-C (giving the lease up) or with an
//! error when the lease is lost, so that Kubernetes restarts it as a standby.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::Error;
use crate::cli::Args;
use crate::context::Context;
use crate::controller;
use crate::leader::LeaseLock;
use crate::metrics::Metrics;
use crate::server::{Health, ServerState, serve};
use crate::worker_admin::WorkerAdmin;

pub async fn run(args: Args) -> Result<(), Error> {
    init_tracing(&args.server.log);
    // TLS to the API server goes through rustls with ring; installing it twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::try_default().await.map_err(|e| Error::Config(e.to_string()))?;
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    // `true` once the process is to stop; every task below ends on it.
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("stopping");
        let _ = stop_tx.send(true);
    });
    let addr = args.server.addr;
    let listener = TcpListener::bind(addr).await.map_err(|source| Error::Listen {
        addr: addr.to_string(),
        source,
    })?;
    tracing::info!(addr = %listener.local_addr().map_or(addr, |a| a), "serving /healthz, /readyz, /metrics");
    let state = ServerState {
        health: health.clone(),
        metrics: metrics.clone(),
    };
    let server = tokio::spawn(serve(listener, state, stopped(stop_rx.clone())));

    let identity = args.leader.identity.clone().unwrap_or_else(|| {
        std::env::var("HOSTNAME").unwrap_or_else(|_| format!("spindle-operator-{}", std::process::id()))
    });
    let lock = LeaseLock::new(
        Api::namespaced(client.clone(), &args.leader.lease_namespace),
        &args.leader.lease_name,
        identity.clone(),
        args.leader.lease_duration,
    );
    let workers = WorkerAdmin::new(args.workers.worker_admin_url.clone());
    let ctx = Arc::new(Context::new(
        client,
        metrics.clone(),
        args.workers.operator_config(&args.leader.lease_namespace),
        workers,
        Some(identity),
    ));
    let result = lead(&lock, &args, &health, &metrics, stop_rx, ctx).await;
    if let Err(e) = lock.release().await {
        tracing::warn!(error = %e, "cannot give the lease up");
    }
    let _ = server.await;
    result
}

/// Waits for the lease, then runs the controller while renewing it.
async fn lead(
    lock: &LeaseLock,
    args: &Args,
    health: &Health,
    metrics: &Metrics,
    mut stop: watch::Receiver<bool>,
    ctx: Arc<Context>,
) -> Result<(), Error> {
    let renew = args.leader.renew_every;
    loop {
        match lock.try_acquire(Timestamp::now()).await {
            Ok(true) => break,
            Ok(false) => health.api_reachable.store(true, Ordering::Release),
            Err(e) => {
                health.api_reachable.store(false, Ordering::Release);
                tracing::warn!(error = %e, "cannot read the leader lease");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(renew) => {}
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
    }
    tracing::info!(identity = lock.identity(), "leading: reconciling StatefulApplications");
    health.api_reachable.store(true, Ordering::Release);
    health.leading.store(true, Ordering::Release);
    metrics.leader.set(1);
    // Dropping the sender (or sending true) stops the controller.
    let (controller_tx, controller_rx) = watch::channel(false);
    let namespaces = args.workers.watch_namespaces.clone();
    let controller = tokio::spawn(async move { controller::run(ctx, &namespaces, controller_rx).await });
    let mut renewed = Instant::now();
    let outcome = loop {
        tokio::select! {
            _ = tokio::time::sleep(renew) => {}
            _ = stop.wait_for(|s| *s) => break Ok(()),
        }
        match lock.try_acquire(Timestamp::now()).await {
            Ok(true) => {
                renewed = Instant::now();
                health.api_reachable.store(true, Ordering::Release);
            }
            Ok(false) => break Err(Error::LostLease(args.leader.lease_name.clone())),
            Err(e) => {
                health.api_reachable.store(false, Ordering::Release);
                tracing::warn!(error = %e, "cannot renew the leader lease");
                // Past its duration another replica may hold it: stop reconciling.
                if renewed.elapsed() > args.leader.lease_duration.saturating_sub(Duration::from_secs(1)) {
                    break Err(Error::LostLease(args.leader.lease_name.clone()));
                }
            }
        }
    };
    let _ = controller_tx.send(true);
    let _ = controller.await;
    health.leading.store(false, Ordering::Release);
    metrics.leader.set(0);
    outcome
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

fn init_tracing(log: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(log).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
