//! Writes this worker's finished snapshots to the store, one at a time and off the
//! partition's loop, and tells the coordinator how it went. A failed upload fails that
//! checkpoint only; the next one is a new attempt.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::coordinator::Event;
use super::snapshot::{PartMeta, Snapshot};
use super::store::PartInfo;
use crate::node::Node;
use crate::peer::proto::{PartWritten, control_request};

pub async fn run(
    node: Arc<Node>,
    generation: u64,
    mut snapshots: mpsc::UnboundedReceiver<Snapshot>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(store) = node.store.clone() else {
        return;
    };
    let meta = PartMeta {
        application: node.app.name.clone(),
        generation,
        worker: node.me(),
        workers: node.cluster.workers(),
        key_groups: node.app.key_groups,
    };
    loop {
        let snapshot = tokio::select! {
            s = snapshots.recv() => match s {
                Some(s) => s,
                None => return,
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        let n = snapshot.checkpoint;
        let started = Instant::now();
        let m = meta.clone();
        // Encoding walks every value: keep it off the async worker threads.
        let bytes = match tokio::task::spawn_blocking(move || snapshot.encode(&m)).await {
            Ok(b) => b,
            Err(e) => {
                report(&node, generation, n, Err(format!("encoding the part failed: {e}"))).await;
                continue;
            }
        };
        let size = bytes.len();
        let upload = tokio::select! {
            r = store.put_part(n, generation, meta.worker, bytes) => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        let result = match upload {
            Ok(info) => {
                node.metrics.checkpoint_part_bytes.set(size as i64);
                node.metrics
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
                node.metrics.part_upload_failures.inc();
                tracing::warn!(checkpoint = n, error = %e, "writing this worker's part failed; the checkpoint fails, the next one retries");
                Err(e.to_string())
            }
        };
        report(&node, generation, n, result).await;
    }
}

async fn report(node: &Node, generation: u64, checkpoint: u64, result: Result<PartInfo, String>) {
    let worker = node.me();
    if let Some(coordinator) = &node.coordinator {
        let _ = coordinator.send(Event::Part {
            generation,
            checkpoint,
            worker,
            result,
        });
        return;
    }
    let part = match result {
        Ok(info) => PartWritten {
            generation,
            checkpoint,
            error: String::new(),
            key: info.key,
            size: info.size,
            crc32: info.crc32,
        },
        Err(error) => PartWritten {
            generation,
            checkpoint,
            error,
            ..PartWritten::default()
        },
    };
    // A lost report only fails this checkpoint (the coordinator times it out).
    for _ in 0..3 {
        let kind = control_request::Kind::Part(part.clone());
        match node.control.call(0, kind, Duration::from_secs(2)).await {
            Ok(_) => return,
            Err(status) => tracing::debug!(checkpoint, %status, "reporting the part to the coordinator failed"),
        }
    }
}
