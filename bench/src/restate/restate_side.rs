//! Restate's side: `restate-server` and the TypeScript-SDK objects of `bench/restate`, both
//! from npm (installed once into the tools directory), on loopback ports, with telemetry and
//! the web UI off and the data directory under this run's scratch directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::process::{Child, Command};

use super::{Side, SideKind};
use crate::checkpoint::traffic::get;
use crate::harness::free_addr;

const PACKAGE_JSON: &str = include_str!("../../restate/package.json");
const SERVICES: &str = include_str!("../../restate/services.cjs");
pub const RESTATE_VERSION: &str = "1.7.12";

/// How `restate-server` is configured for a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RestateConfig {
    /// Restate's defaults (24 partitions, 2 GiB for RocksDB, 1 GiB for the query engine).
    Default,
    /// For a small single node as Restate's documentation advises: fewer partitions (one per
    /// core here) and the memory pools of its minimal configuration (`TUNED_*`).
    Tuned,
}

/// The tuned settings (top-level keys, then tables); durability (the log's fsync) stays
/// Restate's default.
const TUNED_TOP: &str = r#"default-num-partitions = 2
rocksdb-total-memory-size = "1 GiB"
"#;
const TUNED_TABLES: &str = r#"
[admin.query-engine]
memory-size = "256 MiB"

[bifrost]
record-cache-memory-size = "128 MiB"
"#;

impl RestateConfig {
    pub fn label(self) -> String {
        match self {
            RestateConfig::Default => format!("Restate {RESTATE_VERSION}"),
            RestateConfig::Tuned => format!("Restate {RESTATE_VERSION} (tuned: 2 partitions, small memory pools)"),
        }
    }

    /// The settings this configuration adds to the common ones, for the report.
    pub fn settings(self) -> String {
        match self {
            RestateConfig::Default => String::new(),
            RestateConfig::Tuned => format!("{TUNED_TOP}{TUNED_TABLES}"),
        }
    }

    fn dir(self) -> &'static str {
        match self {
            RestateConfig::Default => "restate",
            RestateConfig::Tuned => "restate-tuned",
        }
    }
}

pub(crate) struct RestateProcesses {
    pub config: RestateConfig,
    pub ingress: SocketAddr,
    pub admin: SocketAddr,
    server: Child,
    services: Child,
}

/// `npm install`s the pinned server and SDK into `tools` unless they are there; returns the
/// server binary.
fn install(tools: &Path) -> anyhow::Result<PathBuf> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "x64",
        "aarch64" => "arm64",
        other => bail!("no restate-server build for {other}"),
    };
    let server = tools.join(format!(
        "node_modules/@restatedev/restate-server-linux-{arch}/bin/restate-server"
    ));
    let sdk = tools.join("node_modules/@restatedev/restate-sdk/package.json");
    let manifest = tools.join("package.json");
    let current = std::fs::read_to_string(&manifest).is_ok_and(|m| m == PACKAGE_JSON);
    std::fs::write(tools.join("services.cjs"), SERVICES)?;
    if current && server.is_file() && sdk.is_file() {
        return Ok(server);
    }
    std::fs::write(&manifest, PACKAGE_JSON)?;
    println!(
        "installing restate-server {RESTATE_VERSION} and the Restate TypeScript SDK with npm into {} …",
        tools.display()
    );
    let status = std::process::Command::new("npm")
        .args([
            "install",
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            "--no-package-lock",
        ])
        .current_dir(tools)
        .status()
        .context("running npm (Node.js and npm are needed for Restate's side; --no-restate skips it)")?;
    ensure!(status.success(), "npm install failed ({status}) in {}", tools.display());
    ensure!(server.is_file(), "npm installed no {}", server.display());
    Ok(server)
}

