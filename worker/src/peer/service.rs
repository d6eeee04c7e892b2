//! The receiving side: the message streams every worker serves to its peers (`Exchange`).
//! Batches go into the current generation's inbox, once each, in order.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{Mutex, Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::deadletter::{Payload, kind};
use crate::inbox::{Admission, Current, Entry, Refused};
use crate::keygroup::Layout;
use crate::metrics::Metrics;
use crate::proto::from_wire;
use crate::proto::peer::{self as proto, Frame, Reply, frame, peer_server::Peer, reply};
use crate::tls::identity::{Caller, check_claim};
use crate::tls::peer::PeerTls;

use super::sequence::{ChannelState, Verdict, WireError, check_batch};

/// Replies buffered per stream (acknowledgements are small and cumulative).
const REPLY_BUFFER: usize = 16;

/// Per sending peer: the generation and what was delivered in it. A tokio mutex because
/// delivery waits for admission while holding it: two streams from one sender (a reconnect
/// racing the old stream) then deliver each batch exactly once, in order.
type Delivered = Arc<Mutex<ChannelState>>;

#[derive(Clone)]
pub(crate) struct PeerService {
    pub application: String,
    pub layout: Layout,
    /// Mutual TLS on this port (`None`: plain text, every claim believed).
    pub tls: Option<Arc<PeerTls>>,
    pub metrics: Arc<Metrics>,
    /// Bounds messages from peers delivered but not yet processed (`maxBufferedMessages`);
    /// waiting for it is what stalls a sender. Outlives generations: permits held by a dropped
    /// generation's messages come back when they are dropped.
    pub admission: Arc<Semaphore>,
    pub current: Current,
    /// Batch numbering starts afresh in every generation: counters of an older one are replaced.
    pub delivered: Arc<std::sync::Mutex<HashMap<u32, (u64, Delivered)>>>,
}

