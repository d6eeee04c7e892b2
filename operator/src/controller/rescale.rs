//! A change of `spec.workers` as a sequence of steps, decided by a pure function of what the
//! operator observes, so that each reconciliation takes the next step and a restarted
//! operator picks up where the last one stopped.
//!
//! Workers of different counts cannot run side by side (each one's key-group ranges follow
//! from the count, and they all restore one checkpoint together), so a rescale is:
//! 1. wait until a checkpoint newer than the one completed when the change was seen has
//!    completed — a fresh one, which proves the storage works before anything is stopped;
//! 2. stop every worker (StatefulSet at 0 replicas, still configured for the old count);
//! 3. once no worker pod is left, write the configuration for the new count and start that
//!    many workers; they restore the newest checkpoint onto the new count
//!    (docs/checkpoints.md, rescaling).
//!
//! The StatefulSet's `spindle.dev/workers` annotation says which count its configuration is
//! for; only step 3 changes it. Records accepted (not durable) after the last checkpoint are
//! lost as in any failure; durable acknowledgements are not affected.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;

use crate::builders::WORKERS_ANNOTATION;
use crate::resource::Rescale;

/// What the StatefulSet says about the running workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Running {
    /// The worker count the configuration is for.
    pub layout: u32,
    /// `spec.replicas`: 0 once stopping was decided.
    pub replicas: u32,
    /// Pods that exist.
    pub pods: u32,
    pub ready: u32,
}

impl Running {
    pub fn observe(sts: &StatefulSet) -> Running {
        let replicas = sts.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0) as u32;
        let layout = sts
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(WORKERS_ANNOTATION))
            .and_then(|v| v.parse().ok())
            .unwrap_or(replicas);
        let status = sts.status.clone().unwrap_or_default();
        Running {
            layout,
            replicas,
            pods: status.replicas.max(0) as u32,
            ready: status.ready_replicas.unwrap_or(0).max(0) as u32,
        }
    }
}

/// The next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No change of count under way: apply everything for `spec.workers`.
    Steady,
    /// Ask worker 0 for its newest completed checkpoint, and wait for a newer one.
    AwaitCheckpoint,
    /// Stop the workers (a checkpoint completed, or none can: checkpoints off or no worker ready).
    Stop { checkpoint: Option<u64> },
    /// Stopping: wait until no worker pod is left.
    Stopping,
    /// Stopped: start the new count.
    Start,
}

/// `desired`: `spec.workers`; `running`: from the StatefulSet, if there is one;
/// `checkpoints`: whether checkpoints are on; `progress`: the recorded rescale and worker 0's
/// newest completed checkpoint, when it was asked.
pub fn next_step(desired: u32, running: Option<Running>, checkpoints: bool, progress: Option<(&Rescale, u64)>) -> Step {
    let Some(r) = running else {
        return Step::Steady;
    };
    if r.layout == desired {
        return Step::Steady;
    }
    if r.replicas == 0 {
        return if r.pods > 0 { Step::Stopping } else { Step::Start };
    }
    if !checkpoints || r.ready == 0 {
        return Step::Stop { checkpoint: None };
    }
    match progress {
        Some((rescale, completed))
            if rescale.to == desired && rescale.after_checkpoint.is_some_and(|a| completed > a) =>
        {
            Step::Stop {
                checkpoint: Some(completed),
            }
        }
        _ => Step::AwaitCheckpoint,
    }
}

/// How long a rescale may wait for a checkpoint before the application is called Degraded
/// (it keeps waiting: the workers keep running at the old count meanwhile). The coordinator
/// itself fails a checkpoint after `10 s + 10 × interval`.
pub fn checkpoint_deadline(interval: Duration) -> Duration {
    Duration::from_secs(30) + interval * 12
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(layout: u32, replicas: u32, pods: u32, ready: u32) -> Option<Running> {
        Some(Running {
            layout,
            replicas,
            pods,
            ready,
        })
    }

    fn rescale(to: u32, after: Option<u64>) -> Rescale {
        Rescale {
            from: 3,
            to,
            after_checkpoint: after,
            checkpoint: None,
            started: String::new(),
        }
    }

    #[test]
    fn steps_of_a_rescale() {
        assert_eq!(next_step(3, None, true, None), Step::Steady);
        assert_eq!(next_step(3, running(3, 3, 3, 3), true, None), Step::Steady);
        // Seen: the checkpoint completed then is not enough.
        assert_eq!(next_step(2, running(3, 3, 3, 3), true, None), Step::AwaitCheckpoint);
        let r = rescale(2, Some(7));
        assert_eq!(
            next_step(2, running(3, 3, 3, 3), true, Some((&r, 7))),
            Step::AwaitCheckpoint
        );
        assert_eq!(
            next_step(2, running(3, 3, 3, 3), true, Some((&r, 8))),
            Step::Stop { checkpoint: Some(8) }
        );
        // No checkpoint had completed when the change was seen: the first one will do.
        let r = rescale(2, Some(0));
        assert_eq!(
            next_step(2, running(3, 3, 3, 3), true, Some((&r, 0))),
            Step::AwaitCheckpoint
        );
        assert_eq!(
            next_step(2, running(3, 3, 3, 3), true, Some((&r, 1))),
            Step::Stop { checkpoint: Some(1) }
        );
        // Worker 0 could not be asked when the change was seen: no baseline, keep waiting.
        let r = rescale(2, None);
        assert_eq!(
            next_step(2, running(3, 3, 3, 3), true, Some((&r, 5))),
            Step::AwaitCheckpoint
        );
        // A rescale recorded for another count does not count.
        let r = rescale(4, Some(1));
        assert_eq!(
            next_step(2, running(3, 3, 3, 3), true, Some((&r, 9))),
            Step::AwaitCheckpoint
        );
        assert_eq!(next_step(2, running(3, 0, 2, 0), true, None), Step::Stopping);
        assert_eq!(next_step(2, running(3, 0, 0, 0), true, None), Step::Start);
        // Changed back while stopped: start the old count again.
        assert_eq!(next_step(3, running(3, 0, 0, 0), true, None), Step::Steady);
    }

    #[test]
    fn nothing_to_checkpoint_means_stop_at_once() {
        assert_eq!(
            next_step(2, running(3, 3, 3, 0), true, None),
            Step::Stop { checkpoint: None }
        );
        assert_eq!(
            next_step(2, running(3, 3, 3, 3), false, None),
            Step::Stop { checkpoint: None }
        );
    }
}
