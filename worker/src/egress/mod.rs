//! Egresses: functions' egress messages leave the application through sinks, one task each.
//!
//! Exactly-once release (output of epoch n held back until checkpoint n completes) slots in
//! here, between `emit` and the sinks, in the checkpointing release.

mod file;
mod http;
mod record;

use std::collections::HashMap;
use std::sync::Arc;

use spindle_spec::TypeName;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::app::{AppConfig, EgressSink};
use crate::deadletter::DeadLetters;
use crate::message::{Address, Value};
use crate::metrics::Metrics;

pub use record::json_line;

#[derive(Debug, Clone)]
pub struct EgressRecord {
    pub egress: TypeName,
    pub value: Value,
    /// The function address that emitted it.
    pub source: Address,
}

/// Hands records to their sinks. Dropping it lets the sinks drain what they hold and stop.
pub struct EgressHub {
    // Unbounded: the partition must never block on a slow sink (that would stall every
    // address). What sits here is bounded by the ingress admission limit times fan-out, and
    // is visible as `spindle_egress_pending`.
    sinks: HashMap<TypeName, mpsc::UnboundedSender<EgressRecord>>,
    metrics: Arc<Metrics>,
}

#[derive(Clone)]
pub struct SinkContext {
    pub metrics: Arc<Metrics>,
    pub dead_letters: Arc<DeadLetters>,
    /// Also print every record to stdout (local runs).
    pub echo: bool,
}

impl EgressHub {
    /// Starts one task per egress of `app` on `tasks`.
    pub fn start(
        app: &AppConfig,
        ctx: &SinkContext,
        tasks: &mut JoinSet<()>,
    ) -> std::io::Result<EgressHub> {
        let mut sinks = HashMap::new();
        for e in &app.egresses {
            let (tx, rx) = mpsc::unbounded_channel();
            let name = e.typename.to_string();
            match &e.sink {
                EgressSink::File { path } => {
                    let sink = file::FileSink::open(path, name, ctx.clone())?;
                    tasks.spawn(sink.run(rx));
                }
                EgressSink::Http {
                    url,
                    timeout,
                    max_in_flight,
                } => {
                    let sink = http::HttpSink::new(url, *timeout, *max_in_flight, name, ctx.clone())?;
                    tasks.spawn(sink.run(rx));
                }
            }
            sinks.insert(e.typename.clone(), tx);
        }
        Ok(EgressHub {
            sinks,
            metrics: ctx.metrics.clone(),
        })
    }

    /// Queues a record; gives it back when no egress of that name exists.
    pub fn emit(&self, record: EgressRecord) -> Result<(), EgressRecord> {
        let Some(tx) = self.sinks.get(&record.egress) else {
            return Err(record);
        };
        self.metrics.egress_pending.inc();
        tx.send(record).map_err(|e| {
            self.metrics.egress_pending.dec();
            e.0
        })
    }
}
