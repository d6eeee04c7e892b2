//! `spindle dead-letters list|replay|drop`: the dead letters an application keeps, read from
//! its workers' admin endpoints (or, for `list`, from its newest checkpoint in storage), and
//! replayed or dropped there. A replay delivers a dead letter's messages again exactly once:
//! the worker takes it out of its dead letters in the step that queues them.

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::app::AppIdentity;
use crate::checkpoint::restore;
use crate::checkpoint::store::CheckpointStore;

#[derive(Debug, clap::Subcommand)]
pub enum DeadLettersCommand {
    /// Prints every dead letter as a JSON line: id, time, kind, reason and what it holds.
    List {
        #[command(flatten)]
        at: Where,
    },
    /// Delivers a dead letter's messages (or egress records) again, exactly once.
    Replay {
        /// The dead letter's id (from `list`).
        id: String,
        #[command(flatten)]
        at: Where,
    },
    /// Drops a dead letter for good.
    Drop {
        id: String,
        #[command(flatten)]
        at: Where,
    },
}

/// Where the dead letters are.
#[derive(Debug, clap::Args)]
pub struct Where {
    /// A worker's admin endpoint (`http://host:9090`); repeat it for every worker of the
    /// application (each keeps its own).
    #[arg(long, env = "SPINDLE_ADMIN", value_delimiter = ',')]
    pub admin: Vec<String>,
    /// Read from the newest intact checkpoint in this storage instead (`list` only; S3
    /// settings from the `AWS_*` variables).
    #[arg(long, env = "SPINDLE_CHECKPOINT_STORAGE")]
    pub storage: Option<String>,
    /// The application's name, with `--storage`.
    #[arg(long, env = "SPINDLE_APPLICATION")]
    pub application: Option<String>,
    /// Its Kubernetes namespace, with `--storage` (checkpoints of a cluster live under it).
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
}

pub async fn run(cmd: DeadLettersCommand) -> anyhow::Result<()> {
    match cmd {
        DeadLettersCommand::List { at } => {
            if let Some(storage) = &at.storage {
                let app = at.application.as_deref().context("--storage needs --application")?;
                let identity = AppIdentity {
                    namespace: at.namespace.clone(),
                    name: app.to_string(),
                    uid: None,
                };
                for letter in from_storage(storage, &identity).await? {
                    println!("{letter}");
                }
                return Ok(());
            }
            for admin in admins(&at)? {
                let (status, body) = call(Method::GET, &format!("{admin}/dead-letters")).await?;
                if status != StatusCode::OK {
                    bail!("{admin}: {status}: {}", String::from_utf8_lossy(&body).trim());
                }
                let letters: Vec<serde_json::Value> =
                    serde_json::from_slice(&body).with_context(|| format!("{admin}: not a list of dead letters"))?;
                for letter in letters {
                    println!("{letter}");
                }
            }
            Ok(())
        }
        DeadLettersCommand::Replay { id, at } => settle(&id, &at, Method::POST, "/replay").await,
        DeadLettersCommand::Drop { id, at } => settle(&id, &at, Method::DELETE, "").await,
    }
}

fn admins(at: &Where) -> anyhow::Result<Vec<String>> {
    if at.admin.is_empty() {
        bail!("give --admin http://host:port (every worker's admin endpoint; `spindle run` prints them)");
    }
    Ok(at.admin.iter().map(|a| a.trim_end_matches('/').to_string()).collect())
}

/// Asks every worker until the one that keeps `id` answers.
async fn settle(id: &str, at: &Where, method: Method, suffix: &str) -> anyhow::Result<()> {
    for admin in admins(at)? {
        let (status, body) = call(method.clone(), &format!("{admin}/dead-letters/{id}{suffix}")).await?;
        let text = String::from_utf8_lossy(&body).trim().to_string();
        match status {
            StatusCode::OK => {
                println!("{id}: {text} ({admin})");
                return Ok(());
            }
            StatusCode::NOT_FOUND => continue,
            _ => bail!("{admin}: {status}: {text}"),
        }
    }
    bail!("no worker keeps dead letter `{id}` (asked {})", at.admin.join(", "))
}

async fn call(method: Method, url: &str) -> anyhow::Result<(StatusCode, Bytes)> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let req = Request::builder()
        .method(method)
        .uri(url)
        .body(Empty::new())
        .with_context(|| format!("`{url}` is not a URL"))?;
    let resp = client
        .request(req)
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// Every dead letter of the newest intact checkpoint.
async fn from_storage(storage: &str, application: &AppIdentity) -> anyhow::Result<Vec<serde_json::Value>> {
    let store = CheckpointStore::open(storage, &std::env::current_dir()?, &application.storage_root())?;
    let Some(latest) = store.latest_valid(&Default::default()).await? else {
        bail!("{}: no complete checkpoint", store.describe());
    };
    // Every part's dead letters, without reading the state.
    let capture = restore::load_rest(&store, &latest.manifest, application)
        .await
        .with_context(|| format!("checkpoint {}", latest.manifest.checkpoint))?;
    eprintln!(
        "{}: checkpoint {} ({} dead letters)",
        store.describe(),
        latest.manifest.checkpoint,
        capture.dead_letters.len()
    );
    Ok(capture.dead_letters.iter().map(|l| l.to_json()).collect())
}
