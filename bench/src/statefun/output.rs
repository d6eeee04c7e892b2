//! The readers of the two output topics and the exactly-once verdict. A reader is
//! `e2e/statefun/read_topic.py` (kafka-python, `read_committed`, from the beginning, no
//! deduplication) in its own process, the same for both systems; its arrivals are stamped on
//! the wall clock as they reach it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::io::AsyncBufReadExt;

/// One output record as the reader saw it.
#[derive(Debug, Clone)]
pub(crate) struct Arrival {
    pub seq: u64,
    pub key: String,
    pub total: i64,
    /// Wall clock, ms since the epoch.
    pub at_ms: f64,
}

#[derive(Default)]
struct Seen {
    arrivals: Vec<Arrival>,
    distinct: BTreeSet<u64>,
    /// Records that are not a counter total (would be a bug in a system or the bench).
    malformed: u64,
}

pub(crate) struct Reader {
    child: tokio::process::Child,
    seen: Arc<Mutex<Seen>>,
}

impl Reader {
    pub async fn start(
        python: &Path,
        script: &Path,
        broker: &str,
        topic: &str,
        partitions: i32,
    ) -> anyhow::Result<Reader> {
        let mut child = tokio::process::Command::new(python)
            .arg(script)
            .args([broker, topic, &partitions.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", script.display()))?;
        let mut lines = tokio::io::BufReader::new(child.stdout.take().context("reader stdout")?).lines();
        match tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await {
            Ok(Ok(Some(l))) if l.contains("ready") => {}
            other => bail!("the reader of {topic} did not start: {other:?}"),
        }
        let seen = Arc::new(Mutex::new(Seen::default()));
        let sink = seen.clone();
        // Ends when the reader process does (its stdout closes).
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let parsed = parse_line(&line);
                let mut s = sink.lock().expect("reader state lock");
                match parsed {
                    Some(a) => {
                        s.distinct.insert(a.seq);
                        s.arrivals.push(a);
                    }
                    None => s.malformed += 1,
                }
            }
        });
        Ok(Reader { child, seen })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Distinct seqs seen in `range`.
    pub fn distinct_in(&self, range: std::ops::Range<u64>) -> usize {
        self.seen
            .lock()
            .expect("reader state lock")
            .distinct
            .range(range)
            .count()
    }

    pub fn arrivals(&self) -> Vec<Arrival> {
        self.seen.lock().expect("reader state lock").arrivals.clone()
    }

    pub fn malformed(&self) -> u64 {
        self.seen.lock().expect("reader state lock").malformed
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// `[partition, offset, arrival_ms, value]` with a `Total` JSON value.
fn parse_line(line: &str) -> Option<Arrival> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let total: serde_json::Value = serde_json::from_str(v.get(3)?.as_str()?).ok()?;
    Some(Arrival {
        seq: total["seq"].as_u64()?,
        key: total["key"].as_str()?.to_string(),
        total: total["total"].as_i64()?,
        at_ms: v.get(2)?.as_f64()?,
    })
}

/// What a plain reader saw against what was sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub outputs: u64,
    /// Inputs without an output.
    pub lost: u64,
    /// Output records beyond the first for an input.
    pub duplicated: u64,
    /// Outputs for seqs never sent.
    pub unexpected: u64,
    /// Keys whose totals, in input order, are not 1, 2, 3, … (each input adds 1): state
    /// applied other than exactly once, or out of order.
    pub wrong_totals: u64,
}

impl Verdict {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "outputs": self.outputs, "lost": self.lost, "duplicated": self.duplicated,
            "unexpected": self.unexpected, "wrong_totals": self.wrong_totals, "exactly_once": self.exactly_once(),
        })
    }

    pub fn exactly_once(&self) -> bool {
        self.lost == 0 && self.duplicated == 0 && self.unexpected == 0 && self.wrong_totals == 0
    }
}

/// Each of `sent` must have exactly one output, and each key's outputs in seq order must carry
/// the totals 1, 2, 3, … — checked on every record read, nothing dropped as a repeat.
pub(crate) fn verdict(arrivals: &[Arrival], sent: std::ops::Range<u64>) -> Verdict {
    let mut per_seq: BTreeMap<u64, u64> = BTreeMap::new();
    let mut per_key: BTreeMap<&str, Vec<(u64, i64)>> = BTreeMap::new();
    for a in arrivals {
        *per_seq.entry(a.seq).or_default() += 1;
        per_key.entry(&a.key).or_default().push((a.seq, a.total));
    }
    let wrong_totals = per_key
        .values_mut()
        .map(|v| {
            v.sort_unstable();
            v.iter().enumerate().any(|(i, (_, total))| *total != i as i64 + 1)
        })
        .filter(|wrong| *wrong)
        .count() as u64;
    Verdict {
        outputs: arrivals.len() as u64,
        lost: sent.clone().filter(|s| !per_seq.contains_key(s)).count() as u64,
        duplicated: per_seq.values().map(|n| n - 1).sum(),
        unexpected: per_seq.keys().filter(|s| !sent.contains(s)).count() as u64,
        wrong_totals,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(seq: u64, key: &str, total: i64) -> Arrival {
        Arrival {
            seq,
            key: key.into(),
            total,
            at_ms: 0.0,
        }
    }

    #[test]
    fn the_verdict_counts_every_deviation_without_dedup() {
        let clean = [a(0, "c0", 1), a(2, "c0", 2), a(1, "c1", 1), a(3, "c1", 2)];
        assert!(verdict(&clean, 0..4).exactly_once());
        // A re-sent output: a duplicate, and its key's totals no longer read 1, 2.
        let dup = [
            a(0, "c0", 1),
            a(0, "c0", 1),
            a(2, "c0", 2),
            a(1, "c1", 1),
            a(3, "c1", 2),
        ];
        let v = verdict(&dup, 0..4);
        assert_eq!((v.duplicated, v.wrong_totals, v.lost), (1, 1, 0));
        // An input applied twice to the state but output once: the totals show it.
        let twice = [a(0, "c0", 1), a(2, "c0", 3), a(1, "c1", 1), a(3, "c1", 2)];
        assert_eq!(verdict(&twice, 0..4).wrong_totals, 1);
        let lost = [a(0, "c0", 1), a(1, "c1", 1), a(9, "c1", 2)];
        let v = verdict(&lost, 0..4);
        assert_eq!((v.lost, v.unexpected, v.outputs), (2, 1, 3));
        assert!(parse_line(r#"[0, 5, 1700000000000.5, "{\"seq\":3,\"key\":\"c3\",\"total\":1}"]"#).is_some());
        assert!(parse_line(r#"[0, 5, 1.0, "not json"]"#).is_none());
    }
}
