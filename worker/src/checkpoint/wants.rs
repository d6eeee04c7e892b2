//! Group commit: tells the coordinator that something on this worker (a durable
//! acknowledgement, a held egress record) waits for a checkpoint, so it starts one after
//! `checkpoint.minPause` instead of at the next interval. The partition raises the epoch it
//! wants in a watch channel, at most once per epoch; this task forwards the newest value, so
//! wants that arrive while a call is under way coalesce into one.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::coordinator::Event;
use crate::node::Node;
use crate::peer::proto::{WantCheckpoint, control_request};

pub async fn run(node: Arc<Node>, generation: u64, mut wants: watch::Receiver<u64>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            changed = wants.changed() => if changed.is_err() {
                return;
            },
            _ = stop.wait_for(|s| *s) => return,
        }
        let checkpoint = *wants.borrow_and_update();
        if let Some(coordinator) = &node.coordinator {
            let _ = coordinator.send(Event::Want { generation, checkpoint });
            continue;
        }
        let kind = control_request::Kind::Want(WantCheckpoint { generation, checkpoint });
        let call = node.control.call(0, kind, Duration::from_secs(2));
        let result = tokio::select! {
            r = call => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        // A lost want only delays the checkpoint to the next interval.
        if let Err(status) = result {
            tracing::debug!(checkpoint, %status, "telling the coordinator about a wanted checkpoint failed");
        }
    }
}
