//! `spindle status`: an application at a glance — workers, generation, last checkpoint and its
//! age, throughput, backlog, dead letters, rollbacks and lag per ingress — from its workers'
//! admin `/status` (a local `spindle run` or `--admin` URLs). Two samples `--sample` apart
//! give the rates (`crate::status` does the sums).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::status::{Summary, WorkerStatus, fetch, local_admins};

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The application file of a local `spindle run` (its admin URLs are in
    /// `.spindle/admin-urls`); default `app.yaml`. Not needed with --admin.
    pub file: Option<PathBuf>,
    /// Workers' admin endpoints (`http://host:9090`), comma-separated or repeated: every
    /// worker of the application for the whole picture.
    #[arg(long, env = "SPINDLE_ADMIN", value_delimiter = ',')]
    pub admin: Vec<String>,
    /// Bearer token for the admin endpoints (`spec.admin.auth`).
    #[arg(long, env = "SPINDLE_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The data directory of the local run (default: .spindle beside the file).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Time between the two samples the rates come from.
    #[arg(long, default_value = "1s", value_parser = super::parse_duration)]
    pub sample: Duration,
    /// Print the workers' `/status` and the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let admins = if args.admin.is_empty() {
        let file = args.file.clone().unwrap_or_else(|| PathBuf::from("app.yaml"));
        let data_dir = args
            .data_dir
            .clone()
            .unwrap_or_else(|| crate::local::base_dir(&file).join(".spindle"));
        local_admins(&data_dir)?
    } else {
        args.admin.clone()
    };
    let token = args.token.as_deref();
    let first = fetch(&admins, token).await?;
    let started = std::time::Instant::now();
    tokio::time::sleep(args.sample).await;
    let second = fetch(&admins, token).await?;
    let parse = |s: &[(String, Value)]| s.iter().map(|(_, v)| WorkerStatus::from_json(v)).collect::<Vec<_>>();
    let summary = Summary::new(&parse(&first), &parse(&second), started.elapsed());
    if args.json {
        let workers: serde_json::Map<String, Value> = second.into_iter().collect();
        let out = serde_json::json!({
            "application": summary.application,
            "workers": summary.workers,
            "generation": summary.generation,
            "lastCheckpoint": summary.checkpoint,
            "lastCheckpointAgeSeconds": summary.checkpoint_age_s,
            "checkpointsFailed": summary.checkpoints_failed,
            "rollbacks": summary.rollbacks,
            "recordsPerSecond": summary.records_per_s,
            "messagesPerSecond": summary.messages_per_s,
            "queued": summary.queued,
            "inFlight": summary.in_flight,
            "backlog": summary.backlog,
            "deadLetters": summary.dead_letters,
            "ingressLag": summary.lag,
            "byWorker": workers,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", summary.report());
    }
    Ok(())
}
