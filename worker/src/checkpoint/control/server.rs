//! The serving side of the control RPC, on every worker's peer port: joins, part reports and
//! group-commit wants go to the coordinator (worker 0 only); restores and completions come
//! from it and are carried out by this worker's own [`Member`].

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status};

use crate::checkpoint::Progress;
use crate::checkpoint::coordinator::{Event, Member};
use crate::checkpoint::manifest::PartInfo;
use crate::keygroup::Layout;
use crate::metrics::Metrics;
use crate::proto::control::{ControlReply, ControlRequest, control_request, coordination_server::Coordination};

pub(crate) struct ControlService {
    pub application: String,
    pub layout: Layout,
    /// The coordinator's events, on the worker that is it.
    pub coordinator: Option<mpsc::UnboundedSender<Event>>,
    /// This worker, as the coordinator commands it.
    pub local: Arc<dyn Member>,
    pub incarnation: u64,
    pub progress: watch::Receiver<Progress>,
    pub metrics: Arc<Metrics>,
}

impl ControlService {
    fn to_coordinator(&self, ev: Event) -> Result<(), Status> {
        match &self.coordinator {
            Some(tx) => tx
                .send(ev)
                .map_err(|_| Status::unavailable("the worker is shutting down")),
            None => Err(Status::failed_precondition(format!(
                "worker {} is not the coordinator (worker 0 is)",
                self.layout.worker
            ))),
        }
    }

    fn refuse(&self, from: u32, reason: String) -> Status {
        self.metrics.peer_refused.inc();
        tracing::error!(from, %reason, "refused a control call");
        Status::failed_precondition(reason)
    }
}

#[tonic::async_trait]
impl Coordination for ControlService {
    async fn control(&self, request: Request<ControlRequest>) -> Result<Response<ControlReply>, Status> {
        let req = request.into_inner();
        let (me, workers) = (self.layout.worker, self.layout.workers);
        let from = req.from_worker;
        if req.application != self.application {
            return Err(self.refuse(
                from,
                format!(
                    "worker {me} runs application `{}`, but the caller (worker {from}) runs `{}`",
                    self.application, req.application
                ),
            ));
        }
        if from >= workers || from == me {
            return Err(self.refuse(from, format!("there is no other worker {from} among {workers}")));
        }
        match req.kind {
            None => return Err(Status::invalid_argument("a control request needs a kind")),
            Some(control_request::Kind::Join(j)) => {
                if j.workers != workers || j.key_groups != self.layout.key_groups {
                    return Err(self.refuse(
                        from,
                        format!(
                            "worker {me} has {workers} workers and {} key groups, the caller (worker {from}) {} and {}",
                            self.layout.key_groups, j.workers, j.key_groups
                        ),
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
                    clean: p.clean,
                })?;
            }
            Some(control_request::Kind::Restore(r)) => {
                self.local
                    .restore(r.generation, r.checkpoint)
                    .await
                    .map_err(|e| Status::unavailable(format!("restoring checkpoint {}: {e}", r.checkpoint)))?;
            }
            Some(control_request::Kind::Completed(c)) => self.local.completed(c.generation, c.checkpoint).await,
            Some(control_request::Kind::Want(w)) => self.to_coordinator(Event::Want {
                generation: w.generation,
                checkpoint: w.checkpoint,
            })?,
            Some(control_request::Kind::Leave(_)) => self.to_coordinator(Event::Leaving { worker: from })?,
            Some(control_request::Kind::Exit(e)) => self.local.exit(e.generation, e.checkpoint).await,
        }
        Ok(Response::new(ControlReply {
            incarnation: self.incarnation,
            generation: self.progress.borrow().generation,
        }))
    }
}
