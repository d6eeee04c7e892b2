//! The admin endpoints: `/healthz` (the process is alive), `/readyz` (it can serve: started
//! and its local functions are up), `/metrics` (Prometheus), `/status` (JSON counters, e.g.
//! for waiting until idle, and checkpoint progress), `/dead-letters` and
//! `/state/{namespace}/{type}/{id}`, `/state?type=&prefix=&limit=` (the addresses this worker
//! owns) and, on worker 0, `POST /savepoints/{name}`. The last ones expose application data
//! or act on it: with `spec.admin.auth` they need a bearer token; the others stay open for
//! probes and monitoring.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::Router as Routes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde_json::{Map, json};
use spindle_spec::TypeName;
use tokio::sync::watch;

use crate::auth::Tokens;
use crate::checkpoint::Progress;
use crate::checkpoint::coordinator::task::{DataLossReport, SuspectsReport};
use crate::checkpoint::savepoint::{SavepointError, Savepoints};
use crate::inbox::Current;
use crate::json::insert_value;
use crate::message::Address;
use crate::metrics::Metrics;

#[derive(Clone)]
pub(crate) struct Admin {
    pub application: String,
    pub worker: u32,
    /// The application's worker count.
    pub workers: u32,
    pub incarnation: u64,
    pub metrics: Arc<Metrics>,
    pub progress: watch::Receiver<Progress>,
    pub ready: Arc<AtomicBool>,
    pub current: Current,
    /// On the coordinator: the last fallback past damaged checkpoints.
    pub data_loss: DataLossReport,
    /// Messages the coordinator counts as possible poison (empty on other workers).
    pub suspects: SuspectsReport,
    /// What `/healthz` answers.
    pub health: Arc<crate::health::Health>,
    /// The bearer tokens `/state` and `/dead-letters` need (`spec.admin.auth`); `None`: open.
    pub auth: Option<Arc<Tokens>>,
    /// Worker 0 with checkpoints on: how savepoints are taken.
    pub savepoints: Option<Savepoints>,
}

impl Admin {
    /// `None` when the request may read data; otherwise the refusal to send.
    fn refusal(&self, headers: &HeaderMap) -> Option<Response> {
        let tokens = self.auth.as_ref()?;
        tokens.admit(headers).err().map(|d| d.response("spindle-admin"))
    }
}

impl Admin {
    pub fn routes(self) -> Routes {
        Routes::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .route("/status", get(status))
            .route("/dead-letters", get(dead_letters))
            .route("/dead-letters/{id}/replay", post(replay_dead_letter))
            .route("/dead-letters/{id}", delete(drop_dead_letter))
            .route("/state", get(list_state))
            .route("/state/{namespace}/{type}/{id}", get(state))
            .route("/savepoints/{name}", post(savepoint).get(savepoint_record))
            .with_state(self)
    }
}

/// 200 while the process is worth keeping; 503 (a liveness probe restarts it) once a task it
/// needs failed or it has been fenced for long.
async fn healthz(State(a): State<Admin>) -> Response {
    match a.health.check() {
        Ok(()) => "ok\n".into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("unhealthy: {why}\n")).into_response(),
    }
}

async fn readyz(State(a): State<Admin>) -> Response {
    if let Err(why) = a.health.check() {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("unhealthy: {why}\n")).into_response();
    }
    if a.ready.load(Ordering::Acquire) {
        "ready\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting or restoring\n").into_response()
    }
}

async fn metrics(State(a): State<Admin>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        a.metrics.encode(),
    )
        .into_response()
}

async fn status(State(a): State<Admin>) -> Json<serde_json::Value> {
    let m = &a.metrics;
    let p = *a.progress.borrow();
    Json(json!({
        "idle": m.is_idle(),
        "worker": a.worker,
        "incarnation": a.incarnation,
        "generation": p.generation,
        "restoredCheckpoint": p.restored,
        "completedCheckpoint": p.completed,
        "checkpointsCompleted": m.checkpoints_completed.get(),
        "checkpointsFailed": m.checkpoints_failed.get(),
        "rollbacks": m.rollbacks.get(),
        "dataLoss": *a.data_loss.lock().expect("data-loss report lock"),
        "poisonSuspects": a.suspects.lock().expect("suspects report lock").clone(),
        "ingressAccepted": m.ingress_accepted.get(),
        "ingressInProcess": m.ingress_in_process.get(),
        "messagesQueued": m.messages_queued.get(),
        "batchesInFlight": m.batches_in_flight.get(),
        "delayedPending": m.delayed_pending.get(),
        "egressPending": m.egress_pending.get(),
        // For `spindle status`: the app, when the last checkpoint completed, totals to take
        // rates from, the backlog and the lag per ingress.
        "application": a.application,
        "workers": a.workers,
        "lastCheckpointTimeSeconds": m.last_checkpoint_time.get(),
        "nowMs": crate::clock::now_ms(),
        "messagesInvoked": m.messages_invoked.get(),
        "messagesInFlight": m.messages_in_flight.get(),
        "deadLetters": m.dead_letters_written.get(),
        "backlog": m.backlog(),
        "ingressLag": m.lag_by_ingress(),
    }))
}

