//! StateFun's side: Apache Flink Stateful Functions 3.3.0 in one JVM (`e2e/statefun/run.sh`:
//! the StateFun job on a local Flink 1.16.2 MiniCluster), with a remote module of the counter
//! over HTTP, a Kafka ingress and an exactly-once Kafka egress (transactions committed when a
//! checkpoint completes), checkpoints every `interval` to the local filesystem.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;

use super::counter::{COUNTER, TOTALS_EGRESS};

/// The remote module: endpoint, ingress, egress (StateFun 3.x `module.yaml`, one document per
/// component).
pub(crate) fn module_yaml(function_port: u16, broker: &str, topic: &str) -> String {
    let namespace = COUNTER.split('/').next().expect("a typename has a namespace");
    format!(
        "kind: io.statefun.endpoints.v2/http
spec:
  functions: {namespace}/*
  urlPathTemplate: http://127.0.0.1:{function_port}/statefun
---
kind: io.statefun.kafka.v1/ingress
spec:
  id: {namespace}/in
  address: {broker}
  consumerGroupId: statefun-bench
  startupPosition:
    type: earliest
  topics:
    - topic: {topic}
      valueType: example/Add
      targets:
        - {COUNTER}
---
kind: io.statefun.kafka.v1/egress
spec:
  id: {TOTALS_EGRESS}
  address: {broker}
  deliverySemantic:
    type: exactly-once
    # Below the broker's transaction.max.timeout.ms (15 min); Flink's default is 1 h.
    transactionTimeout: 1min
"
    )
}

/// Flink's configuration: the module, one slot (`parallelism`), exactly-once checkpoints every
/// `interval` with the heap state backend on the local filesystem, and every server socket of
/// the MiniCluster on loopback, ephemeral ports.
pub(crate) fn flink_properties(dir: &Path, parallelism: u32, interval: Duration, restore: Option<&Path>) -> String {
    let restore = restore.map_or(String::new(), |c| {
        format!("execution.savepoint.path=file://{}\n", c.display())
    });
    format!(
        "statefun.remote.module-name=file://{module}
parallelism.default={parallelism}
execution.checkpointing.interval={ms}ms
execution.checkpointing.mode=EXACTLY_ONCE
state.backend=hashmap
state.checkpoint-storage=filesystem
state.checkpoints.dir=file://{checkpoints}
rest.bind-address=127.0.0.1
rest.address=127.0.0.1
rest.bind-port=0
jobmanager.rpc.address=127.0.0.1
taskmanager.host=127.0.0.1
{restore}",
        module = dir.join("module.yaml").display(),
        checkpoints = dir.join("checkpoints").display(),
        ms = interval.as_millis(),
    )
}

/// The newest completed checkpoint under `dir/checkpoints/<job>/chk-<n>` (one with `_metadata`),
/// to restore from after a kill.
pub(crate) fn latest_checkpoint(dir: &Path) -> Option<std::path::PathBuf> {
    let mut best: Option<(u64, std::path::PathBuf)> = None;
    for job in std::fs::read_dir(dir.join("checkpoints")).ok()?.flatten() {
        for chk in std::fs::read_dir(job.path()).ok()?.flatten() {
            let name = chk.file_name().to_string_lossy().into_owned();
            let Some(n) = name.strip_prefix("chk-").and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            if chk.path().join("_metadata").exists() && best.as_ref().is_none_or(|(b, _)| n > *b) {
                best = Some((n, chk.path()));
            }
        }
    }
    best.map(|(_, p)| p)
}

/// `checkpointDuration` of every `Completed checkpoint` line in Flink's log, in ms.
pub(crate) fn checkpoint_durations(log: &str) -> Vec<f64> {
    log.lines()
        .filter(|l| l.contains("Completed checkpoint"))
        .filter_map(|l| {
            let rest = &l[l.find("checkpointDuration=")? + "checkpointDuration=".len()..];
            rest.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        })
        .collect()
}

pub(crate) struct StateFun {
    child: Child,
}

impl StateFun {
    /// Writes the module and configuration into `dir` and starts the JVM.
    pub fn start(
        repo: &Path,
        dir: &Path,
        function_port: u16,
        broker: &str,
        topic: &str,
        interval: Duration,
        restore: Option<&Path>,
    ) -> anyhow::Result<StateFun> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("module.yaml"), module_yaml(function_port, broker, topic))?;
        std::fs::write(
            dir.join("flink.properties"),
            flink_properties(dir, 1, interval, restore),
        )?;
        let out = std::fs::File::create(dir.join("statefun.out"))?;
        let child = Command::new("bash")
            .arg(repo.join("e2e/statefun/run.sh"))
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("starting e2e/statefun/run.sh")?;
        Ok(StateFun { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL (the JVM: run.sh execs it), and reaps it.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `Err` if the JVM has exited.
    pub fn alive(&mut self, dir: &Path) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let out = std::fs::read_to_string(dir.join("statefun.out")).unwrap_or_default();
            let tail: Vec<&str> = out.lines().rev().take(30).collect();
            anyhow::bail!(
                "StateFun exited ({status}):\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        Ok(())
    }
}

impl Drop for StateFun {
    fn drop(&mut self) {
        // run.sh execs the JVM: this pid is StateFun's.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_and_configuration_name_the_parts_and_durations_parse() {
        let m = module_yaml(8000, "127.0.0.1:9092", "in-statefun");
        assert!(m.contains("urlPathTemplate: http://127.0.0.1:8000/statefun"));
        assert!(m.contains("- bench/counter") && m.contains("id: bench/totals") && m.contains("type: exactly-once"));
        assert_eq!(m.matches("\n---\n").count(), 2, "three components");
        let p = flink_properties(Path::new("/tmp/sf"), 1, Duration::from_secs(1), None);
        assert!(!p.contains("savepoint"));
        let r = flink_properties(
            Path::new("/tmp/sf"),
            1,
            Duration::from_secs(1),
            Some(Path::new("/tmp/sf/checkpoints/j/chk-7")),
        );
        assert!(r.contains("execution.savepoint.path=file:///tmp/sf/checkpoints/j/chk-7\n"));
        assert!(p.contains("statefun.remote.module-name=file:///tmp/sf/module.yaml\n"));
        assert!(p.contains("execution.checkpointing.interval=1000ms\n") && p.contains("rest.bind-port=0\n"));
        let log = "12:00:01,000 INFO CheckpointCoordinator - Completed checkpoint 18 for job 0a (10557 bytes, checkpointDuration=147 ms, finalizationTime=0 ms).\n\
                   12:00:02,000 INFO CheckpointCoordinator - Triggering checkpoint 19\n\
                   12:00:02,200 INFO CheckpointCoordinator - Completed checkpoint 19 for job 0a (10557 bytes, checkpointDuration=1167 ms, finalizationTime=3 ms).";
        assert_eq!(checkpoint_durations(log), vec![147.0, 1167.0]);
    }
}
