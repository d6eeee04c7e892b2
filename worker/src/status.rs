//! An application's status at a glance, from its workers' admin `/status`: [`Summary`] adds
//! the workers up (pure, from their JSON) and renders `spindle status`'s report and
//! `spindle run`'s live line; [`fetch`] reads the workers; a local run lists its admin URLs in
//! its data directory ([`ADMIN_FILE`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// The file in a local run's data directory that lists its workers' admin URLs.
pub const ADMIN_FILE: &str = "admin-urls";

/// One worker's `/status`, the fields the summary uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WorkerStatus {
    pub worker: u64,
    pub application: String,
    pub workers: u64,
    pub generation: u64,
    pub completed: u64,
    pub last_checkpoint_s: i64,
    pub now_ms: u64,
    pub checkpoints_failed: u64,
    pub rollbacks: u64,
    pub accepted: u64,
    pub invoked: u64,
    pub queued: i64,
    pub in_flight: i64,
    pub backlog: i64,
    pub dead_letters: u64,
    pub lag: BTreeMap<String, i64>,
}

impl WorkerStatus {
    pub fn from_json(v: &Value) -> WorkerStatus {
        let u = |k: &str| v[k].as_u64().unwrap_or(0);
        let i = |k: &str| v[k].as_i64().unwrap_or(0);
        WorkerStatus {
            worker: u("worker"),
            application: v["application"].as_str().unwrap_or("?").to_string(),
            workers: u("workers").max(1),
            generation: u("generation"),
            completed: u("completedCheckpoint"),
            last_checkpoint_s: i("lastCheckpointTimeSeconds"),
            now_ms: u("nowMs"),
            checkpoints_failed: u("checkpointsFailed"),
            rollbacks: u("rollbacks"),
            accepted: u("ingressAccepted"),
            invoked: u("messagesInvoked"),
            queued: i("messagesQueued"),
            in_flight: i("messagesInFlight"),
            backlog: i("backlog"),
            dead_letters: u("deadLetters"),
            lag: v["ingressLag"]
                .as_object()
                .map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_i64().unwrap_or(0))).collect())
                .unwrap_or_default(),
        }
    }
}

/// The application summed over the workers that answered, with rates between two samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub application: String,
    pub workers: u64,
    pub answered: usize,
    pub generation: u64,
    pub checkpoint: u64,
    /// Seconds since the last checkpoint completed; `None`: none yet.
    pub checkpoint_age_s: Option<f64>,
    pub checkpoints_failed: u64,
    pub rollbacks: u64,
    pub records_per_s: f64,
    pub messages_per_s: f64,
    pub queued: i64,
    pub in_flight: i64,
    pub backlog: i64,
    pub dead_letters: u64,
    pub lag: BTreeMap<String, i64>,
}

impl Summary {
    /// From the samples `before` and `after` of the same workers (by index), `elapsed` apart.
    pub fn new(before: &[WorkerStatus], after: &[WorkerStatus], elapsed: Duration) -> Summary {
        let secs = elapsed.as_secs_f64().max(1e-3);
        let rate = |f: fn(&WorkerStatus) -> u64| {
            let delta: u64 = after
                .iter()
                .map(|a| {
                    let b = before.iter().find(|b| b.worker == a.worker).map_or(f(a), f);
                    f(a).saturating_sub(b)
                })
                .sum();
            delta as f64 / secs
        };
        let newest = after.iter().max_by_key(|w| (w.completed, w.last_checkpoint_s));
        let checkpoint_age_s = newest
            .filter(|w| w.completed > 0 && w.last_checkpoint_s > 0)
            .map(|w| (w.now_ms as f64 / 1000.0 - w.last_checkpoint_s as f64).max(0.0));
        let mut lag = BTreeMap::new();
        for w in after {
            for (k, v) in &w.lag {
                *lag.entry(k.clone()).or_insert(0) += v;
            }
        }
        Summary {
            application: after.first().map_or("?".into(), |w| w.application.clone()),
            workers: after.iter().map(|w| w.workers).max().unwrap_or(0),
            answered: after.len(),
            generation: after.iter().map(|w| w.generation).max().unwrap_or(0),
            checkpoint: after.iter().map(|w| w.completed).max().unwrap_or(0),
            checkpoint_age_s,
            checkpoints_failed: after.iter().map(|w| w.checkpoints_failed).sum(),
            rollbacks: after.iter().map(|w| w.rollbacks).sum(),
            records_per_s: rate(|w| w.accepted),
            messages_per_s: rate(|w| w.invoked),
            queued: after.iter().map(|w| w.queued).sum(),
            in_flight: after.iter().map(|w| w.in_flight).sum(),
            backlog: after.iter().map(|w| w.backlog).sum(),
            dead_letters: after.iter().map(|w| w.dead_letters).sum(),
            lag,
        }
    }

    fn age(&self) -> String {
        match self.checkpoint_age_s {
            None => "none yet".into(),
            Some(s) if s < 120.0 => format!("{} ({s:.1}s ago)", self.checkpoint),
            Some(s) if s < 7200.0 => format!("{} ({:.0}m ago)", self.checkpoint, s / 60.0),
            Some(s) => format!("{} ({:.1}h ago)", self.checkpoint, s / 3600.0),
        }
    }

