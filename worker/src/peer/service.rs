//! The receiving side: the gRPC service every worker serves to its peers — the message
//! streams (`Exchange`) and the control calls of checkpoints and rollback (`Control`).

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::from_wire;
use super::proto::{
    self, ControlReply, ControlRequest, Frame, Reply, control_request, frame, peer_server::Peer, reply,
};
use crate::checkpoint::coordinator::Event;
use crate::checkpoint::store::PartInfo;
use crate::deadletter::{DeadMessage, kind};
use crate::node::Node;
use crate::partition::Input;
use crate::router::Admission;
use crate::world::World;

/// Replies buffered per stream (acknowledgements are small and cumulative).
const REPLY_BUFFER: usize = 16;

#[derive(Clone)]
pub struct PeerService {
    pub node: Arc<Node>,
}

impl PeerService {
    /// A peer must run the same application with the same layout, and have dialled this worker.
    fn check(&self, h: &proto::Hello) -> Result<(), Status> {
        let node = &self.node;
        let me = node.me();
        let refuse = |reason: String| {
            node.metrics.peer_refused.inc();
            tracing::error!(from = h.from_worker, %reason, "refused a peer");
            Err(Status::failed_precondition(reason))
        };
        if h.application != node.app.name {
            return refuse(format!(
                "worker {me} runs application `{}`, but the peer (worker {}) runs `{}`",
                node.app.name, h.from_worker, h.application
            ));
        }
        if h.workers != node.cluster.workers() || h.key_groups != node.app.key_groups {
            return refuse(format!(
                "worker {me} has {} workers and {} key groups, the peer (worker {}) {} and {}",
                node.cluster.workers(),
                node.app.key_groups,
                h.from_worker,
                h.workers,
                h.key_groups
            ));
        }
        if h.to_worker != me {
            return refuse(format!(
                "the peer dialled worker {} but reached worker {me}",
                h.to_worker
            ));
        }
        if h.from_worker >= node.cluster.workers() || h.from_worker == me {
            return refuse(format!(
                "there is no other worker {} among {}",
                h.from_worker,
                node.cluster.workers()
            ));
        }
        Ok(())
    }

    /// Delivers a batch unless it was delivered before; returns the highest batch delivered.
    async fn deliver(&self, world: &World, from: u32, delivered: &Mutex<u64>, batch: proto::Batch) -> u64 {
        let mut last = delivered.lock().await;
        if batch.seq <= *last {
            return *last;
        }
        for wire in batch.envelopes {
            let permit = match self.node.peer_admission.clone().acquire_owned().await {
                Ok(p) => p,
                Err(_) => return *last,
            };
            let admission = Admission::new(permit, self.node.metrics.peer_in_process.clone());
            match from_wire(&wire) {
                Ok(env) => {
                    if world.router.deliver_routed(env, Some(admission), from).is_err() {
                        return *last;
                    }
                }
                Err(reason) => self.node.dead_letters.record(
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
        if batch.barrier != 0 {
            let barrier = Input::Barrier {
                from,
                checkpoint: batch.barrier,
            };
            if world.router.send(barrier).is_err() {
                return *last;
            }
        }
        *last = batch.seq;
        *last
    }

    fn to_coordinator(&self, ev: Event) -> Result<(), Status> {
        match &self.node.coordinator {
            Some(tx) => tx
                .send(ev)
                .map_err(|_| Status::unavailable("the worker is shutting down")),
            None => Err(Status::failed_precondition(format!(
                "worker {} is not the coordinator (worker 0 is)",
                self.node.me()
            ))),
        }
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
        let world = match self.node.current() {
            None => return Err(Status::unavailable(format!("worker {} is restoring", self.node.me()))),
            Some(w) if w.generation != hello.generation => {
                return Err(Status::unavailable(format!(
                    "generation {} does not match this worker's {}",
                    hello.generation, w.generation
                )));
            }
            Some(w) => w,
        };
        let from = hello.from_worker;
        let delivered = world.delivered.get(&from).expect("checked: a peer index").clone();
        let (tx, rx) = mpsc::channel(REPLY_BUFFER);
        let welcome = reply::Kind::Welcome(proto::Welcome {
            delivered: *delivered.lock().await,
        });
        let _ = tx.send(Ok(Reply { kind: Some(welcome) })).await;
        tracing::debug!(from, generation = world.generation, "peer stream open");
        let this = self.clone();
        let mut stopping = world.stopping();
        let mut shutdown = self.node.shutdown.clone();
        // Ends with the stream, the generation, or the worker.
        tokio::spawn(async move {
            loop {
                let frame = tokio::select! {
                    f = frames.message() => f,
                    _ = stopping.wait_for(|s| *s) => break,
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
                        let upto = this.deliver(&world, from, &delivered, batch).await;
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

    async fn control(&self, request: Request<ControlRequest>) -> Result<Response<ControlReply>, Status> {
        let req = request.into_inner();
        let node = &self.node;
        let from = req.from_worker;
        let refuse = |reason: String| {
            node.metrics.peer_refused.inc();
            tracing::error!(from, %reason, "refused a control call");
            Err(Status::failed_precondition(reason))
        };
        if req.application != node.app.name {
            return refuse(format!(
                "worker {} runs application `{}`, but the caller (worker {from}) runs `{}`",
                node.me(),
                node.app.name,
                req.application
            ));
        }
        if from >= node.cluster.workers() || from == node.me() {
            return refuse(format!(
                "there is no other worker {from} among {}",
                node.cluster.workers()
            ));
        }
        match req.kind {
            None => return Err(Status::invalid_argument("a control request needs a kind")),
            Some(control_request::Kind::Join(j)) => {
                if j.workers != node.cluster.workers() || j.key_groups != node.app.key_groups {
                    return refuse(format!(
                        "worker {} has {} workers and {} key groups, the caller (worker {from}) {} and {}",
                        node.me(),
                        node.cluster.workers(),
                        node.app.key_groups,
                        j.workers,
                        j.key_groups
                    ));
                }
                self.to_coordinator(Event::Join {
                    worker: from,
                    incarnation: j.incarnation,
                })?
            }
            Some(control_request::Kind::Part(p)) => {
                let result = if p.error.is_empty() {
                    Ok(PartInfo {
                        worker: from,
                        key: p.key,
                        size: p.size,
                        crc32: p.crc32,
                    })
                } else {
                    Err(p.error)
                };
                self.to_coordinator(Event::Part {
                    generation: p.generation,
                    checkpoint: p.checkpoint,
                    worker: from,
                    result,
                })?;
            }
            Some(control_request::Kind::Restore(r)) => {
                node.restore(r.generation, r.checkpoint)
                    .await
                    .map_err(|e| Status::unavailable(format!("restoring checkpoint {}: {e}", r.checkpoint)))?;
            }
            Some(control_request::Kind::Completed(c)) => node.completed(c.generation, c.checkpoint),
            Some(control_request::Kind::Want(w)) => self.to_coordinator(Event::Want {
                generation: w.generation,
                checkpoint: w.checkpoint,
            })?,
        }
        Ok(Response::new(ControlReply {
            incarnation: node.incarnation,
            generation: node.progress.borrow().generation,
        }))
    }
}
