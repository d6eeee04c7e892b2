//! The `StatefulApplication` as the operator reads it from the API server: the spec shared
//! with the worker, Kubernetes' full object metadata, and the status the operator writes.
//! (`spindle_spec::StatefulApplication` is the file form: no uid, no status.)

use std::borrow::Cow;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use spindle_spec::{API_GROUP, API_VERSION, KIND, PLURAL, StatefulApplicationSpec, VERSION};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatefulApplication {
    #[serde(default = "api_version")]
    pub api_version: String,
    #[serde(default = "kind")]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: StatefulApplicationSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ApplicationStatus>,
}

fn api_version() -> String {
    API_VERSION.into()
}
fn kind() -> String {
    KIND.into()
}

impl StatefulApplication {
    pub fn new(name: &str, namespace: &str, spec: StatefulApplicationSpec) -> StatefulApplication {
        StatefulApplication {
            api_version: api_version(),
            kind: kind(),
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..ObjectMeta::default()
            },
            spec,
            status: None,
        }
    }

    /// The file form the builders and the workers read.
    pub fn to_spec(&self) -> spindle_spec::StatefulApplication {
        spindle_spec::StatefulApplication {
            api_version: API_VERSION.into(),
            kind: KIND.into(),
            metadata: spindle_spec::ObjectMeta {
                name: self.metadata.name.clone().unwrap_or_default(),
                namespace: self.metadata.namespace.clone(),
                labels: self.metadata.labels.clone().unwrap_or_default(),
                annotations: Default::default(),
            },
            spec: self.spec.clone(),
        }
    }
}

/// Only for the in-memory API of the tests, which reads the kind from a default instance.
impl Default for StatefulApplication {
    fn default() -> Self {
        let spec =
            serde_json::from_value(serde_json::json!({"functions": []})).expect("every other field has a default");
        StatefulApplication::new("", "", spec)
    }
}

impl kube::Resource for StatefulApplication {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(_: &()) -> Cow<'_, str> {
        KIND.into()
    }
    fn group(_: &()) -> Cow<'_, str> {
        API_GROUP.into()
    }
    fn version(_: &()) -> Cow<'_, str> {
        VERSION.into()
    }
    fn plural(_: &()) -> Cow<'_, str> {
        PLURAL.into()
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

/// Observed state, written by the operator through the status subresource.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationStatus {
    /// The `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`, each with a reason and a message.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// Workers the spec asks for.
    #[serde(default)]
    pub workers: u32,
    /// Worker pods that are ready.
    #[serde(default)]
    pub ready_workers: u32,
    /// `ready/desired`, for `kubectl get`.
    #[serde(default)]
    pub worker_summary: String,
    /// The newest checkpoint the workers have completed, as their coordinator reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<u64>,
    /// A change of the worker count under way: the workers stop after a checkpoint and start
    /// again at the new count, restoring it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rescale: Option<Rescale>,
}

/// Progress of a change of `spec.workers`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rescale {
    /// Workers running before the change.
    pub from: u32,
    /// Workers after it.
    pub to: u32,
    /// The newest completed checkpoint when the change was seen (unset until worker 0 could
    /// be asked); the workers stop only once a newer one has completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_checkpoint: Option<u64>,
    /// The checkpoint completed for the change, which the workers restore at the new count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<u64>,
    /// When the change was seen (RFC 3339).
    pub started: String,
}

/// A condition, as `metav1.Condition`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `Progressing` or `Degraded`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase word saying why.
    pub reason: String,
    /// What a person needs to know, e.g. the field that is wrong.
    #[serde(default)]
    pub message: String,
    /// When `status` last changed (RFC 3339).
    pub last_transition_time: String,
    /// The `metadata.generation` the condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
