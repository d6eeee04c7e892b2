//! The receiving side: the gRPC service every worker serves to its peers.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{Mutex, Semaphore, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::proto::{self, Frame, Reply, frame, peer_server::Peer, reply};
use super::{Cluster, from_wire};
use crate::app::AppConfig;
use crate::deadletter::{DeadLetters, DeadMessage, kind};
use crate::metrics::Metrics;
use crate::router::{Admission, Router};

/// Replies buffered per stream (acknowledgements are small and cumulative).
const REPLY_BUFFER: usize = 16;

#[derive(Clone)]
pub struct PeerService {
    pub app: Arc<AppConfig>,
    pub cluster: Cluster,
    pub router: Router,
    /// Bounds messages from peers that are delivered but not yet processed
    /// (`maxBufferedMessages`); waiting for it is what stalls a sender.
    pub admission: Arc<Semaphore>,
    /// Per sending worker: the highest batch delivered. A tokio mutex because delivery waits
    /// for admission while holding it: two streams from one sender (a reconnect racing the old
    /// stream) then deliver each batch exactly once, in order.
    pub delivered: Arc<HashMap<u32, Arc<Mutex<u64>>>>,
    pub metrics: Arc<Metrics>,
    pub dead_letters: Arc<DeadLetters>,
    pub shutdown: watch::Receiver<bool>,
}

impl PeerService {
    pub fn new(
        app: Arc<AppConfig>,
        cluster: Cluster,
        router: Router,
        metrics: Arc<Metrics>,
        dead_letters: Arc<DeadLetters>,
        shutdown: watch::Receiver<bool>,
    ) -> PeerService {
        let delivered = (0..cluster.workers())
            .filter(|&i| i != cluster.index)
            .map(|i| (i, Arc::new(Mutex::new(0))))
            .collect();
        PeerService {
            admission: Arc::new(Semaphore::new(app.max_buffered_messages)),
            app,
            cluster,
            router,
            delivered: Arc::new(delivered),
            metrics,
            dead_letters,
            shutdown,
        }
    }

    /// A peer must run the same application with the same layout, and have dialled this worker.
    fn check(&self, h: &proto::Hello) -> Result<Arc<Mutex<u64>>, Status> {
        let me = self.cluster.index;
        let refuse = |reason: String| {
            self.metrics.peer_refused.inc();
            tracing::error!(from = h.from_worker, %reason, "refused a peer");
            Err(Status::failed_precondition(reason))
        };
        if h.application != self.app.name {
            return refuse(format!(
                "worker {me} runs application `{}`, but the peer (worker {}) runs `{}`",
                self.app.name, h.from_worker, h.application
            ));
        }
        if h.workers != self.cluster.workers() || h.key_groups != self.app.key_groups {
            return refuse(format!(
                "worker {me} has {} workers and {} key groups, the peer (worker {}) {} and {}",
                self.cluster.workers(),
                self.app.key_groups,
                h.from_worker,
                h.workers,
                h.key_groups
            ));
        }
        if h.to_worker != me {
            return refuse(format!("the peer dialled worker {} but reached worker {me}", h.to_worker));
        }
        if h.generation != self.cluster.generation {
            return refuse(format!(
                "generation {} does not match this worker's {}",
                h.generation, self.cluster.generation
            ));
        }
        match self.delivered.get(&h.from_worker) {
            Some(d) => Ok(d.clone()),
            None => refuse(format!("there is no worker {} among {}", h.from_worker, self.cluster.workers())),
        }
    }

    /// Delivers a batch unless it was delivered before; returns the highest batch delivered.
    async fn deliver(&self, from: u32, delivered: &Mutex<u64>, batch: proto::Batch) -> u64 {
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
                    if self.router.deliver_routed(env, Some(admission)).is_err() {
                        return *last;
                    }
                }
                Err(reason) => self.dead_letters.record(
                    kind::BAD_REPLY,
                    format!("malformed envelope from worker {from}: {reason}"),
                    vec![DeadMessage {
                        target: format!("{}/{}", wire.target_type, wire.target_id),
                        caller: None,
                        typename: wire.typename,
                        value_base64: String::new(),
                    }],
                ),
            }
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
            Some(Frame { kind: Some(frame::Kind::Hello(h)) }) => h,
            _ => return Err(Status::invalid_argument("the first frame of a peer stream must be Hello")),
        };
        let delivered = self.check(&hello)?;
        let from = hello.from_worker;
        let (tx, rx) = mpsc::channel(REPLY_BUFFER);
        let welcome = reply::Kind::Welcome(proto::Welcome { delivered: *delivered.lock().await });
        let _ = tx.send(Ok(Reply { kind: Some(welcome) })).await;
        tracing::debug!(from, "peer stream open");
        let this = self.clone();
        let mut shutdown = self.shutdown.clone();
        // Ends with the stream, or with the worker.
        tokio::spawn(async move {
            loop {
                let frame = tokio::select! {
                    f = frames.message() => f,
                    _ = shutdown.wait_for(|s| *s) => break,
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
                        let upto = this.deliver(from, &delivered, batch).await;
                        let ack = Reply { kind: Some(reply::Kind::Ack(proto::Ack { delivered: upto })) };
                        if tx.send(Ok(ack)).await.is_err() {
                            break;
                        }
                    }
                    frame::Kind::Hello(_) => {
                        let _ = tx.send(Err(Status::invalid_argument("Hello sent twice on one stream"))).await;
                        break;
                    }
                    frame::Kind::Barrier(_) | frame::Kind::Fence(_) => {
                        let msg = "checkpoint barriers and generation fences are not supported by this worker version";
                        let _ = tx.send(Err(Status::unimplemented(msg))).await;
                        break;
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
