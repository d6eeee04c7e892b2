//! The application every HTTP benchmark runs: the example functions (`example/*` at the
//! harness's function process) behind one HTTP ingress, `example/totals` to the harness's
//! webhook. A pure builder: a benchmark sets only what it measures; what it leaves `None` is
//! left to the spec's defaults.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub(crate) struct BenchApp<'a> {
    pub name: &'a str,
    pub workers: Option<usize>,
    pub max_buffered: Option<u32>,
    pub max_batch: Option<u32>,
    pub max_in_flight: Option<u32>,
    pub checkpoint: Checkpoints<'a>,
}

pub(crate) struct Checkpoints<'a> {
    /// Zero: checkpoints off (egress leaves at once, and a new worker does not resume from
    /// the checkpoints of an earlier configuration).
    pub interval: Duration,
    pub min_pause: Option<Duration>,
    pub storage: Option<&'a Path>,
    pub retained: Option<u32>,
}

impl Checkpoints<'_> {
    pub fn off() -> Self {
        Self::every(Duration::ZERO)
    }

    pub fn every(interval: Duration) -> Self {
        Checkpoints {
            interval,
            min_pause: None,
            storage: None,
            retained: None,
        }
    }
}

impl<'a> BenchApp<'a> {
    pub fn new(name: &'a str) -> Self {
        BenchApp {
            name,
            workers: None,
            max_buffered: None,
            max_batch: None,
            max_in_flight: None,
            checkpoint: Checkpoints::off(),
        }
    }

    pub fn yaml(&self, function_port: u16, webhook: SocketAddr) -> String {
        let line = |key: &str, value: Option<String>, indent: &str| {
            value.map_or(String::new(), |v| format!("{indent}{key}: {v}\n"))
        };
        let c = &self.checkpoint;
        format!(
            "apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {{name: {name}}}
spec:
{workers}{buffered}  functions:
    - typename: example/*
      endpoint: http://127.0.0.1:{function_port}/statefun
{batch}{in_flight}  ingresses:
    - name: web
      http: {{}}
  egresses:
    - typename: example/totals
      http: {{url: \"http://{webhook}/\", maxInFlight: 64}}
  checkpoint:
    interval: {interval}ms
{min_pause}{storage}{retained}",
            name = self.name,
            workers = line("workers", self.workers.map(|n| n.to_string()), "  "),
            buffered = line("maxBufferedMessages", self.max_buffered.map(|n| n.to_string()), "  "),
            batch = line("maxBatchSize", self.max_batch.map(|n| n.to_string()), "      "),
            in_flight = line("maxInFlight", self.max_in_flight.map(|n| n.to_string()), "      "),
            interval = c.interval.as_millis(),
            min_pause = line("minPause", c.min_pause.map(|d| format!("{}ms", d.as_millis())), "    "),
            storage = line("storage", c.storage.map(|p| p.display().to_string()), "    "),
            retained = line("retained", c.retained.map(|n| n.to_string()), "    "),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_fields_are_left_to_the_spec_defaults() {
        let webhook: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let bare = spindle_spec::from_yaml_str(&BenchApp::new("b").yaml(1234, webhook), "bare").unwrap();
        let full = BenchApp {
            workers: Some(3),
            max_buffered: Some(512),
            max_batch: Some(100),
            max_in_flight: Some(64),
            checkpoint: Checkpoints {
                min_pause: Some(Duration::from_millis(2)),
                storage: Some(Path::new("/tmp/ck")),
                retained: Some(3),
                ..Checkpoints::every(Duration::from_secs(1))
            },
            ..BenchApp::new("f")
        };
        let full = spindle_spec::from_yaml_str(&full.yaml(1234, webhook), "full").unwrap();
        let (b, f) = (
            serde_json::to_value(&bare.spec).unwrap(),
            serde_json::to_value(&full.spec).unwrap(),
        );
        assert_eq!(b["workers"], 1);
        assert_eq!(f["workers"], 3);
        assert_eq!(f["maxBufferedMessages"], 512);
        assert_eq!(
            (&f["functions"][0]["maxBatchSize"], &f["functions"][0]["maxInFlight"]),
            (&100.into(), &64.into())
        );
        assert_ne!(b["maxBufferedMessages"], f["maxBufferedMessages"]);
        assert_eq!(f["checkpoint"]["retained"], 3);
        assert_eq!(f["checkpoint"]["storage"], "/tmp/ck");
        assert_eq!(b["functions"][0]["endpoint"], "http://127.0.0.1:1234/statefun");
        assert_eq!(b["egresses"][0]["http"]["url"], "http://127.0.0.1:9/");
    }
}
