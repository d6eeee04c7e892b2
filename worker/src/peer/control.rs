//! Unary control calls between a worker and the coordinator (worker 0): join, restore, part
//! written, checkpoint completed. Each call is idempotent, so a lost one is simply retried or
//! superseded by a newer one.

use std::sync::Arc;
use std::time::Duration;

use tonic::Status;
use tonic::transport::{Channel, Endpoint};

use super::Cluster;
use super::proto::{ControlReply, ControlRequest, control_request, peer_client::PeerClient};
use crate::node::Node;

pub struct ControlClients {
    application: String,
    me: u32,
    /// By worker index; `None` at this worker. Lazily connected: tonic reconnects on demand.
    clients: Vec<Option<PeerClient<Channel>>>,
}

impl ControlClients {
    pub fn new(cluster: &Cluster, application: &str) -> ControlClients {
        let clients = cluster
            .peers
            .iter()
            .enumerate()
            .map(|(i, addr)| {
                if i as u32 == cluster.index {
                    return None;
                }
                let endpoint = Endpoint::from_shared(format!("http://{addr}")).ok()?;
                let channel = endpoint
                    .connect_timeout(Duration::from_secs(1))
                    .tcp_nodelay(true)
                    .connect_lazy();
                Some(PeerClient::new(channel))
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

/// A worker other than the coordinator announces itself until the coordinator has heard it;
/// the coordinator then rolls the application back to include this worker's (empty) memory.
pub async fn join(node: Arc<Node>) {
    let kind = control_request::Kind::Join(super::proto::Join {
        incarnation: node.incarnation,
        workers: node.cluster.workers(),
        key_groups: node.app.key_groups,
    });
    let mut failures = 0u32;
    loop {
        match node.control.call(0, kind.clone(), Duration::from_secs(2)).await {
            Ok(_) => {
                tracing::info!(
                    incarnation = node.incarnation,
                    "joined the coordinator; waiting to be restored"
                );
                return;
            }
            Err(status) if status.code() == tonic::Code::FailedPrecondition => {
                node.metrics.peer_refused.inc();
                if failures % 50 == 0 {
                    tracing::error!(
                        reason = status.message(),
                        "the coordinator (worker 0) refused this worker"
                    );
                }
                failures += 1;
            }
            Err(status) => {
                failures += 1;
                if failures % 50 == 0 {
                    tracing::warn!(%status, "the coordinator (worker 0) does not answer yet");
                }
            }
        }
        if node.stopped_within(Duration::from_millis(20)).await {
            return;
        }
    }
}
