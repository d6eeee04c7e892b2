//! Spindle's side: one `spindle worker` process (this binary's `spindle` subcommand, or
//! `--spindle`), the counter behind a Kafka ingress and a Kafka egress on the same broker,
//! checkpoints every `interval` to the local filesystem; its egress leaves after its checkpoint.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use super::counter::{COUNTER, TOTALS_EGRESS};
use crate::harness::{free_addr, spindle_command};

pub(crate) fn app_yaml(function_port: u16, broker: &str, topic: &str, interval: Duration, storage: &Path) -> String {
    let namespace = COUNTER.split('/').next().expect("a typename has a namespace");
    format!(
        r#"apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {{name: statefun-bench}}
spec:
  workers: 1
  functions:
    - {{typename: "{namespace}/*", endpoint: "http://127.0.0.1:{function_port}/statefun"}}
  ingresses:
    - name: in
      kafka:
        brokers: ["{broker}"]
        topics: [{{topic: {topic}, valueType: example/Add, targets: [{COUNTER}]}}]
        startupPosition: earliest
  egresses:
    - typename: {TOTALS_EGRESS}
      kafka: {{brokers: ["{broker}"]}}
  checkpoint: {{interval: {ms}ms, storage: "{storage}"}}
"#,
        ms = interval.as_millis(),
        storage = storage.display()
    )
}

pub(crate) struct Spindle {
    child: Child,
    pub admin: SocketAddr,
}

impl Spindle {
    pub fn start(explicit: Option<&PathBuf>, dir: &Path, yaml: &str) -> anyhow::Result<Spindle> {
        std::fs::create_dir_all(dir)?;
        let app = dir.join("app.yaml");
        std::fs::write(&app, yaml)?;
        spindle_spec::from_yaml_str(yaml, "the benchmark's application").context("the benchmark's application")?;
        let (admin, peer) = (free_addr()?, free_addr()?);
        let log = std::fs::File::create(dir.join("worker.log"))?;
        let child = spindle_command(explicit)?
            .arg("worker")
            .arg(&app)
            .args([
                "--index",
                "0",
                "--peers",
                &peer.to_string(),
                "--peer-addr",
                &peer.to_string(),
            ])
            .args(["--admin-addr", &admin.to_string()])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("SPINDLE_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting a spindle worker")?;
        Ok(Spindle { child, admin })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn alive(&mut self, dir: &Path) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!(
                "the spindle worker exited ({status}); see {}",
                dir.join("worker.log").display()
            );
        }
        Ok(())
    }

    /// Checkpoint durations so far: (sum in s, count), from the worker's metrics.
    pub async fn checkpoints(&self) -> (f64, u64) {
        use crate::checkpoint::traffic::{get, histogram, scrape};
        match get(self.admin, "/metrics").await {
            Some((200, body)) => histogram(
                &scrape(&String::from_utf8_lossy(&body)),
                "spindle_checkpoint_duration_seconds",
            ),
            _ => (0.0, 0),
        }
    }
}

impl Drop for Spindle {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_is_valid_and_reads_from_the_earliest_offset() {
        let yaml = app_yaml(
            8000,
            "127.0.0.1:9092",
            "in-spindle",
            Duration::from_secs(1),
            Path::new("/tmp/ck"),
        );
        let app = spindle_spec::from_yaml_str(&yaml, "bench").unwrap();
        let spec = serde_json::to_value(&app.spec).unwrap();
        assert_eq!(spec["ingresses"][0]["kafka"]["startupPosition"], "earliest");
        assert_eq!(spec["egresses"][0]["typename"], "bench/totals");
        assert_eq!(spec["functions"][0]["endpoint"], "http://127.0.0.1:8000/statefun");
    }
}
