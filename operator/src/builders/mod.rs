//! Pure builders: a `StatefulApplication` in, the Kubernetes objects that run it out. No I/O,
//! so every object is unit tested and validated against the real Kubernetes schemas; the
//! controller applies them with server-side apply.
//!
//! Per application `A`:
//! - ConfigMap `A-config`: the application file the workers read (`/etc/spindle/app.yaml`),
//!   with function endpoints pointing at the Services below.
//! - Service `A-workers` (headless): the workers' stable DNS names for the peer streams.
//! - Service `A-ingress`: the HTTP ingress, when the application has one.
//! - StatefulSet `A-worker` (`spec.workers` pods) and PodDisruptionBudget `A-worker`.
//! - Per function entry with an `image`: Deployment and Service `A-fn-<i>`.
//! - Secret `A-tls`: the application's CA and the workers' certificates (peer TLS on).
//! - NetworkPolicies `A-workers` and `A-functions` (`spec.kubernetes.networkPolicy.enabled`).
//! - On deletion with `retentionPolicy: Delete`: Job `A-delete-checkpoints`.
//!
//! Every pod passes the Pod Security Standards' "restricted" profile (`security`).

mod cleanup;
mod credentials;
mod functions;
mod network;
mod security;
mod tls;
mod workers;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use spindle_spec::StatefulApplication;

pub use cleanup::{cleanup_job, cleanup_job_name};
pub use functions::{function_deployment, function_service, function_service_name};
pub use network::{function_network_policy, functions_policy_name, worker_network_policy, workers_policy_name};
pub use security::{USER_ID, restricted_container_context, restricted_pod_context};
pub use tls::{TLS_DIR, TLS_HASH_ANNOTATION, tls_identity, tls_secret, tls_secret_name};
pub use workers::{
    CONFIG_HASH_ANNOTATION, WORKERS_ANNOTATION, config_map, config_map_name, grace_period, ingress_service,
    ingress_service_name, peer_service, peer_service_name, pod_disruption_budget, selector_string, statefulset_name,
    worker_selector, worker_statefulset,
};

/// Ports of a worker pod.
pub const ADMIN_PORT: i32 = 9090;
pub const PEER_PORT: i32 = 9091;
/// Where the ConfigMap is mounted and the file name in it.
pub const CONFIG_DIR: &str = "/etc/spindle";
pub const CONFIG_FILE: &str = "app.yaml";

/// What the operator is configured with (Helm values), not what an application says.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// Image of the `spindle` worker binary (workers and the checkpoint-deletion job).
    pub worker_image: String,
    pub image_pull_policy: String,
    /// Checkpoint storage for applications whose spec names none (or a local path, which
    /// means nothing in a pod): `s3://bucket/prefix`.
    pub default_storage: Option<String>,
    /// Secret with the storage credentials for applications that name none.
    pub default_credentials_secret: Option<String>,
    /// Resources of a worker container.
    pub worker_resources: WorkerResources,
    /// Resources of function containers whose spec names none (field by field).
    pub function_resources: spindle_spec::ResourceSpec,
    /// Mutual TLS between workers: a CA and certificates per application (`crate::tls`).
    pub peer_tls: bool,
    /// Who besides an application's own pods may reach them (its NetworkPolicies).
    pub network: NetworkConfig,
    /// Extra environment of every worker: the `OTEL_*` variables of opt-in tracing.
    pub worker_env: BTreeMap<String, String>,
}

/// The sources the NetworkPolicies let reach a worker's admin port.
#[derive(Debug, Clone, Default)]
pub struct NetworkConfig {
    /// The operator's namespace and pod labels: it reads worker 0's `/status`.
    pub operator_namespace: Option<String>,
    pub operator_pod_labels: BTreeMap<String, String>,
    /// Prometheus (or whatever scrapes `/metrics`).
    pub monitoring: Option<spindle_spec::NetworkPeer>,
}

