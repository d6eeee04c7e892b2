//! Apply: the spec validated, every object built by the pure builders and written with
//! server-side apply, stale objects pruned, a rescale advanced by one step (its effects are
//! `rescaling`'s), the status written. "Not there yet" is a condition and a requeue, never an error.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use spindle_spec::StatefulApplication as Spec;

use super::coordinator::{self, DATA_LOSS_ACK_ANNOTATION, Observation};
use super::rescale::{Running, Step, next_step};
use super::rescaling::{self, Observed, Outcome};
use super::ssa::{self, Existing};
use super::status::{self, Conditions, DEGRADED, READY, Rollout};
use crate::Error;
use crate::builders::{self, CONFIG_HASH_ANNOTATION, Storage};
use crate::context::Context;
use crate::resource::{ApplicationStatus, StatefulApplication};

pub async fn apply(app: &StatefulApplication, ctx: &Context) -> Result<Action, Error> {
    let namespace = app.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<StatefulApplication> = Api::namespaced(ctx.client.clone(), &namespace);
    let spec = app.to_spec();
    if let Err(errors) = spec.validate() {
        return invalid(app, ctx, &api, &errors.to_string()).await;
    }
    let uid = app.metadata.uid.as_deref().ok_or(Error::MissingField("metadata.uid"))?;
    let owner = builders::owner_reference(&spec, uid);
    let previous = app.status.clone().unwrap_or_default();
    let generation_changed = previous.observed_generation != app.metadata.generation;
    let desired = spec.spec.workers;

    let sts_api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let existing = sts_api.get_opt(&builders::statefulset_name(&spec)).await?;
    let running = existing.as_ref().map(Running::observe);

    // Worker 0 coordinates checkpoints: its newest completed one is the application's.
    let worker_status = match running {
        Some(r) if r.ready > 0 => Some(ctx.workers.status(&spec).await),
        _ => None,
    };
    let observed = coordinator::observe(&previous, worker_status.as_ref().and_then(|s| s.as_ref().ok()));
    let workers_answer = worker_status.as_ref().is_some_and(|s| s.is_ok());
    let savepoint = take_savepoint(app, &spec, ctx, &namespace, &previous, workers_answer).await;
    let savepoint_pending = savepoint.as_ref().is_some_and(|s| s.phase == super::savepoint::PENDING);
    let completed = worker_status
        .as_ref()
        .and_then(|s| s.as_ref().ok())
        .map(|s| s.completed_checkpoint);
    let seen = Observed {
        desired,
        running,
        completed,
        worker_error: worker_status
            .as_ref()
            .and_then(|s| s.as_ref().err())
            .map(|e| e.to_string()),
        previous: previous.rescale.as_ref(),
    };
    let rescale = rescaling::carried(seen.previous, running, desired, completed);
    let checkpoints_on = !spec.spec.checkpoint.interval.0.is_zero();
    let step = next_step(desired, running, checkpoints_on, rescale.as_ref().zip(completed));

    let now = Timestamp::now();
    let current = Current::load(&ctx.client, &spec, ctx.first_apply(uid)).await?;
    let functions = apply_independent(&spec, ctx, &owner, uid, &current).await?;
    // Certificates for every worker that runs or is about to, before the pods that mount them.
    let tls_hash = if ctx.config.peer_tls {
        let workers = desired.max(running.map_or(0, |r| r.layout));
        let rolled_out = Rollout::observe(desired, existing.as_ref(), &[]).workers_updated;
        Some(super::certificates::ensure(app, &spec, ctx, &owner, workers, rolled_out, now).await?)
    } else {
        None
    };
    let applied = match step {
        Step::Steady | Step::Start => Some(
            apply_workers(
                &spec,
                ctx,
                &owner,
                existing.as_ref(),
                &current,
                app,
                tls_hash.as_deref(),
            )
            .await?,
        ),
        _ => None,
    };
    let Outcome {
        rescale,
        statefulset,
        progress,
        blocked,
    } = rescaling::take(&step, &seen, rescale, app, &spec, ctx, now).await?;
    let layout = match step {
        Step::Steady | Step::Start => desired,
        _ => running.map_or(desired, |r| r.layout),
    };
    let sts = statefulset.or(applied).or(existing);

    let rollout = Rollout::observe(desired, sts.as_ref(), &functions);
    let acknowledged = app
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(DATA_LOSS_ACK_ANNOTATION));
    let data_loss = coordinator::unacknowledged_loss(observed.data_loss.as_ref(), acknowledged.map(String::as_str));
    let conditions = status::conditions(&rollout, progress.clone(), blocked, data_loss);
    announce(app, ctx, &previous, &conditions, generation_changed).await;
    announce_coordinator(app, ctx, &observed).await;
    if generation_changed && let Storage::PodLocal(_) = builders::checkpoint_storage(&spec, &ctx.config) {
        let note = "checkpoints go to each pod's own data directory and do not survive it: set spec.checkpoint.storage (s3://…) or the operator's default storage".to_string();
        ctx.event(app, EventType::Warning, "PodLocalCheckpoints", "Apply", note)
            .await;
    }
    let last_checkpoint = completed.filter(|c| *c > 0).or(previous.last_checkpoint);
    let last_checkpoint_time = match (last_checkpoint, previous.last_checkpoint) {
        (Some(n), Some(p)) if n == p => previous.last_checkpoint_time.clone(),
        (Some(_), _) => Some(now.to_string()),
        (None, _) => None,
    };
    let new_status = ApplicationStatus {
        observed_generation: app.metadata.generation,
        conditions: status::merge(&previous.conditions, &conditions, app.metadata.generation, now),
        workers: desired,
        replicas: layout,
        selector: builders::selector_string(&spec),
        ready_workers: rollout.ready,
        worker_summary: format!("{}/{}", rollout.ready, desired),
        last_checkpoint,
        last_checkpoint_time,
        rollbacks: observed.rollbacks,
        checkpoints_failed: observed.checkpoints_failed,
        data_loss: observed.data_loss,
        coordinator: observed.sample,
        rescale,
        savepoint,
    };
    status::write(&api, app, new_status).await?;
    Ok(match (progress, step) {
        (Some(_), Step::AwaitCheckpoint) => Action::requeue(
            spec.spec
                .checkpoint
                .interval
                .as_duration()
                .clamp(Duration::from_secs(1), Duration::from_secs(10)),
        ),
        (Some(_), _) => Action::requeue(Duration::from_secs(2)),
        (None, _) if !rollout.complete() || savepoint_pending => Action::requeue(Duration::from_secs(10)),
        // Ready: come back now and then to refresh the last checkpoint.
        (None, _) => Action::requeue(Duration::from_secs(30)),
    })
}

