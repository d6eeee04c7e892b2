//! The figures of one system's run, and the markdown and JSON they are written as.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::output::{Arrival, Verdict};

/// CPU (share of one core) and RSS (bytes, at the end) per process over one phase.
pub(crate) struct Phase {
    pub seconds: f64,
    pub processes: Vec<(&'static str, (f64, u64))>,
}

pub(crate) struct Checkpoints {
    pub count: u64,
    pub mean_ms: f64,
    /// StateFun's log has every duration; Spindle's metrics only sum and count.
    pub max_ms: Option<f64>,
}

/// The `--kill` round.
pub(crate) struct Failure {
    pub inputs: u64,
    /// From the kill to every output of the round at the reader.
    pub recovered: Duration,
    pub after_dropping_repeats: Verdict,
}

pub(crate) struct SystemRun {
    pub system: &'static str,
    pub startup: Duration,
    pub backlog: u64,
    /// From the first output to the last backlog output.
    pub backlog_seconds: f64,
    /// Backlog outputs that arrived with the first release (within 200 ms of the first):
    /// processed before the window opened, so not counted in the rate.
    pub first_release: u64,
    /// From the system's start to its last backlog output.
    pub backlog_done: f64,
    pub live: u64,
    /// Produce → output at the reader, ms, sorted.
    pub latencies: Vec<f64>,
    pub backlog_phase: Phase,
    pub live_phase: Phase,
    pub checkpoints: Checkpoints,
    pub verdict: Verdict,
    pub failure: Option<Failure>,
}

/// The `q` quantile of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

impl SystemRun {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        system: &'static str,
        startup: Duration,
        backlog: u64,
        arrivals: &[Arrival],
        sent: &[(u64, f64)],
        backlog_phase: Phase,
        live_phase: Phase,
        checkpoints: Checkpoints,
        verdict: Verdict,
        failure: Option<Failure>,
    ) -> SystemRun {
        let mut first_arrival: HashMap<u64, f64> = HashMap::new();
        for a in arrivals {
            first_arrival
                .entry(a.seq)
                .and_modify(|t| *t = t.min(a.at_ms))
                .or_insert(a.at_ms);
        }
        let backlog_times: Vec<f64> = (0..backlog).filter_map(|s| first_arrival.get(&s).copied()).collect();
        let (lo, hi) = backlog_times
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), t| (lo.min(*t), hi.max(*t)));
        let first_release = backlog_times.iter().filter(|t| **t <= lo + 200.0).count() as u64;
        let mut latencies: Vec<f64> = sent
            .iter()
            .filter_map(|(s, at)| Some(first_arrival.get(s)? - at))
            .collect();
        latencies.sort_by(f64::total_cmp);
        SystemRun {
            system,
            startup,
            backlog,
            backlog_seconds: ((hi - lo) / 1e3).max(1e-3),
            first_release,
            backlog_done: startup.as_secs_f64() + (hi - lo) / 1e3,
            live: sent.len() as u64,
            latencies,
            backlog_phase,
            live_phase,
            checkpoints,
            verdict,
            failure,
        }
    }

    /// Steady-state rate: the outputs released after the first release, over the time from the
    /// first output to the last (both systems release output in bursts, once per checkpoint).
    pub fn backlog_per_second(&self) -> f64 {
        self.backlog.saturating_sub(self.first_release) as f64 / self.backlog_seconds
    }

    pub fn p(&self, q: f64) -> f64 {
        quantile(&self.latencies, q)
    }

    pub fn summary(&self) -> String {
        let v = &self.verdict;
        format!(
            "{}: first output {:.1} s after start; backlog {} done {:.1} s after start, {:.0} records/s from the first output on; live {} records: p50 {:.0} ms, p99 {:.0} ms; checkpoints {} (mean {:.0} ms); outputs {}, lost {}, duplicated {}, wrong totals {} -> {}",
            self.system,
            self.startup.as_secs_f64(),
            self.backlog,
            self.backlog_done,
            self.backlog_per_second(),
            self.live,
            self.p(0.5),
            self.p(0.99),
            self.checkpoints.count,
            self.checkpoints.mean_ms,
            v.outputs,
            v.lost,
            v.duplicated,
            v.wrong_totals,
            if v.exactly_once() {
                "exactly once"
            } else {
                "NOT exactly once"
            }
        )
    }

    pub fn failure_summary(&self) -> Option<String> {
        let f = self.failure.as_ref()?;
        let d = &f.after_dropping_repeats;
        Some(format!(
            "{}: kill -9 during {} inputs, all their outputs {:.1} s after the kill; without dedup: duplicated {}, lost {}; after dropping repeated (seq, total) records: duplicated {}, lost {}, wrong totals {}",
            self.system,
            f.inputs,
            f.recovered.as_secs_f64(),
            self.verdict.duplicated,
            self.verdict.lost,
            d.duplicated,
            d.lost,
            d.wrong_totals
        ))
    }

    fn json(&self) -> serde_json::Value {
        let phase = |p: &Phase| {
            serde_json::json!({
                "seconds": p.seconds,
                "processes": p.processes.iter().map(|(n, (cpu, rss))| serde_json::json!({"process": n, "cpu_cores": cpu, "rss_bytes": rss})).collect::<Vec<_>>(),
            })
        };
        serde_json::json!({
            "system": self.system,
            "startup_to_first_output_s": self.startup.as_secs_f64(),
            "backlog": {
                "records": self.backlog, "first_output_to_last_s": self.backlog_seconds, "first_release": self.first_release,
                "start_to_last_s": self.backlog_done, "records_per_s": self.backlog_per_second(), "usage": phase(&self.backlog_phase),
            },
            "live": {"records": self.live, "latency_ms": {"p50": self.p(0.5), "p99": self.p(0.99), "max": self.p(1.0)}, "usage": phase(&self.live_phase)},
            "checkpoints": {"count": self.checkpoints.count, "mean_ms": self.checkpoints.mean_ms, "max_ms": self.checkpoints.max_ms},
            "exactly_once": self.verdict.json(),
            "kill": self.failure.as_ref().map(|f| serde_json::json!({
                "inputs": f.inputs, "recovered_s": f.recovered.as_secs_f64(),
                "after_dropping_repeats": f.after_dropping_repeats.json(),
            })),
        })
    }
}

