//! The scale benchmark's tables, and each target of issue 19 against what was measured.

use std::time::Duration;

use super::memory::Memory;
use super::rss::mib;
use super::ttl::Ttl;
use super::{Run, ScaleArgs, ms};
use crate::checkpoint::recovery::Kill;
use crate::harness::percentile;

#[derive(Default)]
pub(crate) struct Report {
    pub memory: Vec<Memory>,
    pub runs: Vec<Run>,
    pub ttl: Option<Ttl>,
    pub recovery: Option<Vec<Kill>>,
}

fn pct(v: impl Iterator<Item = Duration>, q: f64) -> Duration {
    let mut v: Vec<Duration> = v.collect();
    v.sort();
    percentile(&v, q)
}

impl Run {
    fn written(&self) -> impl Iterator<Item = u64> + '_ {
        self.rounds
            .iter()
            .map(|r| r.checkpoint.written + r.checkpoint.manifest_bytes)
    }

    /// Bytes written over bytes changed, all incremental checkpoints together.
    fn write_ratio(&self) -> f64 {
        let changed: u64 = self.rounds.iter().map(|r| r.changed_bytes).sum();
        self.written().sum::<u64>() as f64 / changed.max(1) as f64
    }

    fn p99(&self) -> Duration {
        pct(self.rounds.iter().map(|r| r.checkpoint.duration), 0.99)
    }
}

