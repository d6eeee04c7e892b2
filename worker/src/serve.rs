//! `spindle worker`: one worker process serving an application until SIGTERM — a Kubernetes
//! pod, or one of the children `spindle run --workers N` starts.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::app::AppConfig;
use crate::peer::Cluster;
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
}

pub async fn serve(o: ServeOptions) -> anyhow::Result<()> {
    let spec = spindle_spec::load_file(&o.app_file)?;
    let base_dir = crate::local::base_dir(&o.app_file);
    let mut app = AppConfig::resolve(&spec, &base_dir);
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
    let options = WorkerOptions {
        data_dir: Some(o.data_dir.clone().unwrap_or_else(|| base_dir.join(".spindle"))),
        echo_egress: o.echo_egress,
        cluster: o.cluster.clone(),
    };
    let worker = Worker::start(app, options, Listeners { ingress, admin, peer }).await?;
    tracing::info!(
        worker = o.cluster.index,
        workers = o.cluster.workers(),
        app = %spec.metadata.name,
        file = %Path::new(&o.app_file).display(),
        "serving until SIGTERM"
    );
    crate::stop::os_signal().await;
    tracing::info!(timeout = ?o.stop_timeout, "stopping (a second signal stops at once)");
    crate::stop::unless_signalled_again(worker.stop(o.stop_timeout)).await;
    Ok(())
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} for {what}"))
}
