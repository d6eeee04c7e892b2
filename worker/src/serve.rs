//! `spindle worker`: one worker process serving an application until SIGTERM — a Kubernetes
//! pod, or one of the children `spindle run --workers N` starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::app::AppConfig;
use crate::peer::Cluster;
use crate::tls::WorkerIdentity;
use crate::tls::peer::PeerTls;
use crate::worker::{Listeners, Worker, WorkerOptions};

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub app_file: PathBuf,
    pub cluster: Cluster,
    /// Default: all interfaces, the spec's ingress port.
    pub ingress_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    pub data_dir: Option<PathBuf>,
    /// Function entries (by index in `spec.functions`) served by local processes on these ports.
    pub function_ports: Vec<(usize, u16)>,
    pub echo_egress: bool,
    /// How long a clean stop (SIGTERM) may take: input stops, a final checkpoint, exit.
    pub stop_timeout: std::time::Duration,
    /// `ca.crt`, `tls.crt`, `tls.key` for mutual TLS on the peer port (docs/security.md).
    pub tls_dir: Option<PathBuf>,
    /// The Kubernetes namespace (`POD_NAMESPACE`): part of the worker identity and of the
    /// checkpoint storage root.
    pub namespace: Option<String>,
    /// The `StatefulApplication`'s UID, recorded in checkpoints.
    pub application_uid: Option<String>,
}

pub async fn serve(o: ServeOptions) -> anyhow::Result<()> {
    let spec = spindle_spec::load_file(&o.app_file)?;
    let base_dir = crate::local::base_dir(&o.app_file);
    let mut app = AppConfig::resolve(&spec, &base_dir);
    app.namespace = o.namespace.clone();
    app.uid = o.application_uid.clone();
    for &(id, port) in &o.function_ports {
        anyhow::ensure!(
            id < app.functions.len(),
            "--function-port {id}=…: there is no spec.functions[{id}]"
        );
        app.use_local_port(id, port);
    }
    let ingress = match &app.http_ingress {
        Some(h) => {
            let addr = o
                .ingress_addr
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], h.port)));
            Some(bind(addr, "the HTTP ingress").await?)
        }
        None => None,
    };
    let admin = bind(o.admin_addr, "the admin endpoints").await?;
    let peer = if o.cluster.workers() > 1 {
        Some(bind(o.peer_addr, "the peer endpoint").await?)
    } else {
        None
    };
    let peer_tls = match (&o.tls_dir, o.cluster.workers() > 1) {
        (Some(dir), true) => {
            let me = WorkerIdentity::new(o.namespace.as_deref(), &spec.metadata.name, o.cluster.index);
            Some(Arc::new(
                PeerTls::from_dir(dir, me).context("the peer port's TLS files (--tls-dir)")?,
            ))
        }
        (Some(_), false) => {
            tracing::info!("one worker: no peer port, --tls-dir unused");
            None
        }
        (None, _) => None,
    };
    let (tracer, flush) = crate::trace::Tracer::from_env(
        &spec.metadata.name,
        &[
            ("spindle.application", spec.metadata.name.clone()),
            ("service.instance.id", format!("worker-{}", o.cluster.index)),
        ],
    )?;
    let options = WorkerOptions {
        data_dir: Some(o.data_dir.clone().unwrap_or_else(|| base_dir.join(".spindle"))),
        echo_egress: o.echo_egress,
        cluster: o.cluster.clone(),
        peer_tls,
        tracer,
    };
    let worker = Worker::start(app, options, Listeners { ingress, admin, peer }).await?;
    let result = serve_until_stopped(&o, &spec.metadata.name, worker).await;
    if let Some(flush) = flush {
        flush.flush(std::time::Duration::from_secs(5)).await;
    }
    result
}

async fn serve_until_stopped(o: &ServeOptions, name: &str, worker: Worker) -> anyhow::Result<()> {
    tracing::info!(
        worker = o.cluster.index,
        workers = o.cluster.workers(),
        app = %name,
        file = %Path::new(&o.app_file).display(),
        "serving until SIGTERM"
    );
    tokio::select! {
        _ = crate::stop::os_signal() => {}
        why = worker.failed() => {
            // Exit non-zero: the StatefulSet (or `spindle run`) restarts the process, and the
            // application rolls back and resumes without the task that died.
            worker.shutdown().await;
            anyhow::bail!("a task of this worker failed: {why}");
        }
    }
    tracing::info!(timeout = ?o.stop_timeout, "stopping (a second signal stops at once)");
    crate::stop::unless_signalled_again(worker.stop(o.stop_timeout)).await;
    Ok(())
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for {what}"))
}
