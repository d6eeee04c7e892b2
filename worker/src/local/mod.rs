//! Local mode: runs an application on this machine without Kubernetes — the function
//! processes from the spec's `local.command`, one worker, and optionally sample input.

mod cluster;
mod input;
pub mod orphans;
mod process;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;

pub use input::{InputRecord, parse_input, send_input};
pub use process::FunctionProcess;

use crate::app::AppConfig;
use crate::worker::{Listeners, Worker, WorkerOptions};

#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub app_file: PathBuf,
    /// Overrides the HTTP ingress address (default: 127.0.0.1 and the spec's port).
    pub ingress_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    /// Default: `.spindle/` beside the application file.
    pub data_dir: Option<PathBuf>,
    /// JSON-lines file of records to send through the HTTP ingress once everything is up.
    pub input: Option<PathBuf>,
    /// Stop once every message has been processed and every egress record written.
    pub exit_when_idle: bool,
    pub idle_timeout: Duration,
    /// Worker processes to run (default: `spec.workers`); with one, it runs in this process.
    pub workers: Option<u32>,
    /// How long a clean stop may take (input stops, a final checkpoint, exit).
    pub stop_timeout: Duration,
    /// Show the status as a live line on stderr while serving (a terminal, no `--quiet`).
    pub live_status: bool,
}

/// The directory an application file's relative paths are resolved against.
pub(crate) fn base_dir(app_file: &Path) -> PathBuf {
    match app_file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

pub async fn run(opts: LocalOptions) -> anyhow::Result<()> {
    let spec = spindle_spec::load_file(&opts.app_file)?;
    let base_dir = base_dir(&opts.app_file);
    let mut app = AppConfig::resolve(&spec, &base_dir);
    let workers = opts.workers.unwrap_or(spec.spec.workers);
    anyhow::ensure!(
        (1..=spec.spec.key_groups).contains(&workers),
        "--workers {workers}: must be between 1 and the {} key groups",
        spec.spec.key_groups
    );

    // Functions first: the worker is ready only when what it invokes is up.
    let mut processes = Vec::new();
    let mut function_ports = Vec::new();
    for (id, f) in spec.spec.functions.iter().enumerate() {
        if let Some(local) = &f.local {
            let p = FunctionProcess::start(&f.typename, local, &base_dir).await?;
            app.use_local_port(id, p.port);
            function_ports.push((id, p.port));
            processes.push(p);
        }
    }
    if workers > 1 {
        let port = app.http_ingress.as_ref().map_or(0, |h| h.port);
        let result = cluster::run(&opts, workers, &function_ports, &base_dir, port).await;
        for p in processes {
            p.stop().await;
        }
        return result;
    }

    let ingress = match &app.http_ingress {
        Some(h) => {
            let addr = opts
                .ingress_addr
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], h.port)));
            Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr} for the HTTP ingress (use --ingress-addr)"))?,
            )
        }
        None => None,
    };
    let admin = TcpListener::bind(opts.admin_addr)
        .await
        .with_context(|| format!("cannot listen on {} for the admin endpoints", opts.admin_addr))?;
    let (tracer, flush) = crate::trace::Tracer::from_env(
        &spec.metadata.name,
        &[("spindle.application", spec.metadata.name.clone())],
    )?;
    let options = WorkerOptions {
        data_dir: Some(opts.data_dir.clone().unwrap_or_else(|| base_dir.join(".spindle"))),
        echo_egress: true,
        tracer,
        ..WorkerOptions::default()
    };
    let worker = Worker::start(
        app,
        options,
        Listeners {
            ingress,
            admin,
            peer: None,
        },
    )
    .await?;
    eprintln!(
        "spindle: application `{}` running — ingress http://{}  admin http://{}",
        spec.metadata.name,
        worker.ingress_addr.map_or("-".to_string(), |a| a.to_string()),
        worker.admin_addr
    );
    let data_dir = opts.data_dir.clone().unwrap_or_else(|| base_dir.join(".spindle"));
    let admins = vec![format!("http://{}", worker.admin_addr)];
    if let Err(e) = crate::status::write_local_admins(&data_dir, &admins) {
        tracing::warn!(error = %e, "cannot write the admin URLs for `spindle status`");
    }

    let result = drive(&opts, &worker).await;
    crate::stop::unless_signalled_again(worker.stop(opts.stop_timeout)).await;
    if let Some(flush) = flush {
        flush.flush(std::time::Duration::from_secs(5)).await;
    }
    for p in processes {
        p.stop().await;
    }
    result
}

async fn drive(opts: &LocalOptions, worker: &Worker) -> anyhow::Result<()> {
    if let Some(input) = &opts.input {
        let text =
            std::fs::read_to_string(input).with_context(|| format!("cannot read input file {}", input.display()))?;
        let records = parse_input(&text).with_context(|| format!("in {}", input.display()))?;
        let ingress = worker
            .ingress_addr
            .context("--input needs an HTTP ingress in the application")?;
        let n = send_input(ingress, &records).await?;
        eprintln!("spindle: sent {n} records from {}", input.display());
    }
    if opts.exit_when_idle {
        tokio::select! {
            idle = worker.wait_idle(opts.idle_timeout) => idle?,
            why = worker.failed() => anyhow::bail!("a task of the worker failed: {why}"),
        }
        let m = &worker.metrics;
        let dead = worker.dead_letters.recent().len();
        eprintln!(
            "spindle: idle — {} records accepted, {} dead letters; stopping",
            m.ingress_accepted.get(),
            dead
        );
        return Ok(());
    }
    eprintln!("spindle: press Ctrl-C to stop");
    let admins = vec![format!("http://{}", worker.admin_addr)];
    tokio::select! {
        _ = crate::stop::os_signal() => {}
        why = worker.failed() => anyhow::bail!("a task of the worker failed: {why}"),
        _ = live_status(&admins), if opts.live_status => {}
    }
    if opts.live_status {
        eprintln!();
    }
    eprintln!("spindle: stopping");
    Ok(())
}

/// The status line, redrawn every second on stderr (a terminal) until cancelled.
pub(crate) async fn live_status(admins: &[String]) {
    use crate::status::{Summary, WorkerStatus, fetch};
    use std::io::Write as _;
    let parse =
        |s: Vec<(String, serde_json::Value)>| s.iter().map(|(_, v)| WorkerStatus::from_json(v)).collect::<Vec<_>>();
    let mut before: Option<(Vec<WorkerStatus>, std::time::Instant)> = None;
    loop {
        if let Ok(now) = fetch(admins, None).await {
            let now = parse(now);
            let at = std::time::Instant::now();
            if let Some((prev, then)) = &before {
                let line = Summary::new(prev, &now, at - *then).line();
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[K{line}");
                let _ = err.flush();
            }
            before = Some((now, at));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
