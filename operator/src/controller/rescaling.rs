//! The effects of one rescale step ([`super::rescale::next_step`] decides which): the
//! `status.rescale` record it leaves, the StatefulSet patch that stops the workers, its events
//! and the condition it reports. Applying the objects for the current count (steps `Steady`
//! and `Start`) stays with the caller, which writes them for every reconciliation anyway.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::Patch;
use kube::runtime::events::EventType;
use serde_json::json;
use spindle_spec::StatefulApplication as Spec;

use super::rescale::{Running, Step, checkpoint_deadline};
use super::ssa;
use crate::Error;
use crate::builders;
use crate::context::{Context, patch_params};
use crate::resource::{Rescale, StatefulApplication};

/// What the operator saw of the workers before deciding the step.
pub struct Observed<'a> {
    /// `spec.workers`.
    pub desired: u32,
    pub running: Option<Running>,
    /// Worker 0's newest completed checkpoint, when it could be asked.
    pub completed: Option<u64>,
    /// Why worker 0 could not be asked, when it was and could not.
    pub worker_error: Option<String>,
    /// The rescale recorded in the status by an earlier reconciliation.
    pub previous: Option<&'a Rescale>,
}

/// What a step leaves for the status.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The record for `status.rescale`: `None` once no change of count is under way.
    pub rescale: Option<Rescale>,
    /// The StatefulSet as stored, when the step wrote it.
    pub statefulset: Option<StatefulSet>,
    /// A step under way: the reason and message of `Progressing`.
    pub progress: Option<(&'static str, String)>,
    /// Why the step cannot go on (`Degraded`, reason `RescaleBlocked`).
    pub blocked: Option<String>,
}

/// The rescale record carried over from the status: only while the StatefulSet still runs
/// another count than `desired` and the record is for `desired`. Its baseline checkpoint is
/// taken the first time worker 0 answers.
pub fn carried(
    previous: Option<&Rescale>,
    running: Option<Running>,
    desired: u32,
    completed: Option<u64>,
) -> Option<Rescale> {
    let mut rescale = previous
        .cloned()
        .filter(|r| running.is_some_and(|run| run.layout != desired) && r.to == desired);
    if let Some(r) = rescale.as_mut()
        && r.after_checkpoint.is_none()
    {
        r.after_checkpoint = completed;
    }
    rescale
}

/// Performs `step`'s effects, given the record [`carried`] over.
pub async fn take(
    step: &Step,
    seen: &Observed<'_>,
    rescale: Option<Rescale>,
    app: &StatefulApplication,
    spec: &Spec,
    ctx: &Context,
    now: Timestamp,
) -> Result<Outcome, Error> {
    let desired = seen.desired;
    let from = seen.running.map_or(0, |r| r.layout);
    let new_record = || Rescale {
        from,
        to: desired,
        after_checkpoint: seen.completed,
        checkpoint: None,
        started: now.to_string(),
    };
    match *step {
        Step::Steady => Ok(Outcome::default()),
        Step::Start => {
            let from = rescale.as_ref().map_or(0, |r| r.from);
            let checkpoint = rescale.as_ref().and_then(|r| r.checkpoint);
            let restores = checkpoint.map_or("the newest checkpoint".to_string(), |n| {
                format!("checkpoint {n} (or a newer one)")
            });
            ctx.event(
                app,
                EventType::Normal,
                "StartingWorkers",
                "Rescale",
                format!("{from} workers stopped; starting {desired}, which restore {restores}"),
            )
            .await;
            ctx.metrics.rescales.inc();
            let progress = Some((
                "StartingWorkers",
                format!("starting {desired} workers, which restore {restores}"),
            ));
            Ok(Outcome {
                progress,
                ..Outcome::default()
            })
        }
        Step::AwaitCheckpoint => {
            let record = rescale.unwrap_or_else(new_record);
            if seen.previous.is_none_or(|r| r.to != desired) {
                ctx.event(app, EventType::Normal, "RescaleStarted", "Rescale", format!("changing from {from} to {desired} workers: waiting for a checkpoint, then stopping the workers and starting {desired}")).await;
            }
            let after = record
                .after_checkpoint
                .map_or("the current one".to_string(), |n| format!("checkpoint {n}"));
            let progress = Some((
                "WaitingForCheckpoint",
                format!("changing from {from} to {desired} workers: waiting for a checkpoint after {after}"),
            ));
            let started: Timestamp = record.started.parse().unwrap_or(now);
            let waited = Duration::try_from(now.duration_since(started)).unwrap_or_default();
            let blocked = (waited > checkpoint_deadline(spec.spec.checkpoint.interval.as_duration())).then(|| {
                let why = seen
                    .worker_error
                    .clone()
                    .unwrap_or_else(|| "worker 0 reports no newer completed checkpoint".to_string());
                format!(
                    "no checkpoint completed in {}s: {why}; the {from} workers keep running",
                    waited.as_secs()
                )
            });
            Ok(Outcome {
                rescale: Some(record),
                statefulset: None,
                progress,
                blocked,
            })
        }
        Step::Stop { checkpoint } => {
            let mut record = rescale.unwrap_or_else(new_record);
            record.checkpoint = checkpoint;
            let why = match checkpoint {
                Some(n) => format!("checkpoint {n} completed"),
                None if spec.spec.checkpoint.interval.0.is_zero() => "checkpoints are off".to_string(),
                None => "no worker is ready, so none can take a checkpoint".to_string(),
            };
            let statefulset = Some(stop_workers(spec, ctx).await?);
            ctx.event(
                app,
                EventType::Normal,
                "StoppingWorkers",
                "Rescale",
                format!("{why}; stopping the {from} workers to start {desired}"),
            )
            .await;
            let progress = Some(("StoppingWorkers", format!("{why}; stopping the {from} workers")));
            Ok(Outcome {
                rescale: Some(record),
                statefulset,
                progress,
                blocked: None,
            })
        }
        Step::Stopping => {
            let pods = seen.running.map_or(0, |r| r.pods);
            let progress = Some(("StoppingWorkers", format!("waiting for {pods} worker pods to stop")));
            Ok(Outcome {
                rescale,
                progress,
                ..Outcome::default()
            })
        }
    }
}

/// The StatefulSet at 0 replicas. A merge patch of the count only: the applied configuration
/// stays the old count's until every worker has stopped. Dropping the applied hash makes the
/// next apply write the StatefulSet in full (also when the count goes back).
async fn stop_workers(spec: &Spec, ctx: &Context) -> Result<StatefulSet, Error> {
    let namespace = spec
        .metadata
        .namespace
        .as_deref()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = json!({
        "metadata": {"annotations": {ssa::APPLIED_HASH_ANNOTATION: null}},
        "spec": {"replicas": 0},
    });
    Ok(api
        .patch(
            &builders::statefulset_name(spec),
            &patch_params(),
            &Patch::Merge(&patch),
        )
        .await?)
}
