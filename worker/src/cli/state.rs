//! `spindle state get|list|export`: function state from a terminal — from a running
//! application (every worker's admin endpoint; each owns some key groups) or offline from a
//! checkpoint or savepoint in storage. Each value comes with its typename, decoded for JSON
//! and StateFun primitive types, otherwise as base64.

use anyhow::{Context as _, bail};
use spindle_spec::TypeName;

use super::http::get_json;
use super::offline::{self, Storage};
use crate::clock::now_ms;
use crate::state::query::{StateQuery, address_json, select};

#[derive(Debug, clap::Subcommand)]
pub enum StateCommand {
    /// Prints one address's state as JSON: `{"name": {"typename", "value"|"valueBase64"}}`.
    Get {
        /// `namespace/type/id`.
        address: String,
        #[command(flatten)]
        at: From,
    },
    /// Prints the addresses of a function type as JSON lines, ordered by id.
    List {
        /// `namespace/type`.
        typename: String,
        /// Only ids starting with this.
        #[arg(long)]
        prefix: Option<String>,
        /// At most this many.
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        at: From,
    },
    /// Prints every address's state as JSON lines (`{"typename", "id", "state"}`).
    Export {
        /// Only this function type (`namespace/type`).
        #[arg(long = "type")]
        typename: Option<String>,
        #[command(flatten)]
        at: From,
    },
}

/// A running application, or a checkpoint in storage.
#[derive(Debug, clap::Args)]
pub struct From {
    /// Every worker's admin endpoint (`http://host:9090`), comma-separated or repeated.
    #[arg(long, env = "SPINDLE_ADMIN", value_delimiter = ',')]
    pub admin: Vec<String>,
    /// A bearer token of `spec.admin.auth`.
    #[arg(long, env = "SPINDLE_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(flatten)]
    pub storage: Storage,
    /// With --storage: the checkpoint number or savepoint name (default: the newest intact
    /// checkpoint).
    #[arg(long)]
    pub checkpoint: Option<String>,
}

fn typename(s: &str, what: &str) -> anyhow::Result<TypeName> {
    TypeName::parse(s).map_err(|e| anyhow::anyhow!("{what} `{s}`: {e}"))
}

pub async fn run(cmd: StateCommand) -> anyhow::Result<()> {
    let (query, at, one) = match cmd {
        StateCommand::Get { address, at } => {
            let (t, id) = address
                .rsplit_once('/')
                .filter(|(t, id)| t.contains('/') && !id.is_empty())
                .with_context(|| format!("address `{address}`: expected namespace/type/id"))?;
            let query = StateQuery {
                typename: Some(typename(t, "address")?),
                prefix: Some(id.to_string()),
                limit: None,
            };
            (query, at, Some(id.to_string()))
        }
        StateCommand::List {
            typename: t,
            prefix,
            limit,
            at,
        } => (
            StateQuery {
                typename: Some(typename(&t, "type")?),
                prefix,
                limit,
            },
            at,
            None,
        ),
        StateCommand::Export { typename: t, at } => (
            StateQuery {
                typename: t.as_deref().map(|t| typename(t, "--type")).transpose()?,
                prefix: None,
                limit: None,
            },
            at,
            None,
        ),
    };
    let mut lines = fetch(&query, &at).await?;
    if let Some(id) = one {
        let found = lines.into_iter().find(|l| l["id"] == id.as_str());
        let Some(found) = found else {
            bail!("no state at {}/{id}", query.typename.as_ref().expect("set"));
        };
        println!("{}", serde_json::to_string_pretty(&found["state"]).expect("JSON"));
        return Ok(());
    }
    // Several workers' lists: one order, one limit.
    lines.sort_by(|a, b| (a["typename"].as_str(), a["id"].as_str()).cmp(&(b["typename"].as_str(), b["id"].as_str())));
    if let Some(limit) = query.limit {
        lines.truncate(limit);
    }
    use std::io::Write as _;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for l in &lines {
        writeln!(out, "{l}")?;
    }
    out.flush()?;
    Ok(())
}

/// The selected addresses as export lines, from the workers or from storage.
async fn fetch(q: &StateQuery, at: &From) -> anyhow::Result<Vec<serde_json::Value>> {
    if at.storage.storage.is_some() {
        let (store, app) = at.storage.open()?;
        let m = offline::manifest(&store, at.checkpoint.as_deref()).await?;
        let capture = offline::load(&store, &m, &app).await?;
        eprintln!("{}: checkpoint {}", store.describe(), m.checkpoint);
        return Ok(select(&capture.state, q, now_ms()).iter().map(address_json).collect());
    }
    if at.admin.is_empty() {
        bail!("give --admin http://host:port (every worker's) or --storage with --application");
    }
    let mut params = Vec::new();
    if let Some(t) = &q.typename {
        params.push(format!("type={t}"));
    }
    if let Some(p) = &q.prefix {
        params.push(format!("prefix={}", encode(p)));
    }
    if let Some(l) = q.limit {
        params.push(format!("limit={l}"));
    }
    let mut out = Vec::new();
    for admin in &at.admin {
        let url = format!("{}/state?{}", admin.trim_end_matches('/'), params.join("&"));
        match get_json(&url, at.token.as_deref()).await? {
            serde_json::Value::Array(items) => out.extend(items),
            _ => bail!("{url}: not a list"),
        }
    }
    Ok(out)
}

/// Percent-encodes a query value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
