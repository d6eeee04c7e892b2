//! NATS JetStream egress: publishes each released record to the subject with its idempotency
//! key as `Nats-Msg-Id`, and waits for the stream's acknowledgement. The key is stable across
//! restores, so when a record is published again after a rollback (or a retry after a lost
//! acknowledgement) the stream's duplicate window drops it: exactly once in the stream.
//! Headers: `spindle-typename`, `spindle-source`. Unacknowledged records are retried within
//! `timeout`, then become dead letters.

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};
use spindle_spec::NatsEgress;

use super::retrying::{self, Attempt};
use super::{Closing, EgressRecord, SinkContext};
use crate::brokers::nats::connect;
use crate::stop::CancellationToken;

/// Longest wait for one acknowledgement before the record is published again.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

pub struct NatsSink {
    spec: NatsEgress,
    name: String,
    /// Where relative TLS file paths start.
    base_dir: std::path::PathBuf,
    ctx: SinkContext,
    js: Option<jetstream::Context>,
}

impl NatsSink {
    pub fn new(spec: NatsEgress, name: String, base_dir: std::path::PathBuf, ctx: SinkContext) -> NatsSink {
        NatsSink {
            spec,
            name,
            base_dir,
            ctx,
            js: None,
        }
    }

    pub async fn run(mut self, rx: super::SinkQueue, stop: CancellationToken) {
        let mut rx = Closing::new(rx, stop);
        let mut batch = Vec::with_capacity(512);
        while rx.recv_many(&mut batch, 512).await > 0 {
            let records = std::mem::take(&mut batch);
            self.send(records).await;
        }
    }

    async fn send(&mut self, pending: Vec<EgressRecord>) {
        // A header value NATS cannot carry would make the client panic: such a record can
        // never be published, which makes it a dead letter, not a crash of the sink.
        let (pending, unsendable): (Vec<_>, Vec<_>) = pending.into_iter().partition(|r| {
            header_safe(&r.value.typename)
                && header_safe(&r.source.to_string())
                && r.key.as_deref().is_none_or(header_safe)
        });
        if !unsendable.is_empty() {
            self.done(
                unsendable,
                Err("a header of the record (typename, source or key) holds a control character".into()),
            );
        }
        let (timeout, ctx, name) = (
            self.spec.timeout.map(spindle_spec::HumanDuration::as_duration),
            self.ctx.clone(),
            self.name.clone(),
        );
        if let Some((failed, reason)) = retrying::within(self, pending, timeout, &ctx, &name, "nats_publish").await {
            self.done(failed, Err(reason));
        }
    }

    fn done(&self, records: Vec<EgressRecord>, result: Result<(), String>) {
        self.ctx.finish(&self.name, &records, result);
    }
}

impl Attempt for NatsSink {
    type Pending = EgressRecord;

    /// Publishes everything in `pending`, then waits for the acknowledgements in order; what
    /// was not acknowledged stays in `pending`.
    async fn attempt(&mut self, pending: &mut Vec<EgressRecord>) -> Result<(), String> {
        let js = match &self.js {
            Some(js) => js.clone(),
            None => {
                let client = connect(
                    &self.spec.servers,
                    self.spec.auth.as_ref(),
                    self.spec.tls.as_ref(),
                    &self.base_dir,
                )
                .await?;
                let js = jetstream::new(client);
                self.js = Some(js.clone());
                js
            }
        };
        let mut acks: Vec<(EgressRecord, Result<PublishAckFuture, String>)> = Vec::with_capacity(pending.len());
        for r in pending.drain(..) {
            let mut msg = PublishMessage::build()
                .payload(r.value.bytes.clone())
                .header("spindle-typename", &*r.value.typename)
                .header("spindle-source", r.source.to_string().as_str());
            if let Some(key) = &r.key {
                msg = msg.message_id(&**key);
            }
            let sent = js
                .send_publish(self.spec.subject.clone(), msg)
                .await
                .map_err(|e| e.to_string());
            acks.push((r, sent));
        }
        let mut error = None;
        let mut ok = Vec::new();
        for (r, sent) in acks {
            let acked = match sent {
                Ok(ack) => match tokio::time::timeout(ACK_TIMEOUT, ack).await {
                    Ok(Ok(ack)) => {
                        if ack.duplicate {
                            self.ctx.metrics.egress_duplicates.inc();
                        }
                        Ok(())
                    }
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no acknowledgement within {ACK_TIMEOUT:?}")),
                },
                Err(e) => Err(e),
            };
            match acked {
                Ok(()) => ok.push(r),
                Err(e) => {
                    error.get_or_insert(format!("publishing to {}: {e}", self.spec.subject));
                    pending.push(r);
                }
            }
        }
        self.done(ok, Ok(()));
        match error {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

/// A NATS header value: no control characters (CR and LF among them).
fn header_safe(v: &str) -> bool {
    !v.chars().any(char::is_control)
}
