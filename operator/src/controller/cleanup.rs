//! Cleanup, while the application is being deleted: stop the workers first (so that none
//! writes a checkpoint afterwards), then keep or delete the checkpoint data as
//! `spec.checkpoint.retentionPolicy` says. Every other object goes with the application
//! through its owner reference.

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::batch::v1::Job;
use kube::Api;
use kube::api::DeleteParams;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use spindle_spec::RetentionPolicy;

use crate::Error;
use crate::builders::{self, Storage};
use crate::context::{Context, post_params};
use crate::metrics::PolicyLabels;
use crate::resource::StatefulApplication;

/// Whether the finalizer may go.
#[derive(Debug)]
pub enum Cleanup {
    Done,
    /// Not yet: look again after this.
    Wait(Action),
}

pub async fn cleanup(app: &StatefulApplication, ctx: &Context) -> Result<Cleanup, Error> {
    let spec = app.to_spec();
    let namespace = spec
        .metadata
        .namespace
        .clone()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let sts_api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let sts_name = builders::statefulset_name(&spec);
    if let Some(sts) = sts_api.get_opt(&sts_name).await? {
        if sts.metadata.deletion_timestamp.is_none() {
            // Foreground: the StatefulSet stays until its pods are gone, so "no StatefulSet"
            // below means no worker runs.
            sts_api.delete(&sts_name, &DeleteParams::foreground()).await?;
            ctx.event(
                app,
                EventType::Normal,
                "StoppingWorkers",
                "Delete",
                "deleting the workers before the checkpoint data is dealt with".into(),
            )
            .await;
        }
        return Ok(Cleanup::Wait(Action::requeue(Duration::from_secs(2))));
    }
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
    let job_name = builders::cleanup_job_name(&spec);
    let storage = builders::checkpoint_storage(&spec, &ctx.config);
    // The application's own root below the storage URL: all the job deletes.
    let url = builders::checkpoint_root(&spec, &ctx.config);
    match (spec.spec.checkpoint.retention_policy, &storage) {
        (RetentionPolicy::Retain, _) | (RetentionPolicy::Delete, Storage::PodLocal(_)) => {
            // A deletion job of an earlier `Delete` that failed: the user chose to keep the data.
            if jobs.get_opt(&job_name).await?.is_some() {
                jobs.delete(&job_name, &DeleteParams::background()).await?;
            }
            let note = match storage {
                Storage::Shared(_) => format!(
                    "checkpoint data of `{}` under {} is kept (retentionPolicy: Retain)",
                    spec.metadata.name,
                    builders::checkpoint_root(&spec, &ctx.config)
                ),
                Storage::PodLocal(_) => "checkpoints were pod-local: they went with the pods".into(),
            };
            ctx.event(app, EventType::Normal, "CheckpointsRetained", "Delete", note)
                .await;
            ctx.metrics
                .deletions
                .get_or_create(&PolicyLabels { policy: "retain" })
                .inc();
            Ok(Cleanup::Done)
        }
        (RetentionPolicy::Delete, Storage::Shared(_)) => match jobs.get_opt(&job_name).await? {
            None => {
                let uid = app.metadata.uid.as_deref().unwrap_or_default();
                jobs.create(&post_params(), &builders::cleanup_job(&spec, &ctx.config, uid))
                    .await?;
                ctx.event(
                    app,
                    EventType::Normal,
                    "DeletingCheckpoints",
                    "Delete",
                    format!("job {job_name} deletes the checkpoint data under {url}"),
                )
                .await;
                Ok(Cleanup::Wait(Action::requeue(Duration::from_secs(5))))
            }
            Some(job) => {
                let status = job.status.unwrap_or_default();
                if status.succeeded.unwrap_or(0) > 0 {
                    jobs.delete(&job_name, &DeleteParams::background()).await?;
                    ctx.event(
                        app,
                        EventType::Normal,
                        "CheckpointsDeleted",
                        "Delete",
                        format!("checkpoint data under {url} deleted"),
                    )
                    .await;
                    ctx.metrics
                        .deletions
                        .get_or_create(&PolicyLabels { policy: "delete" })
                        .inc();
                    return Ok(Cleanup::Done);
                }
                let failed = status
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Failed" && c.status == "True");
                if failed {
                    let note = format!(
                        "job {job_name} could not delete the checkpoint data under {url} (see its pod's log); the application stays until it can, or until retentionPolicy is set to Retain"
                    );
                    ctx.event(app, EventType::Warning, "CheckpointDeletionFailed", "Delete", note)
                        .await;
                    // Try again later with a fresh job: the storage may be back.
                    jobs.delete(&job_name, &DeleteParams::background()).await?;
                    return Ok(Cleanup::Wait(Action::requeue(Duration::from_secs(60))));
                }
                Ok(Cleanup::Wait(Action::requeue(Duration::from_secs(5))))
            }
        },
    }
}
