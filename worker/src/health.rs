//! What `/healthz` answers: is this process worth keeping? Not when a task it cannot work
//! without ended or panicked, and not when it has been fenced — the coordinator runs a newer
//! generation and this worker has not been restored into it for a long while (it was stopped
//! or cut off, and the others went on without it). Kubernetes' liveness probe restarts such a
//! worker; `spindle run` restarts a worker process that exits.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::stop::CancellationToken;

pub struct Health {
    /// A task that ended or panicked: what and why. Set once.
    failed: Mutex<Option<String>>,
    /// Woken when a task fails.
    failure: Notify,
    /// Since when the coordinator has been in a newer generation than this worker.
    behind_since: Mutex<Option<Instant>>,
    /// Fenced when behind for this long.
    fence_after: Duration,
}

impl Health {
    pub fn new(failure_timeout: Duration) -> Health {
        Health {
            failed: Mutex::new(None),
            failure: Notify::new(),
            behind_since: Mutex::new(None),
            // Long enough for a restore of large state to finish after a rollback.
            fence_after: (failure_timeout * 6).max(Duration::from_secs(30)),
        }
    }

    /// A task this process cannot work without is gone.
    pub fn fail(&self, what: &str, cause: &str) {
        let mut failed = self.failed.lock().expect("health lock");
        if failed.is_none() {
            tracing::error!(task = what, cause, "a task of this worker ended: unhealthy");
            *failed = Some(format!("{what}: {cause}"));
            self.failure.notify_waiters();
            self.failure.notify_one();
        }
    }

    /// Waits until a task fails; its cause.
    pub async fn wait_failed(&self) -> String {
        loop {
            let notified = self.failure.notified();
            if let Some(why) = self.failed() {
                return why;
            }
            notified.await;
        }
    }

    /// The coordinator's heartbeat, with its generation, and this worker's.
    pub fn heard(&self, coordinator: u64, mine: u64) {
        let mut behind = self.behind_since.lock().expect("health lock");
        if coordinator > mine {
            behind.get_or_insert_with(Instant::now);
        } else {
            *behind = None;
        }
    }

    /// `Err(why)` when the process should be restarted.
    pub fn check(&self) -> Result<(), String> {
        if let Some(why) = self.failed.lock().expect("health lock").clone() {
            return Err(why);
        }
        match *self.behind_since.lock().expect("health lock") {
            Some(t) if t.elapsed() > self.fence_after => Err(format!(
                "fenced: the application went on in a newer generation {:?} ago and this worker was not restored into it",
                t.elapsed()
            )),
            _ => Ok(()),
        }
    }

    /// Whether a task failed (the process should exit).
    pub fn failed(&self) -> Option<String> {
        self.failed.lock().expect("health lock").clone()
    }
}

/// Runs `task` as its own tokio task and watches it: if it panics, or ends before `stop`
/// fires, the process is unhealthy (and exits), instead of carrying on without it unnoticed.
pub async fn supervised<F>(health: Arc<Health>, what: &'static str, stop: CancellationToken, task: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let handle = tokio::spawn(task);
    // Aborting the watcher (a dropped task set) aborts the task too.
    let guard = AbortOnDrop(handle.abort_handle());
    let result = handle.await;
    std::mem::forget(guard);
    match result {
        Ok(()) if stop.is_cancelled() => {}
        Ok(()) => health.fail(what, "ended while the worker runs"),
        Err(e) if e.is_panic() => {
            let panic = e.into_panic();
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".into());
            health.fail(what, &format!("panicked: {msg}"));
        }
        Err(_) => {}
    }
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_task_or_a_long_fence_is_unhealthy() {
        let h = Health::new(Duration::from_secs(1));
        assert_eq!(h.check(), Ok(()));
        h.heard(5, 5);
        assert_eq!(h.check(), Ok(()));
        h.heard(6, 5);
        assert_eq!(h.check(), Ok(()), "behind, but not for long");
        *h.behind_since.lock().unwrap() = Some(Instant::now() - Duration::from_secs(60));
        assert!(h.check().unwrap_err().contains("fenced"));
        h.heard(6, 6);
        assert_eq!(h.check(), Ok(()), "restored: not behind any more");
        h.fail("partition", "panicked: boom");
        h.fail("link", "second");
        assert_eq!(
            h.check(),
            Err("partition: panicked: boom".into()),
            "the first cause is kept"
        );
    }

    #[tokio::test]
    async fn a_panicking_or_ending_task_makes_the_process_unhealthy_a_stopped_one_does_not() {
        let h = Arc::new(Health::new(Duration::from_secs(1)));
        let stop = CancellationToken::new();
        supervised(h.clone(), "quiet", stop.clone(), async {}).await;
        assert!(h.failed().unwrap().contains("quiet: ended"));
        let h = Arc::new(Health::new(Duration::from_secs(1)));
        supervised(h.clone(), "sink", stop.clone(), async {
            panic!("assertion failed: header")
        })
        .await;
        assert_eq!(h.wait_failed().await, "sink: panicked: assertion failed: header");
        let h = Arc::new(Health::new(Duration::from_secs(1)));
        stop.cancel();
        supervised(h.clone(), "link", stop, async {}).await;
        assert_eq!(h.check(), Ok(()), "ending at its stop is how a task ends");
    }
}