pub(crate) struct Meta {
    pub kafka_version: String,
    pub backlog: u64,
    pub rate: u64,
    pub live: Duration,
    pub interval: Duration,
    pub partitions: i32,
    pub keys: u64,
    pub cores: usize,
    pub load_before: String,
    pub load_after: String,
    pub kafka_fetch: Duration,
    pub statefun_fetch: Duration,
    pub broker_start: Duration,
}

pub(crate) fn json(meta: &Meta, runs: &[SystemRun]) -> serde_json::Value {
    serde_json::json!({
        "benchmark": "spindle-bench statefun",
        "kafka": format!("Apache Kafka {} (KRaft, one node)", meta.kafka_version),
        "statefun": "Apache Flink StateFun 3.3.0 on Flink 1.16.2 (local MiniCluster, one JVM, parallelism 1)",
        "spindle": "one spindle worker process",
        "backlog": meta.backlog, "rate_per_s": meta.rate, "live_s": meta.live.as_secs_f64(),
        "checkpoint_interval_ms": meta.interval.as_millis() as u64,
        "partitions": meta.partitions, "keys": meta.keys, "cores": meta.cores,
        "load_before": meta.load_before, "load_after": meta.load_after,
        "kafka_jars_s": meta.kafka_fetch.as_secs_f64(), "statefun_build_s": meta.statefun_fetch.as_secs_f64(),
        "broker_start_s": meta.broker_start.as_secs_f64(),
        "runs": runs.iter().map(SystemRun::json).collect::<Vec<_>>(),
    })
}

