//! HTTP ingress, following the StateFun playground convention:
//! `POST`/`PUT /{namespace}/{type}/{id}` with `Content-Type: application/vnd.{typename}`; the
//! body is the message value.
//!
//! Two acknowledgements (docs/checkpoints.md):
//! - *accepted* (default): `202` once the record is queued in the worker, inside the scope of
//!   the next checkpoint. A failure before that checkpoint completes loses it: at-most-once.
//! - *durable* (`Spindle-Ack: durable`): `200` once the checkpoint containing the record is
//!   complete. `503` with `Spindle-Retry: safe` means the application rolled back to a
//!   checkpoint without it — it was not applied and a retry is safe. No answer (a broken
//!   connection, a timeout) leaves it unknown.
//! - *the reply* (`Spindle-Reply: wait`): `200` with the value a function sent to the
//!   request's reply address, once durable (`ingress::reply`).
//!
//! While a queue of the memory budget is at its bound (`spec.memory`), every request is
//! refused with `503`, `Retry-After` and `Spindle-Retry: safe`, before its body is read.

use std::sync::Arc;

use axum::Router as Routes;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use spindle_spec::TypeName;

use std::time::Duration;

use tokio::sync::watch;

use crate::app::AppConfig;
use crate::auth::Tokens;
use crate::checkpoint::Progress;
use crate::inbox::{Admission, Current, IngressAdmission};
use crate::message::{Address, Envelope, Value, check_id};
use crate::metrics::{KindLabels, Metrics};
use crate::reply::{Released, Replies, Waiting};

use super::reply;

/// Content-type prefix that carries a message's typename.
const VND: &str = "application/vnd.";

/// Header with the caller's idempotency key for the record.
const IDEMPOTENCY_HEADER: &str = "idempotency-key";
/// Header asking for a durable acknowledgement.
const ACK_HEADER: &str = "spindle-ack";
/// Longest a durable acknowledgement waits for its checkpoint.
const DURABLE_WAIT: Duration = Duration::from_secs(60);

#[derive(Clone)]
pub struct HttpIngress {
    pub app: Arc<AppConfig>,
    pub metrics: Arc<Metrics>,
    /// Bounds accepted-but-unprocessed records (`maxBufferedMessages`): waiting for a permit
    /// is the ingress's back-pressure by count. While a queue of the memory budget is at its
    /// bound (`spec.memory`), requests are refused at once (`503`, `Retry-After`).
    pub admission: IngressAdmission,
    pub max_body_bytes: usize,
    /// Where records go: the running generation's inbox.
    pub current: Current,
    /// What durable acknowledgements wait on; `None` when checkpoints are off.
    pub progress: Option<watch::Receiver<Progress>>,
    /// False once the worker stops taking input.
    pub accepting: watch::Receiver<bool>,
    /// The bearer tokens every request needs (`http.auth`); `None`: open.
    pub auth: Option<Arc<Tokens>>,
    /// Requests waiting for their replies (`Spindle-Reply: wait`, see `ingress::reply`).
    pub replies: Arc<Replies>,
    /// How long such a request waits by default (`http.replyTimeout`).
    pub reply_timeout: Duration,
}

impl HttpIngress {
    pub fn routes(self) -> Routes {
        Routes::new()
            .route("/{namespace}/{type}/{id}", post(ingest).put(ingest))
            .with_state(self)
    }
}

struct Rejection {
    status: StatusCode,
    kind: &'static str,
    message: String,
    retry_safe: bool,
    /// Seconds a client should wait before retrying (`Retry-After`).
    retry_after: Option<u64>,
}

fn reject(status: StatusCode, kind: &'static str, message: String) -> Rejection {
    Rejection {
        status,
        kind,
        message,
        retry_safe: false,
        retry_after: None,
    }
}

/// How a record was acknowledged.
enum Ack {
    Accepted,
    Durable(u64),
    /// The reply, released by the checkpoint that made it durable.
    Replied(Released),
}

