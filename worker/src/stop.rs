//! The stop signal, named once: a [`CancellationToken`]. The worker's shutdown is the root
//! token; each generation runs on a child of it, so a rollback (the generation's end) and a
//! shutdown stop the same tasks the same way, and a task checks one token.

use std::time::Duration;

pub use tokio_util::sync::CancellationToken;

/// Waits `d`, or less if `stop` fires first; true when the wait ended without a stop.
pub async fn pause(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => !stop.is_cancelled(),
        _ = stop.cancelled() => false,
    }
}

/// Runs `clean` — a clean stop, which may take a while (a final checkpoint) — unless another
/// Ctrl-C or SIGTERM comes first: that exits the process at once, and the next start recovers
/// as after a crash.
pub async fn unless_signalled_again<T>(clean: impl Future<Output = T>) -> T {
    tokio::select! {
        t = clean => t,
        _ = os_signal() => {
            eprintln!("spindle: stopping now (second signal); the next start recovers from the last complete checkpoint");
            std::process::exit(130);
        }
    }
}

/// Ctrl-C or SIGTERM: how a person or Kubernetes asks a process to stop.
pub async fn os_signal() {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