pub(crate) fn markdown(meta: &Meta, runs: &[SystemRun]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Spindle beside Apache Flink StateFun 3.3.0 (`spindle-bench statefun`)\n"
    );
    let _ = writeln!(
        s,
        "One run on {} cores, load average {} before and {} after. Apache Kafka {} (one KRaft node) serves both systems; \
         each reads its own copy of the same input (`example/Add {{seq, value: 1}}` for {} counters over {} partitions) and runs \
         the same Rust-SDK counter function in its own process, checkpointing every {} ms to the local filesystem. \
         StateFun: Flink 1.16.2 MiniCluster in one JVM, parallelism 1, heap state backend, Kafka egress `exactly-once` \
         (transactions committed with each checkpoint). Spindle: one worker process, Kafka egress released after each checkpoint \
         (not transactional). Each output topic is read by the same `read_committed` kafka-python reader, without dedup.\n",
        meta.cores,
        meta.load_before,
        meta.load_after,
        meta.kafka_version,
        meta.keys,
        meta.partitions,
        meta.interval.as_millis()
    );
    let _ = writeln!(
        s,
        "| system | start → first output | start → backlog done | backlog records/s | live {} inputs/s: p50 | p99 | checkpoints (mean duration) | outputs | lost | duplicated | wrong totals |",
        meta.rate
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
    for r in runs {
        let max = r
            .checkpoints
            .max_ms
            .map_or(String::new(), |m| format!(", max {m:.0} ms"));
        let _ = writeln!(
            s,
            "| {} | {:.1} s | {:.1} s | {:.0} | {:.0} ms | {:.0} ms | {} ({:.0} ms{max}) | {} | {} | {} | {} |",
            r.system,
            r.startup.as_secs_f64(),
            r.backlog_done,
            r.backlog_per_second(),
            r.p(0.5),
            r.p(0.99),
            r.checkpoints.count,
            r.checkpoints.mean_ms,
            r.verdict.outputs,
            r.verdict.lost,
            r.verdict.duplicated,
            r.verdict.wrong_totals
        );
    }
    let _ = writeln!(
        s,
        "\nBacklog: {} inputs preloaded before the system starts. Backlog records/s is the steady-state rate: outputs after the \
         first release over the time from the first output to the last (both systems release output once per checkpoint). \
         Live: inputs produced at a fixed rate after the backlog; latency from produce to the output reaching the reader. \
         Exactly-once is checked on every record the reader saw, without dedup: each input's output once and each counter's \
         totals 1, 2, 3, …{}. Through failures StateFun's transactional egress keeps that for a `read_committed` reader, \
         while Spindle's may re-send an epoch's records with the same `idempotency-key` (see docs/connectors.md).",
        meta.backlog,
        if runs.iter().any(|r| r.failure.is_some()) {
            " (including the failure round below)"
        } else {
            " (no failure injected in this run)"
        }
    );
    if let [a, b] = runs {
        let _ = writeln!(
            s,
            "\nRatios {} / {}: backlog throughput {:.2}, p50 latency {:.2}, p99 latency {:.2}.",
            a.system,
            b.system,
            a.backlog_per_second() / b.backlog_per_second(),
            a.p(0.5) / b.p(0.5).max(1e-9),
            a.p(0.99) / b.p(0.99).max(1e-9)
        );
    }
    if runs.iter().any(|r| r.failure.is_some()) {
        let _ = writeln!(
            s,
            "\nFailure round (`--kill`): after the measured phases, {} inputs/s for 10 s with `kill -9` of the system's \
             process after 5 s and a restart (Spindle from its checkpoint storage, StateFun from its newest retained \
             checkpoint); the table above counts it. Read without dedup, then after dropping records repeated with the \
             same seq and total:\n",
            meta.rate
        );
        let _ = writeln!(
            s,
            "| system | kill → all outputs | duplicated (no dedup) | lost | duplicated after dropping repeats | wrong totals after dropping repeats |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|");
        for r in runs {
            if let Some(f) = &r.failure {
                let d = &f.after_dropping_repeats;
                let _ = writeln!(
                    s,
                    "| {} | {:.1} s | {} | {} | {} | {} |",
                    r.system,
                    f.recovered.as_secs_f64(),
                    r.verdict.duplicated,
                    r.verdict.lost,
                    d.duplicated,
                    d.wrong_totals
                );
            }
        }
    }
    let _ = writeln!(
        s,
        "\nCPU (cores busy, 1.0 = one core) and RSS at the end of each phase, per process:\n"
    );
    let _ = writeln!(
        s,
        "| system | process | backlog CPU | backlog RSS | live CPU | live RSS |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for r in runs {
        for ((name, (c1, m1)), (_, (c2, m2))) in r.backlog_phase.processes.iter().zip(&r.live_phase.processes) {
            let _ = writeln!(
                s,
                "| {} | {name} | {c1:.2} | {} MiB | {c2:.2} | {} MiB |",
                r.system,
                m1 / (1 << 20),
                m2 / (1 << 20)
            );
        }
    }
    let _ = writeln!(
        s,
        "\nSetup: Kafka jars ready in {:.1} s, StateFun jars and launcher in {:.1} s (0 when cached), broker ready in {:.1} s.",
        meta.kafka_fetch.as_secs_f64(),
        meta.statefun_fetch.as_secs_f64(),
        meta.broker_start.as_secs_f64()
    );
    s
}
