//! Where a worker finds its index and its peers.
//!
//! - Explicitly: `--index` and `--peers host:port,…` (local runs; any environment).
//! - In Kubernetes, from the StatefulSet identity the operator gives each pod: the index is the
//!   ordinal at the end of the pod name (`greeter-worker-2` → 2), and worker `i` is reached at
//!   `{statefulset}-{i}.{service}:{port}` through the headless service.

use super::Cluster;

#[derive(Debug, Clone, Default)]
pub struct DiscoveryInput {
    pub index: Option<u32>,
    pub peers: Vec<String>,
    pub pod_name: Option<String>,
    pub statefulset: Option<String>,
    pub service: Option<String>,
    pub namespace: Option<String>,
    pub peer_port: u16,
    /// `spec.workers`; used when the peers are not listed explicitly.
    pub workers: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    #[error("pod name `{0}` does not end in a StatefulSet ordinal (`name-N`)")]
    NoOrdinal(String),
    #[error("worker index {index} is not below the worker count {workers}")]
    IndexOutOfRange { index: u32, workers: u32 },
    #[error("cannot tell this worker's index: give --index (SPINDLE_WORKER_INDEX) or the pod name (POD_NAME)")]
    NoIndex,
    #[error("cannot find the peers: give --peers (SPINDLE_PEERS) or --statefulset and --peer-service")]
    NoPeers,
}

/// The pod ordinal of a StatefulSet pod name.
pub fn ordinal(pod_name: &str) -> Result<u32, DiscoveryError> {
    pod_name
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .ok_or_else(|| DiscoveryError::NoOrdinal(pod_name.to_string()))
}

pub fn discover(d: &DiscoveryInput) -> Result<Cluster, DiscoveryError> {
    let index = match (d.index, &d.pod_name) {
        (Some(i), _) => i,
        (None, Some(pod)) => ordinal(pod)?,
        (None, None) if d.workers == 1 => 0,
        (None, None) => return Err(DiscoveryError::NoIndex),
    };
    // An explicit list is authoritative (`spindle run --workers N` overrides `spec.workers`).
    let peers = if !d.peers.is_empty() {
        d.peers.clone()
    } else if d.workers == 1 {
        Vec::new()
    } else {
        match (&d.statefulset, &d.service) {
            (Some(sts), Some(svc)) => {
                let domain = match &d.namespace {
                    Some(ns) => format!("{svc}.{ns}.svc"),
                    None => svc.clone(),
                };
                (0..d.workers)
                    .map(|i| format!("{sts}-{i}.{domain}:{}", d.peer_port))
                    .collect()
            }
            _ => return Err(DiscoveryError::NoPeers),
        }
    };
    let workers = (peers.len() as u32).max(1);
    if index >= workers {
        return Err(DiscoveryError::IndexOutOfRange { index, workers });
    }
    Ok(Cluster { index, peers })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_identity_gives_index_and_peers() {
        let c = discover(&DiscoveryInput {
            pod_name: Some("greeter-worker-2".into()),
            statefulset: Some("greeter-worker".into()),
            service: Some("greeter-peers".into()),
            namespace: Some("apps".into()),
            peer_port: 9091,
            workers: 3,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.index, 2);
        assert_eq!(
            c.peers,
            [
                "greeter-worker-0.greeter-peers.apps.svc:9091",
                "greeter-worker-1.greeter-peers.apps.svc:9091",
                "greeter-worker-2.greeter-peers.apps.svc:9091"
            ]
        );
    }

    #[test]
    fn explicit_peers_and_errors() {
        let peers = vec!["a:1".to_string(), "b:2".to_string()];
        let c = discover(&DiscoveryInput {
            index: Some(1),
            peers: peers.clone(),
            workers: 2,
            ..Default::default()
        })
        .unwrap();
        assert_eq!((c.index, c.workers()), (1, 2));
        let err = |d: DiscoveryInput| discover(&d).unwrap_err();
        assert_eq!(
            err(DiscoveryInput {
                index: Some(2),
                peers: peers.clone(),
                workers: 2,
                ..Default::default()
            }),
            DiscoveryError::IndexOutOfRange { index: 2, workers: 2 }
        );
        let c = discover(&DiscoveryInput {
            index: Some(0),
            peers,
            workers: 1,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.workers(), 2, "an explicit peer list sets the worker count");
        assert_eq!(
            err(DiscoveryInput {
                workers: 2,
                ..Default::default()
            }),
            DiscoveryError::NoIndex
        );
        assert_eq!(
            err(DiscoveryInput {
                index: Some(0),
                workers: 2,
                ..Default::default()
            }),
            DiscoveryError::NoPeers
        );
        assert_eq!(ordinal("web"), Err(DiscoveryError::NoOrdinal("web".into())));
        assert_eq!(
            discover(&DiscoveryInput {
                workers: 1,
                ..Default::default()
            })
            .unwrap()
            .workers(),
            1
        );
    }
}
