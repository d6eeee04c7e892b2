//! How a worker reaches the coordinator: on worker 0 it is a channel into the coordinator's
//! own loop, elsewhere the control RPC to worker 0. The checkpoint tasks of a generation (the
//! uploader, group commit) depend on this, not on the process around them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::control::client::ControlClients;
use super::control::report;
use super::coordinator::Event;
use super::manifest::PartInfo;
use crate::proto::control::{Leave, PartWritten, WantCheckpoint, control_request};

#[derive(Clone)]
pub(crate) enum CoordinatorLink {
    /// This worker is the coordinator.
    Local(mpsc::UnboundedSender<Event>),
    /// The coordinator is worker 0, over the control RPC.
    Remote(Arc<ControlClients>),
}

impl CoordinatorLink {
    /// This worker's part of `checkpoint` was written (or failed). A lost report only fails
    /// this checkpoint (the coordinator times it out), so it is tried a few times, not forever.
    pub async fn part(
        &self,
        generation: u64,
        checkpoint: u64,
        worker: u32,
        result: Result<PartInfo, String>,
        clean: bool,
    ) {
        let clients = match self {
            CoordinatorLink::Local(tx) => {
                let _ = tx.send(Event::Part {
                    generation,
                    checkpoint,
                    worker,
                    result,
                    clean,
                });
                return;
            }
            CoordinatorLink::Remote(clients) => clients,
        };
        let part = match result {
            Ok(info) => {
                let mut part = PartWritten {
                    generation,
                    checkpoint,
                    error: String::new(),
                    key: info.key.clone(),
                    size: info.size,
                    crc32: info.crc32,
                    clean,
                    ..PartWritten::default()
                };
                report::to_wire(&info, &mut part);
                part
            }
            Err(error) => PartWritten {
                generation,
                checkpoint,
                error,
                ..PartWritten::default()
            },
        };
        for _ in 0..3 {
            let kind = control_request::Kind::Part(part.clone());
            match clients.call(0, kind, Duration::from_secs(2)).await {
                Ok(_) => return,
                Err(status) => tracing::debug!(checkpoint, %status, "reporting the part to the coordinator failed"),
            }
        }
    }

    /// This worker is stopping (its input is stopped): the coordinator takes checkpoints until
    /// one holds nothing of it left to send, then tells it to exit. False when the
    /// coordinator could not be told.
    pub async fn leave(&self, worker: u32) -> bool {
        match self {
            CoordinatorLink::Local(tx) => tx.send(Event::Leaving { worker }).is_ok(),
            CoordinatorLink::Remote(clients) => {
                for _ in 0..5 {
                    let kind = control_request::Kind::Leave(Leave {});
                    match clients.call(0, kind, Duration::from_secs(2)).await {
                        Ok(_) => return true,
                        Err(status) => tracing::debug!(%status, "telling the coordinator this worker stops failed"),
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                false
            }
        }
    }

    /// Group commit: something here waits for `checkpoint`. A lost want only delays the
    /// checkpoint to the next interval.
    pub async fn want(&self, generation: u64, checkpoint: u64) {
        match self {
            CoordinatorLink::Local(tx) => {
                let _ = tx.send(Event::Want { generation, checkpoint });
            }
            CoordinatorLink::Remote(clients) => {
                let kind = control_request::Kind::Want(WantCheckpoint { generation, checkpoint });
                if let Err(status) = clients.call(0, kind, Duration::from_secs(2)).await {
                    tracing::debug!(checkpoint, %status, "telling the coordinator about a wanted checkpoint failed");
                }
            }
        }
    }
}
