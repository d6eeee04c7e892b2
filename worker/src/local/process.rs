//! A function process launched from `local.command`, listening on `PORT`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use spindle_spec::LocalProcess;
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

pub struct FunctionProcess {
    pub port: u16,
    pub typename: String,
    child: Child,
}

impl FunctionProcess {
    /// Starts the process and waits until it accepts connections on its port.
    pub async fn start(typename: &str, local: &LocalProcess, base_dir: &Path) -> anyhow::Result<FunctionProcess> {
        let port = free_port().await?;
        let dir = match &local.working_dir {
            Some(d) => base_dir.join(d),
            None => base_dir.to_path_buf(),
        };
        let (program, args) = local.command.split_first().context("empty local.command")?;
        let exe = std::env::current_exe().context("locating the spindle binary")?;
        let (guard, line) = super::orphans::guarded(&exe, std::process::id(), program.as_ref());
        let mut cmd = Command::new(guard);
        cmd.args(line)
            .args(args)
            .current_dir(&dir)
            .envs(&local.env)
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        // Its own process group, so that stopping it also stops what it started (e.g. the
        // program `cargo run` launches).
        #[cfg(unix)]
        cmd.process_group(0);
        let child = cmd.spawn().with_context(|| {
            format!(
                "function {typename}: cannot start {:?} in {}",
                local.command,
                dir.display()
            )
        })?;
        let mut p = FunctionProcess {
            port,
            typename: typename.to_string(),
            child,
        };
        eprintln!(
            "spindle: started function {typename}: {} (pid {}, PORT={port})",
            local.command.join(" "),
            p.child.id().unwrap_or(0)
        );
        p.wait_listening(local.startup_timeout.as_duration()).await?;
        Ok(p)
    }

    /// The process id, while it runs (for benchmarks that account CPU and memory per process).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    async fn wait_listening(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let started = tokio::time::Instant::now();
        let mut next_note = Duration::from_secs(10);
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "function {}: the process exited ({status}) before listening on port {}",
                    self.typename,
                    self.port
                );
            }
            let waited = started.elapsed();
            if waited >= timeout {
                bail!(
                    "function {}: nothing listens on port {} after {timeout:?} (local.startupTimeout)",
                    self.typename,
                    self.port
                );
            }
            if waited >= next_note {
                eprintln!(
                    "spindle: still waiting for function {} on port {} ({}s)",
                    self.typename,
                    self.port,
                    waited.as_secs()
                );
                next_note += Duration::from_secs(10);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks the process group to stop (SIGTERM), then kills the process after a grace period.
    pub async fn stop(mut self) {
        // The process leads its own group (see `start`), so the group's id is its pid. Only
        // signal it while it is unreaped: then the pid cannot have been reused.
        #[cfg(unix)]
        if let (Ok(None), Some(pid)) = (self.child.try_wait(), self.child.id())
            && let Some(group) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::TERM);
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// A free loopback port, found by binding port 0. Another process could take it before the
/// function binds it; locally that is rare and shows as a clear startup error.
pub(crate) async fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    Ok(l.local_addr()?.port())
}
