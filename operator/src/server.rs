//! `/healthz` (the process is alive), `/readyz` (it reaches the API server: as the leader
//! reconciling, or as a standby ready to take over) and `/metrics` (Prometheus).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::metrics::Metrics;

#[derive(Default)]
pub struct Health {
    /// The last round trip to the API server (renewing or checking the lease) succeeded.
    pub api_reachable: AtomicBool,
    /// This replica holds the lease and runs the controller.
    pub leading: AtomicBool,
}

#[derive(Clone)]
pub struct ServerState {
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
}

pub fn routes(state: ServerState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(State(s): State<ServerState>) -> Response {
    if !s.health.api_reachable.load(Ordering::Acquire) {
        return (StatusCode::SERVICE_UNAVAILABLE, "the API server is not reachable\n").into_response();
    }
    if s.health.leading.load(Ordering::Acquire) {
        "ready: leading\n"
    } else {
        "ready: standby\n"
    }
    .into_response()
}

async fn metrics(State(s): State<ServerState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
        .into_response()
}

/// Serves until `shutdown` resolves. Takes its listener so tests bind port 0.
pub async fn serve(
    listener: TcpListener,
    state: ServerState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, routes(state))
        .with_graceful_shutdown(shutdown)
        .await
}
