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

/// Replies buffered per stream (acknowledgements are small and cumulative).
const REPLY_BUFFER: usize = 16;

/// Per sending peer: the generation and the highest batch delivered in it. A tokio mutex
/// because delivery waits for admission while holding it: two streams from one sender (a
/// reconnect racing the old stream) then deliver each batch exactly once, in order.
type Delivered = Arc<Mutex<u64>>;

#[derive(Clone)]
pub(crate) struct PeerService {
    pub application: String,
    pub layout: Layout,
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
    /// A peer must run the same application with the same layout, and have dialled this worker.
    fn check(&self, h: &proto::Hello) -> Result<(), Status> {
        let me = self.layout.worker;
        let workers = self.layout.workers;
        let refuse = |reason: String| {
            self.metrics.peer_refused.inc();
            tracing::error!(from = h.from_worker, %reason, "refused a peer");
            Err(Status::failed_precondition(reason))
        };
        if h.application != self.application {
            return refuse(format!(
                "worker {me} runs application `{}`, but the peer (worker {}) runs `{}`",
                self.application, h.from_worker, h.application
            ));
        }
        if h.workers != workers || h.key_groups != self.layout.key_groups {
            return refuse(format!(
                "worker {me} has {workers} workers and {} key groups, the peer (worker {}) {} and {}",
                self.layout.key_groups, h.from_worker, h.workers, h.key_groups
            ));
        }
        if h.to_worker != me {
            return refuse(format!(
                "the peer dialled worker {} but reached worker {me}",
                h.to_worker
            ));
        }
        if h.from_worker >= workers || h.from_worker == me {
            return refuse(format!("there is no other worker {} among {workers}", h.from_worker));
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

    /// Delivers a batch unless it was delivered before; returns the highest batch delivered.
    async fn deliver(&self, entry: &Entry, from: u32, delivered: &Mutex<u64>, batch: proto::Batch) -> u64 {
        let mut last = delivered.lock().await;
        if batch.seq <= *last {
            return *last;
        }
        for wire in batch.envelopes {
            let permit = match self.admission.clone().acquire_owned().await {
                Ok(p) => p,
                Err(_) => return *last,
            };
            let admission = Admission::new(permit, self.metrics.peer_in_process.clone());
            match from_wire(&wire) {
                Ok(env) => {
                    if entry.inbox.deliver_routed(env, Some(admission), from).is_err() {
                        return *last;
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
                        return *last;
                    }
                }
            }
        }
        if batch.barrier != 0 && entry.inbox.barrier(from, batch.barrier).is_err() {
            return *last;
        }
        *last = batch.seq;
        *last
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    type ExchangeStream = ReceiverStream<Result<Reply, Status>>;

    async fn exchange(&self, request: Request<Streaming<Frame>>) -> Result<Response<Self::ExchangeStream>, Status> {
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
        self.check(&hello)?;
        // Streams belong to one generation: after a rollback both sides start afresh, and
        // frames of an older generation never reach the new one.
        let me = self.layout.worker;
        let entry = match self.current.now() {
            None => return Err(Status::unavailable(format!("worker {me} is restoring"))),
            Some(e) if e.generation != hello.generation => {
                return Err(Status::unavailable(format!(
                    "generation {} does not match this worker's {}",
                    hello.generation, e.generation
                )));
            }
            Some(e) => e,
        };
        let from = hello.from_worker;
        let delivered = self.delivered(from, entry.generation);
        let (tx, rx) = mpsc::channel(REPLY_BUFFER);
        let welcome = reply::Kind::Welcome(proto::Welcome {
            delivered: *delivered.lock().await,
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
                        let upto = this.deliver(&entry, from, &delivered, batch).await;
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
