//! Writes this worker's finished captures to the store, one at a time and off the
//! partition's loop, and tells the coordinator how it went. A failed upload fails that
//! checkpoint only; the next one is a new attempt.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::codec::{self, PartMeta};
use super::link::CoordinatorLink;
use super::store::CheckpointStore;
use crate::metrics::Metrics;
use crate::partition::Capture;
use crate::stop::CancellationToken;

pub(crate) struct Uploader {
    pub store: CheckpointStore,
    pub meta: PartMeta,
    pub coordinator: CoordinatorLink,
    pub metrics: Arc<Metrics>,
}

impl Uploader {
    pub async fn run(self, mut captures: mpsc::UnboundedReceiver<Capture>, stop: CancellationToken) {
        let (generation, worker) = (self.meta.generation, self.meta.worker);
        loop {
            let capture = tokio::select! {
                c = captures.recv() => match c {
                    Some(c) => c,
                    None => return,
                },
                _ = stop.cancelled() => return,
            };
            let n = capture.checkpoint;
            let clean = capture.egress.is_empty();
            let started = Instant::now();
            let meta = self.meta.clone();
            // Encoding walks every value: keep it off the async worker threads.
            let bytes = match tokio::task::spawn_blocking(move || codec::encode(&capture, &meta)).await {
                Ok(b) => b,
                Err(e) => {
                    let result = Err(format!("encoding the part failed: {e}"));
                    self.coordinator.part(generation, n, worker, result, clean).await;
                    continue;
                }
            };
            let size = bytes.len();
            let upload = tokio::select! {
                r = self.store.put_part(n, generation, worker, bytes) => r,
                _ = stop.cancelled() => return,
            };
            // A checkpoint counts only once every part reads back intact: damage found later is
            // damage after completion (data loss), not a write that never worked.
            let upload = match upload {
                Ok(info) => match self.store.read_part(&info).await {
                    Ok(_) => Ok(info),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            let result = match upload {
                Ok(info) => {
                    self.metrics.checkpoint_part_bytes.set(size as i64);
                    self.metrics
                        .part_upload_seconds
                        .observe(started.elapsed().as_secs_f64());
                    tracing::debug!(
                        checkpoint = n,
                        bytes = size,
                        ms = started.elapsed().as_millis() as u64,
                        "part written"
                    );
                    Ok(info)
                }
                Err(e) => {
                    self.metrics.part_upload_failures.inc();
                    tracing::warn!(checkpoint = n, error = %e, "writing this worker's part failed; the checkpoint fails, the next one retries");
                    Err(e.to_string())
                }
            };
            self.coordinator.part(generation, n, worker, result, clean).await;
        }
    }
}
