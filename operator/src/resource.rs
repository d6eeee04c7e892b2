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
    /// Workers the running configuration is for: `spec.workers` once a change of the count
    /// has gone through (the scale subresource's current replicas, for `kubectl scale` and a
    /// HorizontalPodAutoscaler).
    #[serde(default)]
    pub replicas: u32,
    /// The label selector of the worker pods (the scale subresource's selector).
    #[serde(default)]
    pub selector: String,
    /// Worker pods that are ready.
    #[serde(default)]
    pub ready_workers: u32,
    /// `ready/desired`, for `kubectl get`.
    #[serde(default)]
    pub worker_summary: String,
    /// The newest checkpoint the workers have completed, as their coordinator reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<u64>,
    /// When the operator first saw `lastCheckpoint` (RFC 3339; it asks worker 0 every 30 s
    /// or sooner, so this is late by up to that).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint_time: Option<String>,
    /// Rollbacks the workers' coordinator reported, summed over its restarts.
    #[serde(default)]
    pub rollbacks: u64,
    /// Checkpoints that failed, as the coordinator reported them, summed over its restarts.
    #[serde(default)]
    pub checkpoints_failed: u64,
    /// The last restore that fell back past damaged checkpoints (data loss), as the
    /// coordinator reports it; the application is `Degraded` (`CheckpointDataLoss`) until
    /// the annotation `spindle.dev/data-loss-acknowledged` carries its `atMs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_loss: Option<DataLoss>,
    /// The coordinator's counters when last read, to tell new rollbacks and failures from
    /// ones already counted (they restart at 0 with a new coordinator process).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<CoordinatorSample>,
    /// A change of the worker count under way: the workers stop after a checkpoint and start
    /// again at the new count, restoring it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rescale: Option<Rescale>,
    /// The last `spec.checkpoint.savepointRequest` and what became of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savepoint: Option<SavepointStatus>,
}

/// A requested savepoint: `Pending` (asked again at the next reconciliation), `Taken` (with
/// its checkpoint) or `Failed` (refused: a name already taken, no token; set another name).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SavepointStatus {
    pub name: String,
    pub phase: String,
    /// The checkpoint it holds (`Taken`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<u64>,
    /// When it was taken (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A fallback past damaged checkpoints: checkpoints `lostFrom..=lostTo` could not be
/// restored, `restored` was instead; what they held is lost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataLoss {
    /// First checkpoint lost.
    pub lost_from: u64,
    /// Last checkpoint lost.
    pub lost_to: u64,
    /// The checkpoint restored instead.
    pub restored: u64,
    /// When the coordinator fell back (milliseconds since the Unix epoch).
    pub at_ms: u64,
}

/// Worker 0's counters as last read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CoordinatorSample {
    /// Which process (a new one starts its counters at 0).
    pub incarnation: u64,
    pub rollbacks: u64,
    pub checkpoints_failed: u64,
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