/// The dead letters this worker keeps (in checkpoints), oldest id first.
async fn dead_letters(State(a): State<Admin>, headers: HeaderMap) -> Response {
    if let Some(denied) = a.refusal(&headers) {
        return denied;
    }
    let Some(entry) = a.current.now() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "restoring\n").into_response();
    };
    match entry.inbox.dead_letters().await {
        Ok(letters) => Json(serde_json::Value::Array(letters.iter().map(|l| l.to_json()).collect())).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}

/// Delivers a dead letter's messages again — exactly once: it leaves the dead letters in the
/// step its messages are queued. 404 when this worker does not keep it.
async fn replay_dead_letter(State(a): State<Admin>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(denied) = a.refusal(&headers) {
        return denied;
    }
    settle(&a, &id, false).await
}

/// Drops a dead letter for good.
async fn drop_dead_letter(State(a): State<Admin>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(denied) = a.refusal(&headers) {
        return denied;
    }
    settle(&a, &id, true).await
}

async fn settle(a: &Admin, id: &str, drop: bool) -> Response {
    let Some(entry) = a.current.now() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "restoring\n").into_response();
    };
    match entry.inbox.settle_dead_letter(id, drop).await {
        Ok(Ok(())) => (StatusCode::OK, if drop { "dropped\n" } else { "replayed\n" }).into_response(),
        Ok(Err(why)) if why.starts_with("no dead letter") => {
            (StatusCode::NOT_FOUND, format!("{why}\n")).into_response()
        }
        Ok(Err(why)) => (StatusCode::CONFLICT, format!("{why}\n")).into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response(),
    }
}

async fn state(
    State(a): State<Admin>,
    headers: HeaderMap,
    Path((namespace, ty, id)): Path<(String, String, String)>,
) -> Response {
    if let Some(denied) = a.refusal(&headers) {
        return denied;
    }
    let typename = match TypeName::new(&namespace, &ty) {
        Ok(t) => t,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let Some(entry) = a.current.now() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "restoring\n").into_response();
    };
    let Ok(values) = entry.inbox.read_state(Address::new(typename, id)).await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    };
    let mut out = Map::new();
    for (name, value) in values {
        let mut v = Map::new();
        v.insert("typename".into(), (*value.typename).into());
        insert_value(&mut v, &value);
        out.insert(name, v.into());
    }
    Json(serde_json::Value::Object(out)).into_response()
}

#[derive(Debug, serde::Deserialize)]
struct ListParams {
    /// `namespace/type`.
    #[serde(rename = "type")]
    typename: Option<String>,
    prefix: Option<String>,
    limit: Option<usize>,
}

/// The state of the addresses this worker owns that the query selects, by type and id: a
/// JSON array of `{"typename", "id", "state"}`.
async fn list_state(State(a): State<Admin>, headers: HeaderMap, Query(p): Query<ListParams>) -> Response {
    if let Some(denied) = a.refusal(&headers) {
        return denied;
    }
    let typename = match p.typename.as_deref().map(TypeName::parse).transpose() {
        Ok(t) => t,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("type: {e}\n")).into_response(),
    };
    let Some(entry) = a.current.now() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "restoring\n").into_response();
    };
    let query = crate::state::query::StateQuery {
        typename,
        prefix: p.prefix,
        limit: p.limit,
    };
    let Ok(list) = entry.inbox.list_state(query).await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    };
    Json(serde_json::Value::Array(
        list.iter().map(crate::state::query::address_json).collect(),
    ))
    .into_response()
}

/// Takes a savepoint: answers `{"name", "checkpoint", "createdAtMs"}` once it is recorded.
async fn savepoint(State(a): State<Admin>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    if let Some(denied) = a.refusal(&headers) {
        return denied;
    }
    let Some(savepoints) = &a.savepoints else {
        let why = if a.worker == 0 {
            "checkpoints are off (spec.checkpoint.interval: 0s): no savepoints".to_string()
        } else {
            format!("worker {} does not coordinate checkpoints: ask worker 0", a.worker)
        };
        return (StatusCode::CONFLICT, format!("{why}\n")).into_response();
    };
    match savepoints.take(&name).await {
        Ok(s) => Json(json!(s)).into_response(),
        Err(e) => {
            let status = match &e {
                SavepointError::BadName(_) => StatusCode::BAD_REQUEST,
                SavepointError::Exists(_) => StatusCode::CONFLICT,
                _ => StatusCode::SERVICE_UNAVAILABLE,
            };
            (status, format!("{e}\n")).into_response()
        }
    }
}

/// A savepoint's record (404: none by that name): how a caller whose request timed out learns
/// that it was taken after all.
async fn savepoint_record(State(a): State<Admin>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    if let Some(denied) = a.refusal(&headers) {
        return denied;
    }
    let Some(savepoints) = &a.savepoints else {
        return (StatusCode::CONFLICT, "no savepoints here: ask worker 0\n").into_response();
    };
    match savepoints.store.savepoint(&name).await {
        Ok(Some(s)) => Json(json!(s)).into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, format!("no savepoint `{name}`\n")).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}
