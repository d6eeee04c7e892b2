//! The controller: watches `StatefulApplication`s and the objects they own, and reconciles
//! each application by a finalizer step dispatching to [`apply`] or [`cleanup`].

pub mod apply;
pub mod cleanup;
pub mod rescale;
pub mod rescaling;
pub mod ssa;
pub mod status;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::Patch;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::Error;
use crate::context::{Context, patch_params};
use crate::resource::StatefulApplication;
use cleanup::Cleanup;

/// Kept on every application until its cleanup is done.
pub const FINALIZER: &str = "spindle.dev/cleanup";

/// One reconciliation. Without the finalizer, it is added first (so that a deletion always
/// runs the cleanup); while the application is being deleted, the cleanup runs until done and
/// then the finalizer goes; otherwise the spec is applied.
pub async fn reconcile(app: Arc<StatefulApplication>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let result = reconcile_inner(&app, &ctx).await;
    ctx.metrics
        .reconciled(started.elapsed(), result.as_ref().err().map(Error::metric_label));
    result
}

async fn reconcile_inner(app: &StatefulApplication, ctx: &Context) -> Result<Action, Error> {
    let namespace = app.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<StatefulApplication> = Api::namespaced(ctx.client.clone(), &namespace);
    let has_finalizer = app.finalizers().iter().any(|f| f == FINALIZER);
    match (app.metadata.deletion_timestamp.is_some(), has_finalizer) {
        (false, false) => {
            let app = set_finalizer(&api, app, true).await?;
            apply::apply(&app, ctx).await
        }
        (false, true) => apply::apply(app, ctx).await,
        (true, true) => match cleanup::cleanup(app, ctx).await? {
            Cleanup::Done => {
                set_finalizer(&api, app, false).await?;
                Ok(Action::await_change())
            }
            Cleanup::Wait(action) => Ok(action),
        },
        (true, false) => Ok(Action::await_change()),
    }
}

/// Adds or removes [`FINALIZER`], keeping any other finalizer. The resourceVersion in the
/// patch makes it fail (409) instead of overwriting a list someone changed meanwhile.
async fn set_finalizer(
    api: &Api<StatefulApplication>,
    app: &StatefulApplication,
    present: bool,
) -> Result<StatefulApplication, Error> {
    let mut finalizers: Vec<String> = app.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    if present {
        finalizers.push(FINALIZER.into());
    }
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": app.resource_version()}});
    let name = app
        .metadata
        .name
        .as_deref()
        .ok_or(Error::MissingField("metadata.name"))?;
    Ok(api.patch(name, &patch_params(), &Patch::Merge(&patch)).await?)
}

/// A failed reconciliation is retried soon; a conflict (someone else wrote first) sooner.
pub fn error_policy(app: Arc<StatefulApplication>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(app = %app.name_any(), %error, "reconciliation failed");
    if error.is_conflict() {
        Action::requeue(Duration::from_secs(1))
    } else {
        Action::requeue(Duration::from_secs(15))
    }
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    let client = ctx.client.clone();
    // Only the objects the operator made; the label is on every one of them.
    let owned = || watcher::Config::default().labels("app.kubernetes.io/managed-by=spindle-operator");
    Controller::new(
        Api::<StatefulApplication>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(Api::<StatefulSet>::all(client.clone()), owned())
    .owns(Api::<Deployment>::all(client.clone()), owned())
    .owns(Api::<Service>::all(client.clone()), owned())
    .owns(Api::<ConfigMap>::all(client.clone()), owned())
    .owns(Api::<PodDisruptionBudget>::all(client), owned())
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, ctx)
    .for_each(|result| async move {
        match result {
            Ok((obj, _)) => tracing::debug!(app = %obj.name, "reconciled"),
            Err(e) => tracing::debug!(error = %e, "reconcile stream"),
        }
    })
    .await;
}