/// The objects of one application, as stored, by kind.
struct Current {
    deployments: Existing<Deployment>,
    services: Existing<Service>,
    config_maps: Existing<ConfigMap>,
    budgets: Existing<PodDisruptionBudget>,
    policies: Existing<NetworkPolicy>,
    /// Apply even what looks unchanged (the first time in this process).
    full: bool,
}

impl Current {
    async fn load(client: &kube::Client, spec: &Spec, full: bool) -> Result<Current, Error> {
        let namespace = spec
            .metadata
            .namespace
            .as_deref()
            .ok_or(Error::MissingField("metadata.namespace"))?;
        let selector = format!(
            "app.kubernetes.io/instance={},app.kubernetes.io/managed-by=spindle-operator",
            spec.metadata.name
        );
        Ok(Current {
            deployments: Existing::load(client, namespace, &selector).await?,
            services: Existing::load(client, namespace, &selector).await?,
            config_maps: Existing::load(client, namespace, &selector).await?,
            budgets: Existing::load(client, namespace, &selector).await?,
            policies: Existing::load(client, namespace, &selector).await?,
            full,
        })
    }
}

fn name_of<K: kube::Resource>(obj: &K) -> String {
    obj.meta().name.clone().unwrap_or_default()
}

/// Everything that does not depend on the worker count; stale function objects pruned.
/// Returns the function Deployments as stored.
async fn apply_independent(
    spec: &Spec,
    ctx: &Context,
    owner: &OwnerReference,
    uid: &str,
    current: &Current,
) -> Result<Vec<Deployment>, Error> {
    let client = &ctx.client;
    let namespace = spec
        .metadata
        .namespace
        .as_deref()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let mut deployments = Vec::new();
    let mut services = BTreeSet::new();
    let mut service = async |s: Service| -> Result<(), Error> {
        let name = name_of(&s);
        ssa::apply(client, &s, current.services.0.get(&name), current.full).await?;
        services.insert(name);
        Ok(())
    };
    for i in 0..spec.spec.functions.len() {
        if let Some(d) = builders::function_deployment(spec, i, &ctx.config, owner) {
            deployments.push(ssa::apply(client, &d, current.deployments.0.get(&name_of(&d)), current.full).await?);
        }
        if let Some(s) = builders::function_service(spec, i, owner) {
            service(s).await?;
        }
    }
    if let Some(s) = builders::ingress_service(spec, owner) {
        service(s).await?;
    }
    service(builders::peer_service(spec, owner)).await?;
    let pdb = builders::pod_disruption_budget(spec, owner);
    ssa::apply(client, &pdb, current.budgets.0.get(&name_of(&pdb)), current.full).await?;
    let mut policies = BTreeSet::new();
    let wanted = [
        builders::worker_network_policy(spec, &ctx.config.network, owner),
        builders::function_network_policy(spec, owner),
    ];
    for p in wanted.into_iter().flatten() {
        ssa::apply(client, &p, current.policies.0.get(&name_of(&p)), current.full).await?;
        policies.insert(name_of(&p));
    }
    let keep: BTreeSet<String> = deployments.iter().map(name_of).collect();
    let mut pruned = ssa::prune(client, namespace, &current.deployments, uid, &keep).await?;
    pruned.extend(ssa::prune(client, namespace, &current.services, uid, &services).await?);
    pruned.extend(ssa::prune(client, namespace, &current.policies, uid, &policies).await?);
    if !pruned.is_empty() {
        tracing::info!(app = %spec.metadata.name, ?pruned, "deleted objects the spec no longer needs");
    }
    Ok(deployments)
}

