//! HTTP webhook egress: POSTs each record's value with `Content-Type: application/vnd.{typename}`,
//! retrying network errors and 5xx within the timeout; a record that cannot be delivered
//! becomes a dead letter. `https://` URLs speak TLS (HTTP/2 when the webhook offers it).

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Uri, header};
use http_body_util::Full;
use tokio::sync::Semaphore;

use super::Closing;
use crate::stop::CancellationToken;
use tokio::task::JoinSet;

use super::{EgressRecord, SinkContext, json_line};
use crate::metrics::EgressLabels;
use crate::retry::Backoff;
use crate::tls::client::HttpClient;

/// Longest one POST may wait for an answer before it is tried again.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

pub struct HttpSink {
    client: HttpClient,
    uri: Uri,
    timeout: Option<Duration>,
    max_in_flight: usize,
    name: String,
    ctx: SinkContext,
}

impl HttpSink {
    pub fn new(
        url: &str,
        timeout: Option<Duration>,
        max_in_flight: usize,
        client: HttpClient,
        name: String,
        ctx: SinkContext,
    ) -> std::io::Result<HttpSink> {
        let uri: Uri = url.parse().map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("egress {name}: url `{url}`: {e}"),
            )
        })?;
        Ok(HttpSink {
            client,
            uri,
            timeout,
            max_in_flight,
            name,
            ctx,
        })
    }

    pub async fn run(self, rx: super::SinkQueue, stop: CancellationToken) {
        let mut rx = Closing::new(rx, stop);
        let this = Arc::new(self);
        // Bounds the POSTs in flight to the webhook (`maxInFlight`).
        let slots = Arc::new(Semaphore::new(this.max_in_flight));
        let mut posts = JoinSet::new();
        while let Some(record) = rx.recv().await {
            let permit = slots.clone().acquire_owned().await.expect("never closed");
            let this = this.clone();
            posts.spawn(async move {
                this.deliver(record).await;
                drop(permit);
            });
            while posts.try_join_next().is_some() {}
        }
        while posts.join_next().await.is_some() {}
    }

    async fn deliver(&self, record: EgressRecord) {
        let mut backoff = Backoff::within(self.timeout);
        // The last attempt that failed for a reason other than time: what a timeout reports.
        let mut last: Option<String> = None;
        let outcome = loop {
            let mut req = Request::post(self.uri.clone())
                .header(
                    header::CONTENT_TYPE,
                    format!("application/vnd.{}", record.value.typename),
                )
                .header("x-spindle-egress", self.name.as_str())
                .header("x-spindle-source", record.source.to_string());
            if let Some(key) = &record.key {
                req = req.header("idempotency-key", &**key);
            }
            // A header the record makes (its source address) can be unsendable: that record can
            // never be delivered, which is a dead letter, not a crash of the sink.
            let req = match req.body(Full::new(record.value.bytes.clone())) {
                Ok(req) => req,
                Err(e) => break Err(format!("the record cannot be sent as an HTTP request: {e}")),
            };
            let limit = backoff.remaining(ATTEMPT_TIMEOUT);
            let error = match tokio::time::timeout(limit, self.client.request(req)).await {
                Ok(Ok(resp)) if resp.status().is_success() => break Ok(()),
                Ok(Ok(resp)) if !resp.status().is_server_error() => {
                    break Err(format!("{} answered {}", self.uri, resp.status()));
                }
                Ok(Ok(resp)) => format!("{} answered {}", self.uri, resp.status()),
                Ok(Err(e)) => format!("cannot reach {}: {}", self.uri, crate::tls::client::error_chain(&e)),
                Err(_) => match &last {
                    Some(e) => format!("{e} (and no answer within {limit:?})"),
                    None => format!("no answer from {} within {limit:?}", self.uri),
                },
            };
            last = Some(error.clone());
            let Some(wait) = backoff.next_wait() else {
                break Err(error);
            };
            tracing::debug!(egress = %self.name, %error, "egress POST failed; retrying");
            tokio::time::sleep(wait).await;
        };
        let outcome_label = match outcome {
            Ok(()) => {
                self.ctx.unconfirmed.confirm(std::slice::from_ref(&record));
                if self.ctx.echo {
                    println!("egress {} <- {}", self.name, json_line(&record));
                }
                "ok"
            }
            Err(reason) => {
                self.ctx.give_up(&self.name, std::slice::from_ref(&record), reason);
                "failed"
            }
        };
        self.ctx
            .metrics
            .egress_records
            .get_or_create(&EgressLabels {
                egress: self.name.clone(),
                outcome: outcome_label,
            })
            .inc();
        self.ctx.metrics.egress_pending.dec();
    }
}