impl RestateProcesses {
    pub async fn start(
        tools: &Path,
        scratch: &Path,
        webhook: SocketAddr,
        config_kind: RestateConfig,
    ) -> anyhow::Result<RestateProcesses> {
        let server_bin = install(tools)?;
        let version = std::process::Command::new(&server_bin).arg("--version").output()?;
        let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
        ensure!(
            version.contains(RESTATE_VERSION),
            "expected restate-server {RESTATE_VERSION}, found `{version}`"
        );
        let dir = scratch.join(config_kind.dir());
        std::fs::create_dir_all(&dir)?;
        let (ingress, admin, fabric, services_addr) = (free_addr()?, free_addr()?, free_addr()?, free_addr()?);
        // Loopback only, no telemetry, no web UI, data in the scratch directory. Everything
        // else is Restate's default (including fsync of its log) or, tuned, `TUNED_*`.
        let mut config = format!(
            r#"listen-mode = "tcp"
disable-telemetry = true
base-dir = "{base}"
bind-address = "{fabric}"
advertised-address = "http://{fabric}/"
log-filter = "warn"

[admin]
bind-address = "{admin}"
advertised-address = "http://{admin}/"
disable-web-ui = true

[ingress]
bind-address = "{ingress}"
advertised-ingress-endpoint = "http://{ingress}/"
"#,
            base = dir.join("data").display()
        );
        // Top-level keys must come before the first table.
        if config_kind == RestateConfig::Tuned {
            config = format!("{TUNED_TOP}{config}{TUNED_TABLES}");
        }
        let config_path = dir.join("restate.toml");
        std::fs::write(&config_path, config)?;
        let server = Command::new(&server_bin)
            .args(["--no-logo", "--config-file"])
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("server.log"))?)
            .stderr(std::fs::File::create(dir.join("server.err.log"))?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", server_bin.display()))?;
        let services = Command::new("node")
            .arg("services.cjs")
            .arg(services_addr.port().to_string())
            .arg(format!("http://{webhook}/"))
            .current_dir(tools)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("services.log"))?)
            .stderr(std::fs::File::create(dir.join("services.err.log"))?)
            .kill_on_drop(true)
            .spawn()
            .context("starting node (Restate's services)")?;
        let mut p = RestateProcesses {
            config: config_kind,
            ingress,
            admin,
            server,
            services,
        };
        p.wait_up(&dir, services_addr).await?;
        register(admin, services_addr).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !matches!(get(ingress, "/restate/health").await, Some((200, _))) {
            ensure!(
                Instant::now() < deadline,
                "Restate's ingress is not healthy after 60 s; logs in {}",
                dir.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "started: {} — restate-server pid {} (ingress {ingress}, admin {admin}, data in {}), TypeScript SDK services in node pid {} on {services_addr}",
            config_kind.label(),
            p.server.id().unwrap_or(0),
            dir.join("data").display(),
            p.services.id().unwrap_or(0)
        );
        Ok(p)
    }

    async fn wait_up(&mut self, dir: &Path, services: SocketAddr) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let admin_up = matches!(get(self.admin, "/health").await, Some((200, _)));
            let services_up = tokio::net::TcpStream::connect(services).await.is_ok();
            if admin_up && services_up {
                return Ok(());
            }
            if let Some(status) = self.server.try_wait()? {
                bail!("restate-server exited ({status}); logs in {}", dir.display());
            }
            if let Some(status) = self.services.try_wait()? {
                bail!("node services.cjs exited ({status}); logs in {}", dir.display());
            }
            ensure!(
                Instant::now() < deadline,
                "Restate not up after 60 s (admin {admin_up}, services {services_up}); logs in {}",
                dir.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn side(&self) -> Side {
        Side {
            label: self.config.label(),
            kind: SideKind::Restate(self.config),
            ingress: self.ingress,
            admin: None,
            processes: vec![
                ("restate-server", self.server.id().unwrap_or(0)),
                ("services (node, TypeScript SDK)", self.services.id().unwrap_or(0)),
            ],
            direct: None,
        }
    }

    /// One number from Restate's SQL introspection: `SELECT … AS n`.
    pub async fn query_number(&self, sql: &str) -> anyhow::Result<i64> {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let body = serde_json::json!({ "query": sql }).to_string();
        let req = Request::post(format!("http://{}/query", self.admin))
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req)).await??;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        ensure!(
            status.is_success(),
            "Restate query answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        let v: serde_json::Value = serde_json::from_slice(&bytes)?;
        Ok(v["rows"][0]["n"].as_i64().unwrap_or(0))
    }

    /// The sum of an integer state over every key of a virtual object.
    pub async fn state_sum(&self, service: &str, key: &str) -> anyhow::Result<i64> {
        self.query_number(&format!(
            "SELECT coalesce(sum(CAST(value_utf8 AS BIGINT)), 0) AS n FROM state WHERE service_name = '{service}' AND key = '{key}'"
        ))
        .await
    }
}

/// Registers the services' deployment with the admin API.
async fn register(admin: SocketAddr, services: SocketAddr) -> anyhow::Result<()> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let body = serde_json::json!({ "uri": format!("http://{services}") }).to_string();
    let req = Request::post(format!("http://{admin}/deployments"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req)).await??;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes();
    ensure!(
        status.is_success(),
        "registering the deployment answered {status}: {}",
        String::from_utf8_lossy(&bytes)
    );
    Ok(())
}