/// The ConfigMap and StatefulSet for `spec.workers`.
async fn apply_workers(
    spec: &Spec,
    ctx: &Context,
    owner: &OwnerReference,
    existing: Option<&StatefulSet>,
    current: &Current,
    app: &StatefulApplication,
    tls_hash: Option<&str>,
) -> Result<StatefulSet, Error> {
    let cm = builders::config_map(spec, &ctx.config, owner);
    ssa::apply(&ctx.client, &cm, current.config_maps.0.get(&name_of(&cm)), current.full).await?;
    let sts = builders::worker_statefulset(spec, &ctx.config, owner, tls_hash);
    let hash = |s: &StatefulSet| {
        s.spec
            .as_ref()?
            .template
            .metadata
            .as_ref()?
            .annotations
            .as_ref()?
            .get(CONFIG_HASH_ANNOTATION)
            .cloned()
    };
    let annotation = |s: &StatefulSet, key: &str| {
        s.spec
            .as_ref()?
            .template
            .metadata
            .as_ref()?
            .annotations
            .as_ref()?
            .get(key)
            .cloned()
    };
    if let Some(old) = existing.and_then(hash)
        && Some(old) != hash(&sts)
    {
        let note = "the workers' configuration changed: restarting them (the application rolls back to its last checkpoint and replays)".to_string();
        ctx.event(app, EventType::Normal, "RestartingWorkers", "Apply", note)
            .await;
    } else if let Some(old) = existing.and_then(|e| annotation(e, builders::TLS_HASH_ANNOTATION))
        && Some(old) != annotation(&sts, builders::TLS_HASH_ANNOTATION)
    {
        let note = "the workers' certificates changed: restarting them to load the new ones (the application rolls back to its last checkpoint and replays)".to_string();
        ctx.event(app, EventType::Normal, "RestartingWorkers", "Certificates", note)
            .await;
    }
    ssa::apply(&ctx.client, &sts, existing, current.full).await
}

/// `spec.checkpoint.savepointRequest`, carried out once per name: the new `status.savepoint`.
async fn take_savepoint(
    app: &StatefulApplication,
    spec: &Spec,
    ctx: &Context,
    namespace: &str,
    previous: &ApplicationStatus,
    workers_answer: bool,
) -> Option<crate::resource::SavepointStatus> {
    use super::savepoint::{self, Step};
    let requested = spec.spec.checkpoint.savepoint_request.as_deref();
    let name = match savepoint::next(requested, previous.savepoint.as_ref(), workers_answer) {
        Step::Done => return previous.savepoint.clone(),
        Step::Wait(name) => {
            return Some(savepoint::pending(&name, "waiting for worker 0 to answer".into()));
        }
        Step::Take(name) => name,
    };
    let interval = spec.spec.checkpoint.interval.as_duration();
    let timeout = (Duration::from_secs(10) + interval * 10).min(Duration::from_secs(60));
    use crate::worker_admin::SavepointRefusal;
    let result = match admin_token(spec, ctx, namespace).await {
        Ok(token) => match ctx.workers.savepoint(spec, &name, token.as_deref(), timeout).await {
            // Asked before, and the answer never came (a timeout): it may be ours.
            Err(SavepointRefusal::Exists(why)) if previous.savepoint.as_ref().is_some_and(|p| p.name == name) => {
                match ctx.workers.savepoint_record(spec, &name, token.as_deref()).await {
                    Ok(Some(record)) => Ok(record),
                    Ok(None) => Err(SavepointRefusal::Refused(why)),
                    Err(e) => Err(SavepointRefusal::Unavailable(e)),
                }
            }
            other => other,
        },
        Err(why) => Err(SavepointRefusal::Refused(why)),
    };
    let status = savepoint::outcome(&name, result, Timestamp::now().to_string());
    let note = status.message.clone().unwrap_or_default();
    match status.phase.as_str() {
        savepoint::TAKEN => {
            ctx.event(app, EventType::Normal, "SavepointTaken", "Savepoint", note)
                .await
        }
        savepoint::FAILED => {
            ctx.event(app, EventType::Warning, "SavepointFailed", "Savepoint", note)
                .await
        }
        _ => tracing::info!(app = %spec.metadata.name, savepoint = %name, %note, "savepoint not taken yet"),
    }
    Some(status)
}

