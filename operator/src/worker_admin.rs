//! Reads a worker's `/status` (worker 0 coordinates checkpoints, so its
//! `completedCheckpoint` is the application's). Plain HTTP inside the cluster, to
//! `<statefulset>-0.<headless service>.<namespace>.svc`, bounded in time.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use spindle_spec::StatefulApplication;

use crate::Error;
use crate::builders::{ADMIN_PORT, peer_service_name, statefulset_name};
use crate::resource::DataLoss;

const TIMEOUT: Duration = Duration::from_secs(3);

/// The part of a worker's `/status` the operator reads. Fields a worker may not report yet
/// (an older worker image) are optional: missing means "no news".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStatus {
    pub generation: u64,
    /// 0: none yet.
    pub completed_checkpoint: u64,
    /// The worker process (its counters start at 0 in a new one).
    #[serde(default)]
    pub incarnation: Option<u64>,
    /// Rollbacks this coordinator started.
    #[serde(default)]
    pub rollbacks: Option<u64>,
    /// Checkpoints this coordinator failed.
    #[serde(default)]
    pub checkpoints_failed: Option<u64>,
    /// Its last fallback past damaged checkpoints, if any.
    #[serde(default)]
    pub data_loss: Option<DataLoss>,
}

/// A savepoint as worker 0 records it (`POST /savepoints/{name}`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SavepointRecord {
    pub name: String,
    pub checkpoint: u64,
    pub created_at_ms: u64,
}

/// Why worker 0 took no savepoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SavepointRefusal {
    /// It answered, and refused (the name is taken, checkpoints are off, no token): asking
    /// again will not help.
    Refused(String),
    /// It did not answer, or not in time, or could not complete a checkpoint: ask again.
    Unavailable(String),
    /// The name is taken (maybe by an earlier request of ours that timed out).
    Exists(String),
}

#[derive(Clone)]
pub struct WorkerAdmin {
    http: Client<HttpConnector, Empty<Bytes>>,
    post: Client<HttpConnector, Full<Bytes>>,
    /// `{statefulset}`, `{service}`, `{namespace}` and `{port}` are replaced.
    url_template: String,
}

pub const DEFAULT_URL_TEMPLATE: &str = "http://{statefulset}-0.{service}.{namespace}.svc:{port}";

impl WorkerAdmin {
    pub fn new(url_template: impl Into<String>) -> WorkerAdmin {
        WorkerAdmin {
            http: Client::builder(TokioExecutor::new()).build_http(),
            post: Client::builder(TokioExecutor::new()).build_http(),
            url_template: url_template.into(),
        }
    }

    /// The base URL of worker 0's admin endpoints.
    pub fn base_url(&self, app: &StatefulApplication) -> String {
        self.url_template
            .replace("{statefulset}", &statefulset_name(app))
            .replace("{service}", &peer_service_name(app))
            .replace("{namespace}", app.metadata.namespace.as_deref().unwrap_or("default"))
            .replace("{port}", &ADMIN_PORT.to_string())
    }

    pub async fn status(&self, app: &StatefulApplication) -> Result<WorkerStatus, Error> {
        let url = format!("{}/status", self.base_url(app));
        let fail = |reason: String| Error::WorkerAdmin {
            url: url.clone(),
            reason,
        };
        let uri: http::Uri = url.parse().map_err(|e| fail(format!("{e}")))?;
        let response = tokio::time::timeout(TIMEOUT, self.http.get(uri))
            .await
            .map_err(|_| fail(format!("no answer within {TIMEOUT:?}")))?
            .map_err(|e| fail(with_causes(&e)))?;
        if !response.status().is_success() {
            return Err(fail(format!("HTTP {}", response.status())));
        }
        let body = tokio::time::timeout(TIMEOUT, response.into_body().collect())
            .await
            .map_err(|_| fail(format!("body not read within {TIMEOUT:?}")))?
            .map_err(|e| fail(format!("{e}")))?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| fail(format!("not a worker status: {e}")))
    }
}

impl WorkerAdmin {
    /// Worker 0's record of savepoint `name`, if it has one.
    pub async fn savepoint_record(
        &self,
        app: &StatefulApplication,
        name: &str,
        token: Option<&str>,
    ) -> Result<Option<SavepointRecord>, String> {
        let url = format!("{}/savepoints/{name}", self.base_url(app));
        let mut req = http::Request::get(&url);
        if let Some(t) = token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(Empty::new()).map_err(|e| format!("{url}: {e}"))?;
        let response = tokio::time::timeout(TIMEOUT, self.http.request(req))
            .await
            .map_err(|_| format!("{url}: no answer within {TIMEOUT:?}"))?
            .map_err(|e| format!("{url}: {}", with_causes(&e)))?;
        let status = response.status();
        let body = tokio::time::timeout(TIMEOUT, response.into_body().collect())
            .await
            .map_err(|_| format!("{url}: body not read within {TIMEOUT:?}"))?
            .map_err(|e| format!("{url}: {e}"))?
            .to_bytes();
        match status.as_u16() {
            200 => serde_json::from_slice(&body)
                .map(Some)
                .map_err(|e| format!("{url}: not a savepoint: {e}")),
            404 => Ok(None),
            _ => Err(format!(
                "{url}: HTTP {status}: {}",
                String::from_utf8_lossy(&body).trim()
            )),
        }
    }

    /// Asks worker 0 for a savepoint named `name` and waits up to `timeout` for it (a
    /// checkpoint started now, then recorded).
    pub async fn savepoint(
        &self,
        app: &StatefulApplication,
        name: &str,
        token: Option<&str>,
        timeout: Duration,
    ) -> Result<SavepointRecord, SavepointRefusal> {
        let url = format!("{}/savepoints/{name}", self.base_url(app));
        let unavailable = |reason: String| SavepointRefusal::Unavailable(format!("{url}: {reason}"));
        let mut req = http::Request::post(&url);
        if let Some(t) = token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(Bytes::new()))
            .map_err(|e| SavepointRefusal::Refused(format!("{url}: {e}")))?;
        let response = tokio::time::timeout(timeout, self.post.request(req))
            .await
            .map_err(|_| unavailable(format!("no answer within {timeout:?}")))?
            .map_err(|e| unavailable(with_causes(&e)))?;
        let status = response.status();
        let body = tokio::time::timeout(TIMEOUT, response.into_body().collect())
            .await
            .map_err(|_| unavailable(format!("body not read within {TIMEOUT:?}")))?
            .map_err(|e| unavailable(format!("{e}")))?
            .to_bytes();
        let text = String::from_utf8_lossy(&body).trim().to_string();
        match status.as_u16() {
            200 => serde_json::from_slice(&body).map_err(|e| unavailable(format!("not a savepoint: {e}: {text}"))),
            409 if text.contains("exists already") => Err(SavepointRefusal::Exists(format!("{url}: {text}"))),
            400 | 401 | 403 | 404 | 409 => Err(SavepointRefusal::Refused(format!("{url}: HTTP {status}: {text}"))),
            _ => Err(unavailable(format!("HTTP {status}: {text}"))),
        }
    }
}

/// An error and its causes: hyper's own text is only "client error (Connect)"; the cause says
/// what failed ("tcp connect error: Connection refused", a DNS failure, …).
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
