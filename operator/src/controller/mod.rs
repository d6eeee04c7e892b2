//! The controller: watches `StatefulApplication`s and the objects they own, and reconciles
//! each application by a finalizer step dispatching to [`apply`] or [`cleanup`].

pub mod apply;
pub mod certificates;
pub mod cleanup;
pub mod coordinator;
pub mod rescale;
pub mod rescaling;
pub mod savepoint;
pub mod ssa;
pub mod status;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
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

/// Runs the controller until `stop` says true: over every namespace, or — the chart's
/// namespaced mode, where its Roles grant access only there — one controller per namespace
/// in `namespaces`.
pub async fn run(ctx: Arc<Context>, namespaces: &[String], stop: tokio::sync::watch::Receiver<bool>) {
    if namespaces.is_empty() {
        return run_in(ctx, None, stop).await;
    }
    let controllers = namespaces
        .iter()
        .map(|ns| run_in(ctx.clone(), Some(ns.as_str()), stop.clone()));
    futures::future::join_all(controllers).await;
}

async fn run_in(ctx: Arc<Context>, namespace: Option<&str>, mut stop: tokio::sync::watch::Receiver<bool>) {
    fn api<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let client = ctx.client.clone();
    // Only the objects the operator made; the label is on every one of them.
    let owned = || watcher::Config::default().labels("app.kubernetes.io/managed-by=spindle-operator");
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    Controller::new(
        api::<StatefulApplication>(&client, namespace),
        watcher::Config::default(),
    )
    .owns(api::<StatefulSet>(&client, namespace), owned())
    .owns(api::<Deployment>(&client, namespace), owned())
    .owns(api::<Service>(&client, namespace), owned())
    .owns(api::<ConfigMap>(&client, namespace), owned())
    .owns(api::<PodDisruptionBudget>(&client, namespace), owned())
    .owns(api::<NetworkPolicy>(&client, namespace), owned())
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
