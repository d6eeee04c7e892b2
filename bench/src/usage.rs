//! CPU time and memory of processes, from `/proc` (Linux).

use std::time::Instant;

/// One process at one moment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    /// User + system CPU time, seconds.
    pub cpu: f64,
    /// Resident set size, bytes.
    pub rss: u64,
}

/// `/proc/<pid>/stat` fields 14 and 15 (utime, stime, in clock ticks) and `VmRSS`.
pub(crate) fn sample(pid: u32) -> Option<Sample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let hz = rustix::param::clock_ticks_per_second() as f64;
    Some(Sample {
        cpu: ticks as f64 / hz,
        rss: rss_kb * 1024,
    })
}

/// Samples of several processes at one moment.
pub(crate) struct Snapshot {
    pub at: Instant,
    pub samples: Vec<Option<Sample>>,
}

pub(crate) fn snapshot(pids: &[u32]) -> Snapshot {
    Snapshot {
        at: Instant::now(),
        samples: pids.iter().map(|&p| sample(p)).collect(),
    }
}

/// Per process between two snapshots: CPU as a share of one core (1.0 = one core busy) and
/// the resident memory at the end.
pub(crate) fn between(a: &Snapshot, b: &Snapshot) -> Vec<(f64, u64)> {
    let wall = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
    a.samples
        .iter()
        .zip(&b.samples)
        .map(|(x, y)| match (x, y) {
            (Some(x), Some(y)) => ((y.cpu - x.cpu) / wall, y.rss),
            _ => (0.0, 0),
        })
        .collect()
}
