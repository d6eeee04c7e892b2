//! Spindle's side: one `spindle worker` process (the release binary) per checkpoint mode, each
//! with its own checkpoint directory, sharing the Rust-SDK counter function process and the
//! benchmark's egress webhook.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::process::{Child, Command};

use super::{RestateArgs, Side, SideKind, SpindleMode};
use crate::app::{BenchApp, Checkpoints};
use crate::checkpoint::traffic::get;
use crate::harness::{Harness, free_addr, spindle_command};

pub(crate) struct SpindleProcess {
    mode: SpindleMode,
    pub ingress: SocketAddr,
    pub admin: SocketAddr,
    child: Child,
    label: String,
}

impl SpindleProcess {
    pub async fn start(
        args: &RestateArgs,
        mode: SpindleMode,
        h: &Harness,
        scratch: &Path,
    ) -> anyhow::Result<SpindleProcess> {
        let name = match mode {
            SpindleMode::Group => "bench-group",
            SpindleMode::Periodic => "bench-periodic",
        };
        let dir = scratch.join(name);
        std::fs::create_dir_all(&dir)?;
        let interval = format!("{}ms", args.interval.as_millis());
        let storage = dir.join("checkpoints");
        let (min_pause, label) = match mode {
            SpindleMode::Group => (
                Some(args.min_pause),
                format!(
                    "Spindle (checkpoints every {interval}, group commit minPause {}ms)",
                    args.min_pause.as_millis()
                ),
            ),
            SpindleMode::Periodic => (None, format!("Spindle (checkpoints every {interval})")),
        };
        let yaml = BenchApp {
            max_batch: Some(100),
            max_in_flight: Some(64),
            checkpoint: Checkpoints {
                min_pause,
                storage: Some(&storage),
                ..Checkpoints::every(args.interval)
            },
            ..BenchApp::new(name)
        }
        .yaml(h.function.port, h.webhook);
        let app = dir.join("app.yaml");
        std::fs::write(&app, yaml)?;
        let (ingress, admin) = (free_addr()?, free_addr()?);
        let log = std::fs::File::create(dir.join("worker.log"))?;
        let child = Command::from(spindle_command(args.spindle.as_ref())?)
            .arg("worker")
            .arg(&app)
            .args([
                "--ingress-addr",
                &ingress.to_string(),
                "--admin-addr",
                &admin.to_string(),
            ])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("SPINDLE_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting a spindle worker")?;
        let mut p = SpindleProcess {
            mode,
            ingress,
            admin,
            child,
            label,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !matches!(get(admin, "/readyz").await, Some((200, _))) {
            if let Some(status) = p.child.try_wait()? {
                bail!(
                    "{} exited ({status}) before it was ready; log: {}",
                    p.label,
                    dir.join("worker.log").display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not ready after 60 s; log: {}",
                    p.label,
                    dir.join("worker.log").display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "started: {} — `spindle worker` pid {}, ingress {ingress}, admin {admin}, checkpoints in {}",
            p.label,
            p.child.id().unwrap_or(0),
            dir.join("checkpoints").display()
        );
        Ok(p)
    }

    pub fn side(&self, h: &Harness) -> Side {
        let mut processes = vec![("spindle worker", self.child.id().unwrap_or(0))];
        if let Some(pid) = h.function.pid() {
            processes.push(("counter function (Rust SDK)", pid));
        }
        Side {
            label: self.label.clone(),
            kind: SideKind::Spindle(self.mode),
            ingress: self.ingress,
            admin: Some(self.admin),
            processes,
            direct: None,
        }
    }
}