impl Report {
    pub fn print(&self, args: &ScaleArgs, load_start: &str, load_end: &str) {
        println!();
        println!(
            "## spindle-bench scale — {} cores, load (1/5/15 min) {load_start} at the start, {load_end} at the end",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        if !self.memory.is_empty() {
            println!();
            println!(
                "| keys | RSS per address, filled (changes tracked) | after its checkpoint | of which key + value | overhead per address |"
            );
            println!("|---|---|---|---|---|");
            for m in &self.memory {
                println!(
                    "| {} | {:.0} B | {:.0} B | {:.0} B | {:.0} B |",
                    m.keys,
                    m.per_address_filled(),
                    m.per_address_checkpointed(),
                    m.state_per_address,
                    m.per_address_checkpointed() - m.state_per_address
                );
            }
        }
        if !self.runs.is_empty() {
            println!();
            println!(
                "Checkpoints: after a full first one, {} incremental ones, {} % of the keys rewritten before each, every {:?}.",
                args.checkpoints, args.change_percent, args.interval
            );
            println!();
            println!(
                "| keys | storage | workers | fill | first (full) checkpoint | changed per checkpoint | written per checkpoint p50 / max | written ÷ changed | duration p50 / p99 | capture pause p50 / p99 | over the interval |"
            );
            println!("|---|---|---|---|---|---|---|---|---|---|---|");
            for r in &self.runs {
                let mut w: Vec<u64> = r.written().collect();
                w.sort();
                let changed = r.rounds.first().map_or((0, 0), |x| (x.changed_keys, x.changed_bytes));
                println!(
                    "| {} | {:?} | {} | {:.1} s | {:.1} MB in {:.0} ms | {} keys, {:.2} MB | {:.2} / {:.2} MB | {:.2} | {:.0} / {:.0} ms | {:.1} / {:.1} ms | {} of {} |",
                    r.keys,
                    r.storage,
                    r.writers,
                    r.fill.as_secs_f64(),
                    r.first.written as f64 / 1e6,
                    ms(r.first.duration),
                    changed.0,
                    changed.1 as f64 / 1e6,
                    w.get(w.len() / 2).copied().unwrap_or(0) as f64 / 1e6,
                    w.last().copied().unwrap_or(0) as f64 / 1e6,
                    r.write_ratio(),
                    ms(pct(r.rounds.iter().map(|x| x.checkpoint.duration), 0.5)),
                    ms(r.p99()),
                    ms(pct(r.rounds.iter().map(|x| x.checkpoint.capture), 0.5)),
                    ms(pct(r.rounds.iter().map(|x| x.checkpoint.capture), 0.99)),
                    r.late,
                    r.rounds.len()
                );
            }
            println!();
            println!(
                "Restores of the newest checkpoint (an incremental chain), each worker in turn in this process; RSS growth = peak − before, state kept = after − before."
            );
            println!();
            println!(
                "| keys | storage | from → to | per worker: time | bytes read | read ÷ chain bytes | read ÷ key + value bytes | RSS growth at peak / state kept, per worker |"
            );
            println!("|---|---|---|---|---|---|---|---|");
            for r in &self.runs {
                for x in &r.restores {
                    let read: u64 = x.workers.iter().map(|w| w.bytes_read).sum();
                    let list = |f: &dyn Fn(&super::RestoredWorker) -> String| {
                        x.workers.iter().map(f).collect::<Vec<_>>().join(", ")
                    };
                    println!(
                        "| {} | {:?} | {} → {} | {} | {} | {:.3} | {:.3} | {} |",
                        r.keys,
                        r.storage,
                        r.writers,
                        x.to,
                        list(&|w| format!("{:.0} ms", ms(w.took))),
                        list(&|w| format!("{:.1} MB", w.bytes_read as f64 / 1e6)),
                        read as f64 / r.chain_bytes.max(1) as f64,
                        read as f64 / r.logical_bytes.max(1) as f64,
                        list(&|w| format!(
                            "{:.0} / {:.0} MiB",
                            mib(w.rss_peak.saturating_sub(w.rss_before)),
                            mib(w.rss_after.saturating_sub(w.rss_before))
                        )),
                    );
                }
            }
        }
        if let Some(t) = &self.ttl {
            println!();
            println!(
                "TTL: {} keys expiring {:?} after their write; RSS at the start of the part {:.0} MiB.",
                t.keys,
                t.ttl,
                mib(t.rss_start)
            );
            println!();
            println!("| step | addresses | checkpoint chains (a restore reads) | written | RSS |");
            println!("|---|---|---|---|---|");
            for r in &t.rows {
                println!(
                    "| {} | {} | {:.1} MB | {:.1} MB | {:.0} MiB |",
                    r.step,
                    r.addresses,
                    r.chain_bytes as f64 / 1e6,
                    r.written as f64 / 1e6,
                    mib(r.rss)
                );
            }
        }
        if let Some(k) = &self.recovery {
            println!();
            println!(
                "| kill -9 with {} keys of state | all workers on the new generation | first new completion at the egress |",
                args.recovery_keys
            );
            println!("|---|---|---|");
            for x in k {
                println!(
                    "| {} | {:.0} ms | {:.0} ms |",
                    if x.coordinator {
                        "the coordinator"
                    } else {
                        "a non-coordinator"
                    },
                    ms(x.all_ready),
                    ms(x.first_completion)
                );
            }
        }
        self.targets(args);
    }

    fn targets(&self, args: &ScaleArgs) {
        println!();
        println!("| target | measured | met |");
        println!("|---|---|---|");
        let line = |target: &str, measured: String, met: bool| {
            println!("| {target} | {measured} | {} |", if met { "yes" } else { "NO" });
        };
        if let Some(worst) = self
            .runs
            .iter()
            .max_by(|a, b| a.write_ratio().total_cmp(&b.write_ratio()))
        {
            line(
                "bytes written ≤ 2 × bytes changed",
                format!(
                    "worst {:.2} × ({} keys, {:?}, {} worker(s))",
                    worst.write_ratio(),
                    worst.keys,
                    worst.storage,
                    worst.writers
                ),
                worst.write_ratio() <= 2.0,
            );
        }
        let largest = self.runs.iter().map(|r| r.keys).max();
        for r in self.runs.iter().filter(|r| Some(r.keys) == largest) {
            line(
                &format!("checkpoint p99 < 1 s at {} keys", r.keys),
                format!(
                    "{:.0} ms ({:?}, {} worker(s), {} checkpoints)",
                    ms(r.p99()),
                    r.storage,
                    r.writers,
                    r.rounds.len()
                ),
                r.p99() < Duration::from_secs(1),
            );
        }
        let ratios = self.runs.iter().flat_map(|r| {
            r.restores.iter().map(move |x| {
                let read: u64 = x.workers.iter().map(|w| w.bytes_read).sum();
                (read as f64 / r.chain_bytes.max(1) as f64, r, x.to)
            })
        });
        if let Some((worst, r, to)) = ratios.max_by(|a, b| a.0.total_cmp(&b.0)) {
            line(
                "cluster-wide restore reads ≤ 1.1 × total state (bytes of the referenced state sections)",
                format!(
                    "worst {worst:.3} × ({} keys, {:?}, {} → {to})",
                    r.keys, r.storage, r.writers
                ),
                worst <= 1.1,
            );
        }
        if let Some(k) = &self.recovery {
            let worst = k.iter().map(|x| x.first_completion).max().unwrap_or_default();
            line(
                &format!("resumed processing < 2 s after kill -9 at {} keys", args.recovery_keys),
                format!("worst {:.0} ms of {} kills", ms(worst), k.len()),
                worst < Duration::from_secs(2),
            );
        }
        for m in &self.memory {
            let over = m.per_address_checkpointed() - m.state_per_address;
            line(
                &format!("memory per idle address < 200 B plus its state ({} keys)", m.keys),
                format!("{over:.0} B + {:.0} B of key and value", m.state_per_address),
                over < 200.0,
            );
        }
    }
}
