//! Figures of one configuration and the table they are printed in.

use std::time::Duration;

pub struct Row {
    pub batch: u32,
    pub concurrency: usize,
    pub completed: u64,
    pub elapsed: Duration,
    /// Sorted latencies of completed messages.
    pub latencies: Vec<Duration>,
    /// Mean messages per invocation batch, from the worker's metrics.
    pub mean_batch: f64,
}

impl Row {
    pub fn per_second(&self) -> f64 {
        self.completed as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        crate::harness::percentile(&self.latencies, p)
    }
}

pub fn header() -> String {
    format!(
        "{:>6} {:>6} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "batch", "conc", "msgs", "msgs/s", "p50 ms", "p99 ms", "msgs/batch"
    )
}

pub fn line(r: &Row) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "{:>6} {:>6} {:>10} {:>10.0} {:>10.2} {:>10.2} {:>10.1}",
        r.batch,
        r.concurrency,
        r.completed,
        r.per_second(),
        ms(r.percentile(0.50)),
        ms(r.percentile(0.99)),
        r.mean_batch
    )
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}