#[derive(Debug, Clone)]
pub struct WorkerResources {
    pub cpu_request: String,
    pub memory_request: String,
    pub memory_limit: String,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            worker_image: "ghcr.io/spindle-dev/spindle-worker:0.1.0".into(),
            image_pull_policy: "IfNotPresent".into(),
            default_storage: None,
            default_credentials_secret: None,
            worker_resources: WorkerResources {
                cpu_request: "100m".into(),
                memory_request: "128Mi".into(),
                memory_limit: "1Gi".into(),
            },
            function_resources: spindle_spec::ResourceSpec {
                cpu_request: Some("50m".into()),
                cpu_limit: None,
                memory_request: Some("64Mi".into()),
                memory_limit: Some("512Mi".into()),
            },
            peer_tls: true,
            worker_env: BTreeMap::new(),
            network: NetworkConfig::default(),
        }
    }
}

/// Where the workers of a pod keep their files (an `emptyDir`).
pub const DATA_DIR: &str = "/var/lib/spindle";

/// Where an application's checkpoints go in a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// Shared object storage (`s3://…`, or `file://` on a volume every pod mounts).
    Shared(String),
    /// Nothing shared was configured: each pod's own data directory. Checkpoints then do not
    /// survive the pod, and several workers cannot restore each other's parts.
    PodLocal(String),
}

impl Storage {
    pub fn url(&self) -> &str {
        match self {
            Storage::Shared(u) | Storage::PodLocal(u) => u,
        }
    }
}

/// The spec's storage when it is a URL; a relative path (written for local runs) or none
/// falls back to the operator's default, and then to the pod's data directory.
pub fn checkpoint_storage(app: &StatefulApplication, config: &OperatorConfig) -> Storage {
    let own = app
        .spec
        .checkpoint
        .storage
        .as_deref()
        .filter(|u| u.starts_with("s3://") || u.starts_with("file://"));
    match own.or(config.default_storage.as_deref()) {
        Some(url) => Storage::Shared(url.to_string()),
        None => Storage::PodLocal(format!("file://{DATA_DIR}/checkpoints")),
    }
}

/// Where the workers of `app` keep their checkpoints: the storage URL and, below it, the
/// namespace and the application's name. The workers compute it (from the ConfigMap's
/// `storage`, `POD_NAMESPACE` and `metadata.name`), and so does `spindle checkpoints delete`
/// in the cleanup Job; this is the same rule, for events and tests.
pub fn checkpoint_root(app: &StatefulApplication, config: &OperatorConfig) -> String {
    let url = checkpoint_storage(app, config);
    format!(
        "{}/{}/{}",
        url.url().trim_end_matches('/'),
        app.metadata.namespace.as_deref().unwrap_or("default"),
        app.metadata.name
    )
}

/// The Secret whose keys become the workers' environment, if any.
pub fn credentials_secret(app: &StatefulApplication, config: &OperatorConfig) -> Option<String> {
    let own_storage = app
        .spec
        .checkpoint
        .storage
        .as_deref()
        .is_some_and(|u| u.contains("://"));
    match &app.spec.checkpoint.credentials_secret {
        Some(s) => Some(s.clone()),
        None if !own_storage => config.default_credentials_secret.clone(),
        None => None,
    }
}

/// FNV-1a, hex: stable across builds and Rust versions (unlike `DefaultHasher`).
pub fn fnv1a(text: &str) -> String {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

pub(crate) fn labels(app: &StatefulApplication, component: &str) -> BTreeMap<String, String> {
    let mut l = selector(app, component);
    l.insert("app.kubernetes.io/managed-by".into(), "spindle-operator".into());
    for (k, v) in &app.metadata.labels {
        l.entry(k.clone()).or_insert_with(|| v.clone());
    }
    l
}

/// The labels a component's pods are selected by (a subset of `labels`, never changing).
pub(crate) fn selector(app: &StatefulApplication, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "spindle".to_string()),
        ("app.kubernetes.io/instance".to_string(), app.metadata.name.clone()),
        ("app.kubernetes.io/component".to_string(), component.to_string()),
    ])
}

pub(crate) fn meta(app: &StatefulApplication, name: String, component: &str, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: app.metadata.namespace.clone(),
        labels: Some(labels(app, component)),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// The owner reference every object carries, so Kubernetes deletes them with the application.
pub fn owner_reference(app: &StatefulApplication, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: spindle_spec::API_VERSION.into(),
        kind: spindle_spec::KIND.into(),
        name: app.metadata.name.clone(),
        uid: uid.into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

#[cfg(test)]
pub(crate) mod tests;
