//! Taking a savepoint on worker 0 (`POST /savepoints/{name}`, `spindle checkpoints save`,
//! the operator's `spec.checkpoint.savepointRequest`): the coordinator is asked to start a
//! checkpoint now, and the first checkpoint triggered after the request to complete is
//! recorded under the name. Retention keeps it, and every object it references, until the
//! record is deleted.

use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::Progress;
use super::coordinator::Event;
use super::store::{CheckpointStore, Savepoint, StoreError};
use crate::clock::now_ms;

#[derive(Debug, thiserror::Error)]
pub enum SavepointError {
    #[error("{0}")]
    BadName(String),
    #[error("savepoint `{0}` exists already (names are never reused)")]
    Exists(String),
    #[error("no checkpoint completed within {0:?} (see the worker's log and /status)")]
    Timeout(Duration),
    #[error("the worker is stopping")]
    Stopping,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What worker 0's admin endpoint needs to take savepoints.
#[derive(Clone)]
pub(crate) struct Savepoints {
    pub store: CheckpointStore,
    pub coordinator: mpsc::UnboundedSender<Event>,
    pub progress: watch::Receiver<Progress>,
    /// How long to wait for a checkpoint to complete.
    pub limit: Duration,
}

impl Savepoints {
    pub async fn take(&self, name: &str) -> Result<Savepoint, SavepointError> {
        spindle_spec::check_savepoint_name(name).map_err(SavepointError::BadName)?;
        if self.store.savepoint(name).await?.is_some() {
            return Err(SavepointError::Exists(name.to_string()));
        }
        let asked = now_ms();
        let deadline = Instant::now() + self.limit;
        let mut progress = self.progress.clone();
        let mut after = progress.borrow().completed;
        loop {
            // Starts one now unless one is running; the loop asks again once it completes.
            if self.coordinator.send(Event::Eager).is_err() {
                return Err(SavepointError::Stopping);
            }
            let waited = tokio::time::timeout_at(deadline.into(), progress.wait_for(|p| p.completed > after))
                .await
                .map(|r| r.map(|p| *p));
            let n = match waited {
                Err(_) => return Err(SavepointError::Timeout(self.limit)),
                Ok(Err(_)) => return Err(SavepointError::Stopping),
                Ok(Ok(p)) => p.completed,
            };
            after = n;
            let m = match self.store.manifest(n).await {
                Ok(m) => m,
                // Retention got there first (many checkpoints in a row): take the next one.
                Err(StoreError::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            // Triggered before the request: it may miss what the caller did just before.
            // (`createdAtMs - durationMs` is no earlier than the trigger; 1 ms of rounding.)
            if m.created_at_ms.saturating_sub(m.duration_ms) + 1 < asked {
                continue;
            }
            let s = Savepoint {
                name: name.to_string(),
                checkpoint: n,
                created_at_ms: now_ms(),
            };
            match self.store.put_savepoint(&s).await {
                Ok(()) => {}
                Err(StoreError::Conflict { .. }) => return Err(SavepointError::Exists(name.to_string())),
                Err(e) => return Err(e.into()),
            }
            // Retention could have dropped it between its completion and the record.
            if let Err(e) = self.store.check(n).await {
                tracing::warn!(savepoint = name, checkpoint = n, error = %e, "the savepoint's checkpoint went before it was recorded; taking the next one");
                self.store.delete_savepoint(name).await?;
                continue;
            }
            tracing::info!(savepoint = name, checkpoint = n, "savepoint taken");
            return Ok(s);
        }
    }
}