async fn ingest(
    State(ingress): State<HttpIngress>,
    Path((namespace, ty, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let metrics = &ingress.metrics;
    // Before anything else: an unauthenticated caller learns nothing about the application.
    if let Some(tokens) = &ingress.auth
        && let Err(denied) = tokens.admit(&headers)
    {
        metrics
            .ingress_rejected
            .get_or_create(&KindLabels { kind: denied.kind() })
            .inc();
        return denied.response("spindle-ingress");
    }
    match accept(&ingress, &namespace, &ty, id, &headers, body).await {
        Ok(Ack::Accepted) => StatusCode::ACCEPTED.into_response(),
        Ok(Ack::Durable(n)) => (
            StatusCode::OK,
            [("spindle-checkpoint", n.to_string())],
            format!("durable: in checkpoint {n}\n"),
        )
            .into_response(),
        Ok(Ack::Replied(r)) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE.as_str(), format!("{VND}{}", r.value.typename)),
                ("spindle-checkpoint", r.checkpoint.to_string()),
            ],
            crate::reply::body(&r.value),
        )
            .into_response(),
        Err(r) => {
            metrics
                .ingress_rejected
                .get_or_create(&KindLabels { kind: r.kind })
                .inc();
            tracing::debug!(status = %r.status, message = %r.message, "ingress request refused");
            let retry = if r.retry_safe { "safe" } else { "unknown" };
            let mut response = (r.status, [("spindle-retry", retry)], format!("{}\n", r.message)).into_response();
            if let Some(secs) = r.retry_after {
                response.headers_mut().insert(header::RETRY_AFTER, secs.into());
            }
            response
        }
    }
}

async fn accept(
    ingress: &HttpIngress,
    namespace: &str,
    ty: &str,
    id: String,
    headers: &HeaderMap,
    body: Body,
) -> Result<Ack, Rejection> {
    let stopping = || {
        Rejection {
        status: StatusCode::SERVICE_UNAVAILABLE,
        kind: "stopping",
        message: "the worker is stopping and takes no more input; the record was not accepted (send it again, to another worker or later)".into(),
        retry_safe: true,
        retry_after: None,
    }
    };
    if !*ingress.accepting.borrow() {
        return Err(stopping());
    }
    let wants_reply = reply::requested(headers, ingress.reply_timeout)
        .map_err(|why| reject(StatusCode::BAD_REQUEST, "bad_reply_request", why))?;
    let durable = match headers.get(ACK_HEADER).map(|v| v.to_str().unwrap_or("")) {
        None | Some("accepted") => false,
        Some("durable") if ingress.progress.is_some() => true,
        Some("durable") => {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "bad_ack",
                "durable acknowledgement needs checkpoints, which this application turns off (checkpoint.interval: 0s)"
                    .into(),
            ));
        }
        Some(other) => {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "bad_ack",
                format!("Spindle-Ack `{other}` is neither `accepted` nor `durable`"),
            ));
        }
    };
    let target_type = TypeName::new(namespace, ty).map_err(|e| {
        reject(
            StatusCode::BAD_REQUEST,
            "bad_target",
            format!("bad target function type: {e}"),
        )
    })?;
    check_id(&id).map_err(|e| reject(StatusCode::BAD_REQUEST, "bad_id", format!("bad function id: {e}")))?;
    if ingress.app.function_for(&target_type).is_none() {
        return Err(reject(
            StatusCode::NOT_FOUND,
            "unknown_function",
            format!("no function serves type `{target_type}`"),
        ));
    }
    let typename = message_typename(headers)?;
    // Refused before the body is read, so a flood while a queue is full costs no memory.
    memory_room(ingress)?;
    let too_large = || {
        reject(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body exceeds the limit of {} bytes", ingress.max_body_bytes),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > ingress.max_body_bytes) {
        return Err(too_large());
    }
    let bytes: Bytes = match Limited::new(body, ingress.max_body_bytes).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
        Err(e) => {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("reading the body: {e}"),
            ));
        }
    };
    let permit = ingress.admission.slots.clone().acquire_owned().await.map_err(|_| {
        reject(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the worker is shutting down".into(),
        )
    })?;
    // Again: the request may have waited for its slot while a queue filled up.
    memory_room(ingress)?;
    let dedup = match headers.get(IDEMPOTENCY_HEADER).map(|v| v.to_str()) {
        None => None,
        Some(Ok(k)) if !k.is_empty() && k.len() <= 256 => Some(Arc::from(k)),
        Some(_) => {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "bad_idempotency_key",
                "Idempotency-Key must be 1 to 256 visible ASCII characters".into(),
            ));
        }
    };
    let target = Address::new(target_type, id);
    let waiting = wants_reply.map(|_| {
        let memo = dedup.clone().map(|key| (target.clone(), key));
        ingress.replies.register(memo)
    });
    let env = Envelope {
        target,
        caller: waiting.as_ref().map(Waiting::caller),
        value: Value::new(typename.as_str(), bytes),
        dedup,
        // A caller's W3C trace context makes the record's span its child (tracing on).
        trace: headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::trace::SpanContext::from_traceparent),
    };
    let shutting_down = || {
        reject(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the worker is shutting down".into(),
        )
    };
    // Checked again: the request may have waited for admission while the stop began.
    if !*ingress.accepting.borrow() {
        return Err(stopping());
    }
    let admission = Admission::new(permit, ingress.metrics.ingress_in_process.clone());
    let entry = ingress.current.wait().await.map_err(|_| shutting_down())?;
    // A waiting request learns its record's epoch like a durable one, to tell a rollback
    // that undid the record from one that did not.
    let rx = entry
        .inbox
        .ingest(env, Some(admission), durable || waiting.is_some())
        .map_err(|_| shutting_down())?;
    ingress.metrics.ingress_accepted.inc();
    if let (Some(waiting), Some(timeout)) = (waiting, wants_reply) {
        let epoch = rx.expect("the epoch was asked for");
        let generation = entry.generation;
        drop(entry);
        return reply::wait(waiting, epoch, generation, ingress.progress.as_ref(), timeout)
            .await
            .map(Ack::Replied)
            .map_err(|n| Rejection {
                status: n.status,
                kind: n.kind,
                message: n.message,
                retry_safe: n.retry_safe,
                retry_after: None,
            });
    }
    let (Some(rx), Some(progress)) = (rx, &ingress.progress) else {
        return Ok(Ack::Accepted);
    };
    let lost = |why: String| Rejection {
        status: StatusCode::SERVICE_UNAVAILABLE,
        kind: "rolled_back",
        message: why,
        retry_safe: true,
        retry_after: None,
    };
    let generation = entry.generation;
    drop(entry);
    let epoch = rx
        .await
        .map_err(|_| lost("the application rolled back before the record was queued; it was not applied".into()))?;
    let mut progress = progress.clone();
    let waited = tokio::time::timeout(
        DURABLE_WAIT,
        progress.wait_for(|p| p.generation > generation || p.completed >= epoch),
    )
    .await;
    let p = match waited {
        Ok(Ok(p)) => *p,
        Ok(Err(_)) => return Err(shutting_down()),
        Err(_) => {
            return Err(reject(
                StatusCode::GATEWAY_TIMEOUT,
                "not_durable_yet",
                format!(
                    "checkpoint {epoch}, which contains the record, did not complete within {DURABLE_WAIT:?}; the record may still become durable"
                ),
            ));
        }
    };
    if p.generation == generation || p.restored >= epoch {
        return Ok(Ack::Durable(epoch));
    }
    Err(lost(format!(
        "the application rolled back to checkpoint {}, before checkpoint {epoch} that would have contained the record; it was not applied",
        p.restored
    )))
}

