//! StateFun functions over HTTP: one POST per batch on a pooled keep-alive client, retried
//! with exponential backoff within the call timeout (network errors and the statuses StateFun
//! retries).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Full};
use prost::Message;
use spindle_protocol::reqreply::FromFunction;
use spindle_spec::TypeName;

use super::{Call, Invoke, InvokeFailure, InvokeFuture, Outcome, wire};
use crate::app::AppConfig;
use crate::message::Address;
use crate::metrics::{FunctionLabels, Metrics};
use crate::retry::Backoff;
use crate::tls::TlsError;
use crate::tls::client::{HttpClient, error_chain, http_client};

/// One attempt's failure, and whether another attempt may help.
struct AttemptError {
    retryable: bool,
    kind: &'static str,
    reason: String,
}

/// The invoker of a worker: a connection pool per function entry (each with its entry's TLS
/// settings; `http://` endpoints speak plain HTTP/1.1, `https://` ones TLS with HTTP/2 when
/// offered).
pub(crate) struct HttpInvoker {
    clients: Vec<HttpClient>,
    app: Arc<AppConfig>,
    metrics: Arc<Metrics>,
    /// Endpoint per function type (`{function.name}` substituted), parsed once.
    endpoints: Mutex<HashMap<TypeName, Uri>>,
}

impl HttpInvoker {
    pub fn new(app: Arc<AppConfig>, metrics: Arc<Metrics>) -> Result<HttpInvoker, TlsError> {
        let clients = app
            .functions
            .iter()
            .map(|f| http_client(f.tls.as_ref(), &app.base_dir, Duration::from_secs(60)))
            .collect::<Result<_, _>>()?;
        Ok(HttpInvoker {
            clients,
            app,
            metrics,
            endpoints: Mutex::new(HashMap::new()),
        })
    }

    fn uri(&self, call: &Call) -> Result<Uri, InvokeFailure> {
        let t = &call.target.typename;
        let mut endpoints = self.endpoints.lock().expect("endpoint cache lock");
        if let Some(uri) = endpoints.get(t) {
            return Ok(uri.clone());
        }
        let url = self.app.functions[call.function].endpoint_for(t);
        let uri = url.parse::<Uri>().map_err(|e| InvokeFailure {
            kind: "bad_endpoint",
            reason: format!("endpoint `{url}` is not a valid URL: {e}"),
            attempts: 0,
        })?;
        endpoints.insert(t.clone(), uri.clone());
        Ok(uri)
    }
}

impl Invoke for HttpInvoker {
    fn invoke(&self, call: Call) -> InvokeFuture {
        let uri = match self.uri(&call) {
            Ok(uri) => uri,
            Err(failure) => return Box::pin(async move { Err(failure) }),
        };
        let body = Bytes::from(wire::to_function(&call).encode_to_vec());
        let timeout = self.app.functions[call.function].call_timeout;
        let max_reply = self.app.functions[call.function].max_reply_bytes;
        let retries = self
            .metrics
            .invocation_retries
            .get_or_create(&FunctionLabels {
                function: self.metrics.function_label(call.target.typename.as_str()),
            })
            .clone();
        let client = self.clients[call.function].clone();
        let target = call.target;
        Box::pin(async move {
            let mut backoff = Backoff::within(timeout);
            let mut attempts: u32 = 0;
            loop {
                attempts += 1;
                let limit = backoff.remaining(ATTEMPT_TIMEOUT);
                let err =
                    match tokio::time::timeout(limit, attempt(&client, &uri, &target, body.clone(), max_reply)).await {
                        Ok(Ok(reply)) => return Ok(reply),
                        Ok(Err(e)) => e,
                        Err(_) => AttemptError {
                            retryable: true,
                            kind: "timeout",
                            reason: format!("no answer within {limit:?}"),
                        },
                    };
                let wait = if err.retryable { backoff.next_wait() } else { None };
                let Some(wait) = wait else {
                    let reason = match (err.retryable, timeout) {
                        (true, Some(t)) => format!(
                            "{} (gave up after {attempts} attempts in the callTimeout of {t:?})",
                            err.reason
                        ),
                        _ => err.reason,
                    };
                    return Err(InvokeFailure {
                        kind: err.kind,
                        reason,
                        attempts,
                    });
                };
                retries.inc();
                // Without a callTimeout an outage is retried for as long as it lasts: say so
                // at first and then now and again, not on every attempt.
                if attempts.is_power_of_two() || attempts.is_multiple_of(60) {
                    tracing::warn!(%target, attempts, reason = %err.reason, "invocation attempt failed; retrying");
                } else {
                    tracing::debug!(%target, attempts, reason = %err.reason, "invocation attempt failed; retrying");
                }
                tokio::time::sleep(wait).await;
            }
        })
    }
}

/// Longest one attempt may wait for an answer; a function that does not answer in time is
/// tried again (within the callTimeout, if one is set).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

async fn attempt(
    client: &HttpClient,
    uri: &Uri,
    target: &Address,
    body: Bytes,
    max_reply: usize,
) -> Result<Outcome, AttemptError> {
    let req = Request::post(uri.clone())
        .header(header::CONTENT_TYPE, spindle_protocol::CONTENT_TYPE)
        .body(Full::new(body))
        .expect("a request built from a parsed URI is valid");
    let resp = client.request(req).await.map_err(|e| AttemptError {
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
    // Bounded: a reply is held whole in memory (and its effects in every snapshot).
    let body = match http_body_util::Limited::new(resp.into_body(), max_reply)
        .collect()
        .await
    {
        Ok(b) => b,
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(AttemptError {
                retryable: false,
                kind: "too_large",
                reason: format!("{uri} replied with more than the function's maxReplyBytes ({max_reply} bytes)"),
            });
        }
        Err(e) => {
            return Err(AttemptError {
                retryable: true,
                kind: "network",
                reason: format!("reading the reply from {uri}: {}", error_chain(e.as_ref())),
            });
        }
    };
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
    wire::from_function(target, reply).map_err(|reason| AttemptError {
        retryable: false,
        kind: "bad_reply",
        reason: format!("{uri} replied with {reason}"),
    })
}

/// StateFun retries these, besides every 5xx: timeouts, conflicts, rate limits.
fn retryable_status(s: StatusCode) -> bool {
    s.is_server_error() || matches!(s.as_u16(), 408 | 409 | 420 | 429 | 499)
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
