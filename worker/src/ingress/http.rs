//! HTTP ingress, following the StateFun playground convention:
//! `POST`/`PUT /{namespace}/{type}/{id}` with `Content-Type: application/vnd.{typename}`; the
//! body is the message value. 202 once the message is accepted (queued in the worker).
//!
//! Acceptance is not durability: until checkpoints arrive, a crash loses accepted messages.

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
use tokio::sync::Semaphore;

use crate::app::AppConfig;
use crate::message::{Address, Envelope, Value};
use crate::metrics::{KindLabels, Metrics};
use crate::router::{Admission, Router};

/// Content-type prefix that carries a message's typename.
const VND: &str = "application/vnd.";

#[derive(Clone)]
pub struct HttpIngress {
    pub app: Arc<AppConfig>,
    pub router: Router,
    /// Bounds accepted-but-unprocessed records (`maxBufferedMessages`); waiting for a permit
    /// is the ingress's back-pressure.
    pub admission: Arc<Semaphore>,
    pub metrics: Arc<Metrics>,
    pub max_body_bytes: usize,
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
}

fn reject(status: StatusCode, kind: &'static str, message: String) -> Rejection {
    Rejection { status, kind, message }
}

async fn ingest(
    State(ingress): State<HttpIngress>,
    Path((namespace, ty, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match accept(&ingress, &namespace, &ty, id, &headers, body).await {
        Ok(()) => {
            ingress.metrics.ingress_accepted.inc();
            StatusCode::ACCEPTED.into_response()
        }
        Err(r) => {
            ingress
                .metrics
                .ingress_rejected
                .get_or_create(&KindLabels { kind: r.kind })
                .inc();
            tracing::debug!(status = %r.status, message = %r.message, "ingress request refused");
            (r.status, format!("{}\n", r.message)).into_response()
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
) -> Result<(), Rejection> {
    let target_type = TypeName::new(namespace, ty).map_err(|e| {
        reject(StatusCode::BAD_REQUEST, "bad_target", format!("bad target function type: {e}"))
    })?;
    if ingress.app.function_for(&target_type).is_none() {
        return Err(reject(
            StatusCode::NOT_FOUND,
            "unknown_function",
            format!("no function serves type `{target_type}`"),
        ));
    }
    let typename = message_typename(headers)?;
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
            return Err(reject(StatusCode::BAD_REQUEST, "bad_body", format!("reading the body: {e}")));
        }
    };
    let permit = ingress
        .admission
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| reject(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the worker is shutting down".into()))?;
    let env = Envelope {
        target: Address::new(target_type, id),
        caller: None,
        value: Value::new(typename.as_str(), bytes),
    };
    let admission = Admission::new(permit, ingress.metrics.ingress_in_process.clone());
    ingress.router.deliver(env, Some(admission)).map_err(|e| {
        reject(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", e.to_string())
    })
}

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
        reject(StatusCode::BAD_REQUEST, "bad_typename", format!("Content-Type names a malformed message type: {e}"))
    })
}
