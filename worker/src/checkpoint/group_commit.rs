//! Group commit (`checkpoint.minPause`): tells the coordinator that something on this worker
//! (a durable acknowledgement, a held egress record) waits for a checkpoint, so it starts one
//! after the pause instead of at the next interval. The partition raises the epoch it wants in
//! a watch channel, at most once per epoch; this task forwards the newest value, so wants that
//! arrive while a call is under way coalesce into one.

use tokio::sync::watch;

use super::link::CoordinatorLink;
use crate::stop::CancellationToken;

pub(crate) async fn run(
    coordinator: CoordinatorLink,
    generation: u64,
    mut wants: watch::Receiver<u64>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            changed = wants.changed() => if changed.is_err() {
                return;
            },
            _ = stop.cancelled() => return,
        }
        let checkpoint = *wants.borrow_and_update();
        tokio::select! {
            _ = coordinator.want(generation, checkpoint) => {}
            _ = stop.cancelled() => return,
        }
    }
}
