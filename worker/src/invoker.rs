//! Remote invocation over the StateFun request-reply protocol: one HTTP POST per batch on a
//! pooled keep-alive client, retried with exponential backoff within the call timeout.

use std::time::Duration;

use crate::retry::Backoff;
use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use prost::Message;
use spindle_protocol::reqreply::{
    FromFunction, ToFunction,
    from_function::{self, InvocationResponse, PersistedValueSpec},
};

/// What a function answered.
#[derive(Debug)]
pub enum Reply {
    Result(InvocationResponse),
    /// The function needs these state values declared and the batch sent again.
    Incomplete(Vec<PersistedValueSpec>),
}

/// Why a batch failed for good. `kind` is a fixed label for metrics; `reason` is for people.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{reason}")]
pub struct InvokeFailure {
    pub kind: &'static str,
    pub reason: String,
    pub attempts: u32,
}

/// One attempt's failure, and whether another attempt may help.
struct AttemptError {
    retryable: bool,
    kind: &'static str,
    reason: String,
}

#[derive(Clone)]
pub struct Invoker {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Invoker {
    fn default() -> Self {
        Self::new()
    }
}

impl Invoker {
    pub fn new() -> Invoker {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Invoker { client }
    }

    /// Sends `request` to `uri` until it succeeds, fails for good, or `timeout` has passed.
    /// `on_retry` is told about every failed attempt that will be retried.
    pub async fn invoke(
        &self,
        uri: &Uri,
        request: &ToFunction,
        timeout: Duration,
        mut on_retry: impl FnMut(&str),
    ) -> Result<Reply, InvokeFailure> {
        let body = Bytes::from(request.encode_to_vec());
        let mut backoff = Backoff::within(timeout);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let err = match tokio::time::timeout(backoff.remaining(), self.attempt(uri, body.clone())).await {
                Ok(Ok(reply)) => return Ok(reply),
                Ok(Err(e)) => e,
                Err(_) => AttemptError {
                    retryable: false,
                    kind: "timeout",
                    reason: format!("no answer within the call timeout of {timeout:?}"),
                },
            };
            let wait = if err.retryable { backoff.next_wait() } else { None };
            let Some(wait) = wait else {
                let reason = if err.retryable {
                    format!("{} (gave up after {attempts} attempts in {timeout:?})", err.reason)
                } else {
                    err.reason
                };
                return Err(InvokeFailure {
                    kind: err.kind,
                    reason,
                    attempts,
                });
            };
            on_retry(&err.reason);
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(&self, uri: &Uri, body: Bytes) -> Result<Reply, AttemptError> {
        let req = Request::post(uri.clone())
            .header(header::CONTENT_TYPE, spindle_protocol::CONTENT_TYPE)
            .body(Full::new(body))
            .expect("a request built from a parsed URI is valid");
        let resp = self.client.request(req).await.map_err(|e| AttemptError {
            retryable: true,
            kind: "network",
            reason: format!("cannot reach {uri}: {}", error_chain(&e)),
        })?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(AttemptError {
                retryable: retryable_status(status),
                kind: "http_status",
                reason: format!(
                    "{uri} answered {status}: {}",
                    String::from_utf8_lossy(&body[..body.len().min(300)]).trim()
                ),
            });
        }
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp.into_body().collect().await.map_err(|e| AttemptError {
            retryable: true,
            kind: "network",
            reason: format!("reading the reply from {uri}: {}", error_chain(&e)),
        })?;
        if content_type.split(';').next().map(str::trim) != Some(spindle_protocol::CONTENT_TYPE) {
            return Err(AttemptError {
                retryable: false,
                kind: "bad_reply",
                reason: format!(
                    "{uri} replied with content type `{content_type}`, expected `{}`",
                    spindle_protocol::CONTENT_TYPE
                ),
            });
        }
        let reply = FromFunction::decode(body.to_bytes()).map_err(|e| AttemptError {
            retryable: false,
            kind: "bad_reply",
            reason: format!("{uri} replied with a malformed FromFunction: {e}"),
        })?;
        match reply.response {
            Some(from_function::Response::InvocationResult(r)) => Ok(Reply::Result(r)),
            Some(from_function::Response::IncompleteInvocationContext(c)) => Ok(Reply::Incomplete(c.missing_values)),
            None => Err(AttemptError {
                retryable: false,
                kind: "bad_reply",
                reason: format!("{uri} replied with an empty FromFunction"),
            }),
        }
    }
}

/// StateFun retries these, besides every 5xx: timeouts, conflicts, rate limits.
fn retryable_status(s: StatusCode) -> bool {
    s.is_server_error() || matches!(s.as_u16(), 408 | 409 | 420 | 429 | 499)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_what_statefun_retries() {
        for s in [408, 409, 420, 429, 499, 500, 502, 503] {
            assert!(retryable_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [400, 401, 404, 413, 415] {
            assert!(!retryable_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }
}
