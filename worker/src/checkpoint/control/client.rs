//! The calling side of the control RPC: a client per other worker, the coordinator's view of a
//! remote worker ([`RemoteMember`]), and the join announcement of a worker that is not the
//! coordinator.

use std::sync::Arc;
use std::time::Duration;

use tonic::Status;
use tonic::transport::Channel;

use crate::checkpoint::coordinator::{Member, MemberFuture, RestoreFailure};
use crate::peer::Cluster;
use crate::poison::{InFlight, MessageId};
use crate::proto::control::{
    Completed, ControlReply, ControlRequest, Exit, Join, Ping, Restore, control_request,
    coordination_client::CoordinationClient,
};
use crate::stop::{CancellationToken, pause};
use crate::tls::peer::{self as tls, PeerTls};

/// Control clients to the other workers of this application.
pub(crate) struct ControlClients {
    application: String,
    me: u32,
    /// By worker index; `None` at this worker. Lazily connected: tonic reconnects on demand.
    clients: Vec<Option<CoordinationClient<Channel>>>,
}

impl ControlClients {
    pub fn new(cluster: &Cluster, application: &str, tls: Option<&PeerTls>) -> ControlClients {
        let clients = cluster
            .peers
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                if i as u32 == cluster.index {
                    return None;
                }
                let endpoint = tls::endpoint(addr, Duration::from_secs(1)).ok()?;
                let channel = tls::connect_lazy(tls, endpoint, i as u32).ok()?;
                Some(CoordinationClient::new(channel))
            })
            .collect();
        ControlClients {
            application: application.to_string(),
            me: cluster.index,
            clients,
        }
    }

    pub async fn call(&self, to: u32, kind: control_request::Kind, timeout: Duration) -> Result<ControlReply, Status> {
        let Some(Some(client)) = self.clients.get(to as usize) else {
            return Err(Status::invalid_argument(format!("no control client for worker {to}")));
        };
        let request = ControlRequest {
            application: self.application.clone(),
            from_worker: self.me,
            kind: Some(kind),
        };
        let mut client = client.clone();
        match tokio::time::timeout(timeout, client.control(request)).await {
            Ok(r) => r.map(tonic::Response::into_inner),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "worker {to} did not answer within {timeout:?}"
            ))),
        }
    }
}

/// Another worker, as the coordinator commands it.
pub(crate) struct RemoteMember {
    pub clients: Arc<ControlClients>,
    pub worker: u32,
}

impl Member for RemoteMember {
    fn restore(
        &self,
        generation: u64,
        checkpoint: u64,
        poison: Arc<[MessageId]>,
    ) -> MemberFuture<Result<u64, RestoreFailure>> {
        let (clients, worker) = (self.clients.clone(), self.worker);
        Box::pin(async move {
            let kind = control_request::Kind::Restore(Restore {
                generation,
                checkpoint,
                poison: poison.to_vec(),
            });
            match clients.call(worker, kind, Duration::from_secs(120)).await {
                Ok(r) if r.generation == generation => Ok(r.incarnation),
                Ok(r) => Err(RestoreFailure::Failed(format!(
                    "answered for generation {}",
                    r.generation
                ))),
                Err(status) if status.code() == tonic::Code::DataLoss => {
                    Err(RestoreFailure::Damaged(status.message().to_string()))
                }
                Err(status) => Err(RestoreFailure::Failed(status.to_string())),
            }
        })
    }

    fn completed(&self, generation: u64, checkpoint: u64) -> MemberFuture<()> {
        let (clients, worker) = (self.clients.clone(), self.worker);
        Box::pin(async move {
            let kind = control_request::Kind::Completed(Completed { generation, checkpoint });
            let _ = clients.call(worker, kind, Duration::from_secs(2)).await;
        })
    }

    fn ping(&self, generation: u64, timeout: Duration) -> MemberFuture<Result<(u64, Vec<InFlight>), String>> {
        let (clients, worker) = (self.clients.clone(), self.worker);
        Box::pin(async move {
            let kind = control_request::Kind::Ping(Ping { generation });
            let reply = clients.call(worker, kind, timeout).await.map_err(|s| s.to_string())?;
            // A worker reports at most `MAX_REPORTED`; more is not believed.
            let messages = reply
                .in_flight
                .into_iter()
                .take(crate::poison::MAX_REPORTED)
                .map(|m| InFlight {
                    id: m.id,
                    target: m.target.chars().take(512).collect(),
                })
                .collect();
            Ok((reply.in_flight_generation, messages))
        })
    }

    fn exit(&self, generation: u64, checkpoint: u64) -> MemberFuture<()> {
        let (clients, worker) = (self.clients.clone(), self.worker);
        Box::pin(async move {
            // A few tries: a worker that misses it exits at its own deadline instead.
            for _ in 0..3 {
                let kind = control_request::Kind::Exit(Exit { generation, checkpoint });
                if clients.call(worker, kind, Duration::from_secs(2)).await.is_ok() {
                    return;
                }
            }
        })
    }
}

/// What a worker other than the coordinator announces when it starts.
pub(crate) struct Announcement {
    pub incarnation: u64,
    pub workers: u32,
    pub key_groups: u32,
}

/// A worker other than the coordinator announces itself until the coordinator has heard it;
/// the coordinator then rolls the application back to include this worker's (empty) memory.
pub(crate) async fn join(
    clients: Arc<ControlClients>,
    me: Announcement,
    refused: prometheus_client::metrics::counter::Counter,
    stop: CancellationToken,
) {
    let kind = control_request::Kind::Join(Join {
        incarnation: me.incarnation,
        workers: me.workers,
        key_groups: me.key_groups,
    });
    let mut failures = 0u32;
    loop {
        match clients.call(0, kind.clone(), Duration::from_secs(2)).await {
            Ok(_) => {
                tracing::info!(
                    incarnation = me.incarnation,
                    "joined the coordinator; waiting to be restored"
                );
                return;
            }
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                refused.inc();
                if failures.is_multiple_of(50) {
                    tracing::error!(
                        reason = status.message(),
                        "the coordinator (worker 0) refused this worker"
                    );
                }
                failures += 1;
            }
            Err(status) => {
                failures += 1;
                if failures.is_multiple_of(50) {
                    tracing::warn!(%status, "the coordinator (worker 0) does not answer yet");
                }
            }
        }
        if !pause(&stop, Duration::from_millis(20)).await {
            return;
        }
    }
}
