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

mod credentials;
mod functions;
mod workers;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use spindle_spec::StatefulApplication;

pub use functions::{function_deployment, function_service, function_service_name};
pub use workers::{config_map, ingress_service, peer_service, pod_disruption_budget, worker_statefulset};

/// Ports of a worker pod.
pub const ADMIN_PORT: i32 = 9090;
pub const PEER_PORT: i32 = 9091;
/// Where the ConfigMap is mounted and the file name in it.
pub const CONFIG_DIR: &str = "/etc/spindle";
pub const CONFIG_FILE: &str = "app.yaml";

/// What the operator is configured with (Helm values), not what an application says.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// Image of the `spindle` worker binary.
    pub worker_image: String,
    pub image_pull_policy: String,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            worker_image: "ghcr.io/spindle-dev/spindle-worker:0.1.0".into(),
            image_pull_policy: "IfNotPresent".into(),
        }
    }
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