    fn lag_text(&self) -> String {
        if self.lag.is_empty() {
            return "-".into();
        }
        self.lag
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The report of `spindle status`.
    pub fn report(&self) -> String {
        let missing = if (self.answered as u64) < self.workers {
            format!(" ({} answered)", self.answered)
        } else {
            String::new()
        };
        format!(
            "application     {}\n\
             workers         {}{missing}\n\
             generation      {}\n\
             last checkpoint {}\n\
             failed ckpts    {}\n\
             rollbacks       {}\n\
             throughput      {:.1} records/s in, {:.1} messages/s invoked\n\
             backlog         {} (queued {}, in flight {}, ingress lag {})\n\
             dead letters    {}\n\
             lag by ingress  {}\n",
            self.application,
            self.workers,
            self.generation,
            self.age(),
            self.checkpoints_failed,
            self.rollbacks,
            self.records_per_s,
            self.messages_per_s,
            self.backlog,
            self.queued,
            self.in_flight,
            self.lag.values().sum::<i64>(),
            self.dead_letters,
            self.lag_text(),
        )
    }

    /// `spindle run`'s live line (one terminal line).
    pub fn line(&self) -> String {
        let lag = if self.lag.is_empty() {
            String::new()
        } else {
            format!(" · lag {}", self.lag_text())
        };
        format!(
            "{} · gen {} · ckpt {} · {:.0} rec/s · {:.0} msg/s · backlog {} · dead {} · rollbacks {}{lag}",
            self.application,
            self.generation,
            self.age(),
            self.records_per_s,
            self.messages_per_s,
            self.backlog,
            self.dead_letters,
            self.rollbacks,
        )
    }
}

/// Every worker's `/status`: `(url, answer)`; a worker that cannot be reached is an error
/// naming it.
pub async fn fetch(admins: &[String], token: Option<&str>) -> anyhow::Result<Vec<(String, Value)>> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut out = Vec::new();
    for admin in admins {
        let url = format!("{}/status", admin.trim_end_matches('/'));
        let mut req = Request::get(&url);
        if let Some(t) = token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Empty::new())
            .with_context(|| format!("`{url}` is not a URL"))?;
        let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
            .await
            .map_err(|_| anyhow::anyhow!("{url}: no answer within 10s"))?
            .with_context(|| format!("cannot reach {url}"))?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        if status != StatusCode::OK {
            bail!("{url}: {status}: {}", String::from_utf8_lossy(&body).trim());
        }
        let v: Value = serde_json::from_slice(&body).with_context(|| format!("{url}: not a status object"))?;
        out.push((admin.clone(), v));
    }
    Ok(out)
}

/// The admin URLs a local run wrote into its data directory.
pub fn local_admins(data_dir: &Path) -> anyhow::Result<Vec<String>> {
    let file = data_dir.join(ADMIN_FILE);
    let text = std::fs::read_to_string(&file).with_context(|| {
        format!(
            "cannot read {}: is `spindle run` running for this application? (or give --admin URL)",
            file.display()
        )
    })?;
    let urls: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if urls.is_empty() {
        bail!("{} lists no admin URL", file.display());
    }
    Ok(urls)
}

/// Writes the admin URLs of a local run (read by `spindle status FILE`).
pub fn write_local_admins(data_dir: &Path, urls: &[String]) -> std::io::Result<()> {
    std::fs::create_dir_all(data_dir)?;
    std::fs::write(data_dir.join(ADMIN_FILE), urls.join("\n") + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(i: u64, accepted: u64, invoked: u64) -> WorkerStatus {
        WorkerStatus {
            worker: i,
            application: "greeter".into(),
            workers: 2,
            generation: 3,
            completed: 40 + i,
            last_checkpoint_s: 1_000,
            now_ms: 1_002_500,
            rollbacks: if i == 0 { 1 } else { 0 },
            accepted,
            invoked,
            queued: 5,
            in_flight: 1,
            backlog: 6 + i as i64,
            dead_letters: i,
            lag: [("orders".to_string(), 10 * i as i64)].into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_summary_adds_the_workers_up_and_takes_rates_from_two_samples() {
        let before = [worker(0, 100, 10), worker(1, 0, 0)];
        let after = [worker(0, 150, 60), worker(1, 0, 100)];
        let s = Summary::new(&before, &after, Duration::from_millis(500));
        assert_eq!(s.workers, 2);
        assert_eq!(s.checkpoint, 41);
        assert_eq!(s.checkpoint_age_s, Some(2.5));
        assert_eq!(s.records_per_s, 100.0);
        assert_eq!(s.messages_per_s, 300.0);
        assert_eq!((s.queued, s.in_flight, s.backlog), (10, 2, 13));
        assert_eq!(s.rollbacks, 1);
        assert_eq!(s.lag["orders"], 10);
        assert_eq!(
            s.line(),
            "greeter · gen 3 · ckpt 41 (2.5s ago) · 100 rec/s · 300 msg/s · backlog 13 · dead 1 · rollbacks 1 · lag orders 10"
        );
        let report = s.report();
        assert!(report.contains("last checkpoint 41 (2.5s ago)"), "{report}");
        assert!(
            report.contains("throughput      100.0 records/s in, 300.0 messages/s invoked"),
            "{report}"
        );
        // One worker missing: said so.
        let s = Summary::new(&before[..1], &after[..1], Duration::from_secs(1));
        assert!(s.report().contains("workers         2 (1 answered)"), "{}", s.report());
    }

    #[test]
    fn no_checkpoint_yet_is_said() {
        let mut w = worker(0, 0, 0);
        w.completed = 0;
        let s = Summary::new(&[w.clone()], &[w], Duration::from_secs(1));
        assert!(s.line().contains("ckpt none yet"), "{}", s.line());
    }
}
