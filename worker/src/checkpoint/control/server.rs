//! The serving side of the control RPC, on every worker's peer port: joins, part reports and
//! group-commit wants go to the coordinator (worker 0 only); restores and completions come
//! from it and are carried out by this worker's own [`Member`].
//!
//! Before anything is acted on, a call is checked: the caller is the worker its certificate
//! says (the index it claims), it may send this call to this worker (only worker 0 commands;
//! only worker 0 is reported to), and its numbers can be right ([`checks`](super::checks)).

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status};

use super::{checks, report};
use crate::checkpoint::Progress;
use crate::checkpoint::coordinator::{Event, Member, RestoreFailure};
use crate::checkpoint::store::CheckpointStore;
use crate::keygroup::Layout;
use crate::metrics::Metrics;
use crate::proto::control::{ControlReply, ControlRequest, control_request, coordination_server::Coordination};
use crate::tls::identity::{Caller, ControlKind, authorize, check_claim};
use crate::tls::peer::PeerTls;

pub(crate) struct ControlService {
    pub application: String,
    pub layout: Layout,
    /// Mutual TLS on this port (`None`: plain text, every claim believed).
    pub tls: Option<Arc<PeerTls>>,
    /// Where parts are written, to check the keys reports name (`None`: checkpoints off).
    pub store: Option<CheckpointStore>,
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

    fn deny(&self, from: u32, reason: String) -> Status {
        self.metrics.peer_refused.inc();
        tracing::error!(from, %reason, "refused a control call");
        Status::permission_denied(reason)
    }

    /// The caller is the worker it claims to be, and may send `kind` here.
    fn admit(&self, caller: &Caller, from: u32, kind: ControlKind) -> Result<(), Status> {
        if let Some(tls) = &self.tls {
            check_claim(tls.me(), caller, from).map_err(|r| self.deny(from, r.to_string()))?;
        }
        authorize(kind, from, self.layout.worker).map_err(|r| self.deny(from, r.to_string()))
    }
}

fn kind_of(k: &control_request::Kind) -> ControlKind {
    match k {
        control_request::Kind::Join(_) => ControlKind::Join,
        control_request::Kind::Part(_) => ControlKind::Part,
        control_request::Kind::Want(_) => ControlKind::Want,
        control_request::Kind::Restore(_) => ControlKind::Restore,
        control_request::Kind::Completed(_) => ControlKind::Completed,
        control_request::Kind::Leave(_) => ControlKind::Leave,
        control_request::Kind::Exit(_) => ControlKind::Exit,
        control_request::Kind::Ping(_) => ControlKind::Ping,
    }
}

#[tonic::async_trait]
impl Coordination for ControlService {
    async fn control(&self, request: Request<ControlRequest>) -> Result<Response<ControlReply>, Status> {
        let caller = match &self.tls {
            None => Caller::Unauthenticated,
            Some(tls) => {
                let certs = crate::tls::peer::request_certs(&request);
                let from = request.get_ref().from_worker;
                tls.caller(certs.as_deref().map(Vec::as_slice))
                    .map_err(|r| self.deny(from, r.to_string()))?
            }
        };
        let req = request.into_inner();
        let (me, workers) = (self.layout.worker, self.layout.workers);
        let from = req.from_worker;
        if req.application != self.application {
            tracing::error!(ours = %self.application, theirs = %req.application, "a control call of another application");
            return Err(self.refuse(
                from,
                format!(
                    "the call names application `{}`, which this worker does not run",
                    req.application
                ),
            ));
        }
        if from >= workers || from == me {
            return Err(self.refuse(from, format!("worker {from} cannot call this worker")));
        }
        let Some(kind) = req.kind else {
            return Err(Status::invalid_argument("a control request needs a kind"));
        };
        self.admit(&caller, from, kind_of(&kind))?;
        let bad = |e: checks::NumberError| self.refuse(from, e.to_string());
        match kind {
            control_request::Kind::Join(j) => {
                if j.workers != workers || j.key_groups != self.layout.key_groups {
                    tracing::error!(
                        workers,
                        key_groups = self.layout.key_groups,
                        their_workers = j.workers,
                        their_key_groups = j.key_groups,
                        "a worker with another layout joined"
                    );
                    return Err(self.refuse(
                        from,
                        format!(
                            "the caller's layout ({} workers, {} key groups) differs from the coordinator's",
                            j.workers, j.key_groups
                        ),
                    ));
                }
                self.to_coordinator(Event::Join {
                    worker: from,
                    incarnation: j.incarnation,
                })?
            }
            control_request::Kind::Part(p) => {
                checks::reported(p.generation, p.checkpoint).map_err(bad)?;
                let result = if p.error.is_empty() {
                    if let Some(store) = &self.store {
                        let expected = store.part_key(p.checkpoint, p.generation, from);
                        checks::part_key(&p.key, &expected, from).map_err(bad)?;
                    }
                    Ok(report::from_wire(&p, from, self.layout.key_groups, self.store.as_ref())
                        .map_err(|e| self.refuse(from, e))?)
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
            control_request::Kind::Restore(r) => {
                checks::restore(r.generation, r.checkpoint).map_err(bad)?;
                let poison: Arc<[crate::poison::MessageId]> = r.poison.into();
                self.local
                    .restore(r.generation, r.checkpoint, poison)
                    .await
                    .map_err(|e| {
                        let message = format!("restoring checkpoint {}: {e}", r.checkpoint);
                        match e {
                            // The coordinator falls back to an older checkpoint.
                            RestoreFailure::Damaged(_) => Status::data_loss(message),
                            RestoreFailure::Failed(_) => Status::unavailable(message),
                        }
                    })?;
            }
            control_request::Kind::Completed(c) => {
                let now = *self.progress.borrow();
                // A completion of another generation is stale (or early): nothing to do.
                if c.generation == now.generation
                    && checks::completed(c.generation, c.checkpoint, now.completed).map_err(bad)?
                {
                    self.local.completed(c.generation, c.checkpoint).await
                }
            }
            control_request::Kind::Want(w) => {
                checks::reported(w.generation, w.checkpoint).map_err(bad)?;
                self.to_coordinator(Event::Want {
                    generation: w.generation,
                    checkpoint: w.checkpoint,
                })?
            }
            control_request::Kind::Leave(_) => self.to_coordinator(Event::Leaving { worker: from })?,
            control_request::Kind::Ping(p) => {
                checks::ping(p.generation).map_err(bad)?;
                let (generation, in_flight) = self
                    .local
                    .ping(p.generation, std::time::Duration::ZERO)
                    .await
                    .unwrap_or_default();
                return Ok(Response::new(ControlReply {
                    incarnation: self.incarnation,
                    generation: self.progress.borrow().generation,
                    in_flight: in_flight
                        .into_iter()
                        .map(|m| crate::proto::control::InFlight {
                            id: m.id,
                            target: m.target,
                        })
                        .collect(),
                    in_flight_generation: generation,
                }));
            }
            control_request::Kind::Exit(e) => {
                checks::restore(e.generation, e.checkpoint).map_err(bad)?;
                self.local.exit(e.generation, e.checkpoint).await
            }
        }
        Ok(Response::new(ControlReply {
            incarnation: self.incarnation,
            generation: self.progress.borrow().generation,
            ..Default::default()
        }))
    }
}
