//! What worker 0 (the checkpoint coordinator) reports beyond checkpoint progress — rollbacks,
//! failed checkpoints, a data-loss fallback — turned into status fields and the news to
//! announce. Pure: the previous status and the newest `/status` in, totals and news out.
//!
//! The coordinator's counters live in its process: a new process (another `incarnation`)
//! starts them at 0, so they are summed over incarnations here. A worker that does not report
//! a field (an older image) changes nothing. A data-loss report stays in the status until a
//! newer one replaces it, and keeps the application `Degraded` until acknowledged with the
//! annotation [`DATA_LOSS_ACK_ANNOTATION`] set to its `atMs`.

use crate::resource::{ApplicationStatus, CoordinatorSample, DataLoss};
use crate::worker_admin::WorkerStatus;

/// `kubectl annotate sapp A spindle.dev/data-loss-acknowledged=<atMs>` clears `Degraded`.
pub const DATA_LOSS_ACK_ANNOTATION: &str = "spindle.dev/data-loss-acknowledged";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    pub rollbacks: u64,
    pub checkpoints_failed: u64,
    pub sample: Option<CoordinatorSample>,
    pub data_loss: Option<DataLoss>,
    /// Rollbacks and failed checkpoints not counted before.
    pub new_rollbacks: u64,
    pub new_failures: u64,
    /// The data-loss report is one not seen before.
    pub new_data_loss: bool,
}

/// `now`: worker 0's `/status`, when it could be read this time.
pub fn observe(previous: &ApplicationStatus, now: Option<&WorkerStatus>) -> Observation {
    let kept = Observation {
        rollbacks: previous.rollbacks,
        checkpoints_failed: previous.checkpoints_failed,
        sample: previous.coordinator,
        data_loss: previous.data_loss,
        ..Observation::default()
    };
    let Some(now) = now else {
        return kept;
    };
    let last = previous.coordinator;
    let incarnation = now.incarnation.unwrap_or(0);
    let same_process = last.is_some_and(|l| l.incarnation == incarnation);
    let news = |reported: Option<u64>, before: fn(&CoordinatorSample) -> u64| -> (u64, u64) {
        // (what to remember, how many are new)
        match (reported, last) {
            (None, Some(l)) if same_process => (before(&l), 0),
            (None, _) => (0, 0),
            (Some(n), Some(l)) if same_process => (n, n.saturating_sub(before(&l))),
            (Some(n), _) => (n, n),
        }
    };
    let (rollbacks, new_rollbacks) = news(now.rollbacks, |s| s.rollbacks);
    let (failed, new_failures) = news(now.checkpoints_failed, |s| s.checkpoints_failed);
    let new_data_loss = now.data_loss.is_some() && now.data_loss != previous.data_loss;
    Observation {
        rollbacks: previous.rollbacks + new_rollbacks,
        checkpoints_failed: previous.checkpoints_failed + new_failures,
        sample: Some(CoordinatorSample {
            incarnation,
            rollbacks,
            checkpoints_failed: failed,
        }),
        data_loss: now.data_loss.or(previous.data_loss),
        new_rollbacks,
        new_failures,
        new_data_loss,
    }
}

/// The `Degraded` message while a data-loss report is not acknowledged.
pub fn unacknowledged_loss(loss: Option<&DataLoss>, acknowledged: Option<&str>) -> Option<String> {
    let loss = loss?;
    if acknowledged == Some(loss.at_ms.to_string().as_str()) {
        return None;
    }
    Some(format!(
        "a restore fell back past damaged checkpoints: checkpoints {}..={} were lost and {} was restored, so what they held (state changes, released output, durable acknowledgements) is gone; acknowledge with the annotation {DATA_LOSS_ACK_ANNOTATION}={}",
        loss.lost_from, loss.lost_to, loss.restored, loss.at_ms
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(incarnation: Option<u64>, rollbacks: Option<u64>, failed: Option<u64>) -> WorkerStatus {
        WorkerStatus {
            generation: 3,
            completed_checkpoint: 10,
            incarnation,
            rollbacks,
            checkpoints_failed: failed,
            data_loss: None,
        }
    }

    fn after(previous: &ApplicationStatus, o: &Observation) -> ApplicationStatus {
        ApplicationStatus {
            rollbacks: o.rollbacks,
            checkpoints_failed: o.checkpoints_failed,
            coordinator: o.sample,
            data_loss: o.data_loss,
            ..previous.clone()
        }
    }

    #[test]
    fn counters_are_summed_over_coordinator_processes() {
        let s0 = ApplicationStatus::default();
        let o = observe(&s0, Some(&status(Some(7), Some(2), Some(1))));
        assert_eq!(
            (o.rollbacks, o.new_rollbacks, o.checkpoints_failed, o.new_failures),
            (2, 2, 1, 1)
        );
        let s1 = after(&s0, &o);
        // The same process: only the difference is new.
        let o = observe(&s1, Some(&status(Some(7), Some(3), Some(1))));
        assert_eq!((o.rollbacks, o.new_rollbacks, o.new_failures), (3, 1, 0));
        let s2 = after(&s1, &o);
        // Not asked this time: nothing changes.
        assert_eq!(observe(&s2, None).rollbacks, 3);
        assert_eq!(observe(&s2, None).new_rollbacks, 0);
        // A new coordinator process starts at 0: all it reports is new.
        let o = observe(&s2, Some(&status(Some(8), Some(1), Some(0))));
        assert_eq!((o.rollbacks, o.new_rollbacks, o.checkpoints_failed), (4, 1, 1));
        // An older worker that reports no counters: nothing new, nothing lost.
        let s3 = after(&s2, &o);
        let o = observe(&s3, Some(&status(Some(8), None, None)));
        assert_eq!((o.rollbacks, o.new_rollbacks, o.checkpoints_failed), (4, 0, 1));
        let o = observe(&s3, Some(&status(None, None, None)));
        assert_eq!((o.rollbacks, o.new_rollbacks), (4, 0));
    }

    #[test]
    fn data_loss_is_news_once_and_degrades_until_acknowledged() {
        let loss = DataLoss {
            lost_from: 5,
            lost_to: 6,
            restored: 4,
            at_ms: 1_700_000_000_000,
        };
        let mut w = status(Some(1), Some(1), Some(0));
        w.data_loss = Some(loss);
        let o = observe(&ApplicationStatus::default(), Some(&w));
        assert!(o.new_data_loss);
        let s = after(&ApplicationStatus::default(), &o);
        assert!(!observe(&s, Some(&w)).new_data_loss, "the same report again is no news");
        // A new coordinator process no longer reports it: the status keeps it.
        let o = observe(&s, Some(&status(Some(2), Some(0), Some(0))));
        assert_eq!(o.data_loss, Some(loss));
        let message = unacknowledged_loss(Some(&loss), None).unwrap();
        assert!(
            message.contains("checkpoints 5..=6 were lost and 4 was restored"),
            "{message}"
        );
        assert!(
            message.contains("spindle.dev/data-loss-acknowledged=1700000000000"),
            "{message}"
        );
        assert_eq!(unacknowledged_loss(Some(&loss), Some("1700000000000")), None);
        assert!(unacknowledged_loss(Some(&loss), Some("1")).is_some());
        assert_eq!(unacknowledged_loss(None, None), None);
    }
}