/// Refuses the request while a queue of the memory budget is at its bound. Refused, not held:
/// a held request keeps its connection and (after reading) its body in this worker's memory,
/// for as long as the cause lasts (a storage outage can last minutes), which is what the bound
/// is there to prevent; a `503` costs nothing to keep, and tells the caller the record was
/// not accepted, so sending it again later is safe.
fn memory_room(ingress: &HttpIngress) -> Result<(), Rejection> {
    match ingress.admission.full() {
        None => Ok(()),
        Some(full) => Err(Rejection {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "memory_full",
            message: format!("{full}; the record was not accepted: send it again later"),
            retry_safe: true,
            retry_after: Some(MEMORY_RETRY_AFTER_SECS),
        }),
    }
}

/// What a `503` for a full memory budget asks callers to wait.
const MEMORY_RETRY_AFTER_SECS: u64 = 1;

/// The typename from `Content-Type: application/vnd.{namespace}/{name}`.
fn message_typename(headers: &HeaderMap) -> Result<TypeName, Rejection> {
    let raw = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = raw.split(';').next().unwrap_or("").trim();
    let Some(typename) = essence.strip_prefix(VND) else {
        return Err(reject(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "bad_content_type",
            format!(
                "Content-Type `{raw}` does not name the message type: expected `{VND}<namespace>/<type>`, e.g. `{VND}example/Visit`"
            ),
        ));
    };
    TypeName::parse(typename).map_err(|e| {
        reject(
            StatusCode::BAD_REQUEST,
            "bad_typename",
            format!("Content-Type names a malformed message type: {e}"),
        )
    })
}