/// A bearer token for worker 0's admin endpoint: the first of `spec.admin.auth.tokens`'
/// Secret key, when admin auth is on.
async fn admin_token(spec: &Spec, ctx: &Context, namespace: &str) -> Result<Option<String>, String> {
    let Some(auth) = spec.spec.admin.as_ref().and_then(|a| a.auth.as_ref()) else {
        return Ok(None);
    };
    let Some(r) = auth.tokens.as_ref().and_then(|t| t.secret_key_ref.as_ref()) else {
        return Err("spec.admin.auth has no tokens.secretKeyRef the operator could read a token from: take it with `spindle checkpoints save NAME --admin … --token …`".into());
    };
    let api: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let secret = api
        .get_opt(&r.name)
        .await
        .map_err(|e| format!("spec.admin.auth: Secret `{}`: {e}", r.name))?
        .ok_or_else(|| format!("spec.admin.auth: Secret `{}` does not exist", r.name))?;
    let bytes = secret
        .data
        .and_then(|d| d.get(&r.key).cloned())
        .ok_or_else(|| format!("spec.admin.auth: Secret `{}` has no key `{}`", r.name, r.key))?;
    String::from_utf8_lossy(&bytes.0)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|t| Some(t.to_string()))
        .ok_or_else(|| format!("spec.admin.auth: Secret `{}` key `{}` holds no token", r.name, r.key))
}

/// Events for what worker 0 reports that is new: rollbacks, failed checkpoints, a data-loss
/// fallback.
async fn announce_coordinator(app: &StatefulApplication, ctx: &Context, o: &Observation) {
    // Repeats of an event become one event with a count (kube's recorder keeps the first
    // note), so the notes carry no numbers: status.rollbacks and checkpointsFailed do.
    if o.new_rollbacks > 0 {
        let note = "rollback: a worker failed or restarted; every worker restored the last completed checkpoint and replays from it (status.rollbacks counts them)".to_string();
        ctx.event(app, EventType::Warning, "Rollback", "Observe", note).await;
    }
    if o.new_failures > 0 {
        let note = "a checkpoint failed: a part or the manifest was not written in time; see the workers' logs and the storage (status.checkpointsFailed counts them)".to_string();
        ctx.event(app, EventType::Warning, "CheckpointFailed", "Observe", note)
            .await;
    }
    if o.new_data_loss
        && let Some(message) = coordinator::unacknowledged_loss(o.data_loss.as_ref(), None)
    {
        ctx.event(app, EventType::Warning, "CheckpointDataLoss", "Observe", message)
            .await;
    }
}

/// Events for flips of Ready and Degraded, and for a newly applied generation.
async fn announce(
    app: &StatefulApplication,
    ctx: &Context,
    previous: &ApplicationStatus,
    now: &Conditions,
    generation_changed: bool,
) {
    let was = |t: &str| status::condition(Some(previous), t).map(|c| c.status == "True");
    if generation_changed {
        let g = app.metadata.generation.unwrap_or(0);
        ctx.event(
            app,
            EventType::Normal,
            "Applied",
            "Apply",
            format!("generation {g} applied"),
        )
        .await;
    }
    if now.ready.status && was(READY) != Some(true) {
        ctx.event(app, EventType::Normal, "Ready", "Apply", now.ready.message.clone())
            .await;
    }
    // A data-loss report has its own event (announce_coordinator), once per report.
    if now.degraded.status && was(DEGRADED) != Some(true) && now.degraded.reason != "CheckpointDataLoss" {
        ctx.event(
            app,
            EventType::Warning,
            now.degraded.reason,
            "Apply",
            now.degraded.message.clone(),
        )
        .await;
    }
}

/// The spec does not validate: nothing is applied (the workers keep the last valid one), the
/// application is Degraded with every wrong field named, and the operator waits for a change.
async fn invalid(
    app: &StatefulApplication,
    ctx: &Context,
    api: &Api<StatefulApplication>,
    errors: &str,
) -> Result<Action, Error> {
    let previous = app.status.clone().unwrap_or_default();
    let conditions = status::invalid_spec(errors, status::condition(Some(&previous), READY));
    if previous.observed_generation != app.metadata.generation {
        ctx.event(app, EventType::Warning, "InvalidSpec", "Validate", errors.to_string())
            .await;
    }
    let new_status = ApplicationStatus {
        observed_generation: app.metadata.generation,
        conditions: status::merge(
            &previous.conditions,
            &conditions,
            app.metadata.generation,
            Timestamp::now(),
        ),
        ..previous
    };
    status::write(api, app, new_status).await?;
    Ok(Action::await_change())
}