impl PeerService {
    /// Who opened the stream, from its certificate.
    fn caller(&self, certs: Option<&[rustls::pki_types::CertificateDer<'static>]>) -> Result<Caller, Status> {
        match &self.tls {
            None => Ok(Caller::Unauthenticated),
            Some(tls) => tls.caller(certs).map_err(|r| self.refuse(None, r.to_string(), true)),
        }
    }

    fn refuse(&self, from: Option<u32>, reason: String, identity: bool) -> Status {
        self.metrics.peer_refused.inc();
        tracing::error!(from, %reason, "refused a peer");
        if identity {
            Status::permission_denied(reason)
        } else {
            Status::failed_precondition(reason)
        }
    }

    /// A peer must be who its certificate says, run the same application with the same
    /// layout, and have dialled this worker. Refusals name what the caller sent, not this
    /// worker's values (they are in this worker's log).
    fn check(&self, h: &proto::Hello, caller: &Caller) -> Result<(), Status> {
        let me = self.layout.worker;
        let workers = self.layout.workers;
        if let Some(tls) = &self.tls {
            check_claim(tls.me(), caller, h.from_worker)
                .map_err(|r| self.refuse(Some(h.from_worker), r.to_string(), true))?;
        }
        if h.application != self.application {
            tracing::error!(ours = %self.application, theirs = %h.application, "a peer of another application");
            return Err(self.refuse(
                Some(h.from_worker),
                format!(
                    "the Hello names application `{}`, which this worker does not run",
                    h.application
                ),
                false,
            ));
        }
        if h.workers != workers || h.key_groups != self.layout.key_groups {
            tracing::error!(
                workers,
                key_groups = self.layout.key_groups,
                their_workers = h.workers,
                their_key_groups = h.key_groups,
                "a peer with another layout"
            );
            return Err(self.refuse(
                Some(h.from_worker),
                format!(
                    "the Hello's layout ({} workers, {} key groups) differs from this worker's",
                    h.workers, h.key_groups
                ),
                false,
            ));
        }
        if h.to_worker != me {
            return Err(self.refuse(
                Some(h.from_worker),
                format!("the peer dialled worker {} but reached another worker", h.to_worker),
                false,
            ));
        }
        if h.from_worker >= workers || h.from_worker == me {
            return Err(self.refuse(
                Some(h.from_worker),
                format!("worker {} cannot open a stream to this worker", h.from_worker),
                false,
            ));
        }
        Ok(())
    }

    fn delivered(&self, from: u32, generation: u64) -> Delivered {
        let mut map = self.delivered.lock().expect("delivered map lock");
        let entry = map.entry(from).or_insert_with(|| (generation, Arc::default()));
        if entry.0 != generation {
            *entry = (generation, Arc::default());
        }
        entry.1.clone()
    }

    /// Delivers a batch unless it was delivered before; returns the highest batch delivered,
    /// or why the batch's numbers cannot be right (the stream then ends).
    async fn deliver(
        &self,
        entry: &Entry,
        from: u32,
        delivered: &Mutex<ChannelState>,
        batch: proto::Batch,
    ) -> Result<u64, WireError> {
        let mut last = delivered.lock().await;
        match check_batch(*last, batch.seq, batch.barrier, entry.restored)? {
            Verdict::Duplicate => return Ok(last.seq),
            Verdict::Deliver => {}
        }
        for wire in batch.envelopes {
            let permit = match self.admission.clone().acquire_owned().await {
                Ok(p) => p,
                Err(_) => return Ok(last.seq),
            };
            let admission = Admission::new(permit, self.metrics.peer_in_process.clone());
            match from_wire(&wire) {
                Ok(env) => {
                    if entry.inbox.deliver_routed(env, Some(admission), from).is_err() {
                        return Ok(last.seq);
                    }
                }
                Err(reason) => {
                    let refused = Refused {
                        kind: kind::BAD_REPLY,
                        reason: format!("malformed envelope from worker {from}: {reason}"),
                        payload: Payload::Record {
                            target: format!("{}/{}", wire.target_type, wire.target_id),
                            typename: wire.typename,
                            value: wire.value,
                        },
                    };
                    if entry.inbox.dead_letter(refused).is_err() {
                        return Ok(last.seq);
                    }
                }
            }
        }
        if batch.barrier != 0 && entry.inbox.barrier(from, batch.barrier).is_err() {
            return Ok(last.seq);
        }
        *last = last.after(batch.seq, batch.barrier);
        Ok(last.seq)
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    type ExchangeStream = ReceiverStream<Result<Reply, Status>>;

    async fn exchange(&self, request: Request<Streaming<Frame>>) -> Result<Response<Self::ExchangeStream>, Status> {
        let certs = crate::tls::peer::request_certs(&request);
        let caller = self.caller(certs.as_deref().map(Vec::as_slice))?;
        let mut frames = request.into_inner();
        let hello = match frames.message().await? {
            Some(Frame {
                kind: Some(frame::Kind::Hello(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first frame of a peer stream must be Hello",
                ));
            }
        };
        self.check(&hello, &caller)?;
        // Streams belong to one generation: after a rollback both sides start afresh, and
        // frames of an older generation never reach the new one.
        let me = self.layout.worker;
        let entry = match self.current.now() {
            None => return Err(Status::unavailable(format!("worker {me} is restoring"))),
            // Not said which is newer, nor this worker's number: the sender retries, and a
            // rollback brings both to the same generation.
            Some(e) if e.generation != hello.generation => {
                return Err(Status::unavailable(
                    "the stream's generation is not the one this worker runs; retry after the rollback",
                ));
            }
            Some(e) => e,
        };
        let from = hello.from_worker;
        let delivered = self.delivered(from, entry.generation);
        let (tx, rx) = mpsc::channel(REPLY_BUFFER);
        let welcome = reply::Kind::Welcome(proto::Welcome {
            delivered: delivered.lock().await.seq,
        });
        let _ = tx.send(Ok(Reply { kind: Some(welcome) })).await;
        tracing::debug!(from, generation = entry.generation, "peer stream open");
        let this = self.clone();
        // Ends with the stream, the generation, or the worker (the generation's token is a
        // child of the worker's).
        tokio::spawn(async move {
            loop {
                let frame = tokio::select! {
                    f = frames.message() => f,
                    _ = entry.stop.cancelled() => break,
                };
                let kind = match frame {
                    Ok(Some(Frame { kind: Some(k) })) => k,
                    Ok(Some(Frame { kind: None })) => continue,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(from, %status, "peer stream ended");
                        break;
                    }
                };
                match kind {
                    frame::Kind::Batch(batch) => {
                        let upto = match this.deliver(&entry, from, &delivered, batch).await {
                            Ok(upto) => upto,
                            Err(e) => {
                                let reason = e.to_string();
                                this.metrics.peer_refused.inc();
                                tracing::error!(from, %reason, "refused a batch; ending the stream");
                                let _ = tx.send(Err(Status::invalid_argument(reason))).await;
                                break;
                            }
                        };
                        let ack = Reply {
                            kind: Some(reply::Kind::Ack(proto::Ack { delivered: upto })),
                        };
                        if tx.send(Ok(ack)).await.is_err() {
                            break;
                        }
                    }
                    frame::Kind::Hello(_) => {
                        let _ = tx
                            .send(Err(Status::invalid_argument("Hello sent twice on one stream")))
                            .await;
                        break;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
