//! The spec's types. Every field's doc comment becomes its schema description
//! (`kubectl explain statefulapplication.spec…`), so write them for users.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::HumanDuration;
use crate::connectors::{KafkaEgress, KafkaIngress, NatsEgress, NatsIngress};
use crate::kubernetes::{KubernetesSpec, ResourceSpec};
use crate::schedule::ScheduleIngress;
use crate::security::{AdminSpec, ClientTls, HttpAuth};

/// A `StatefulApplication` resource as it is written in YAML: the same document is applied with
/// `kubectl` or run locally with `spindle run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatefulApplication {
    /// Must be `spindle.dev/v1alpha1`.
    pub api_version: String,
    /// Must be `StatefulApplication`.
    pub kind: String,
    /// Standard object metadata; `name` is the application's id.
    pub metadata: ObjectMeta,
    /// What the application runs.
    pub spec: StatefulApplicationSpec,
}

/// The part of Kubernetes object metadata Spindle reads.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// The application's name: a DNS-1123 label, unique in its namespace.
    pub name: String,
    /// The Kubernetes namespace; ignored when running locally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels, copied onto every object the operator creates.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Desired state of a stateful-functions application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatefulApplicationSpec {
    /// Remote functions: each entry serves one function type (`ns/name`) or every type of a
    /// namespace (`ns/*`). The first entry that matches a type serves it.
    pub functions: Vec<FunctionSpec>,
    /// Where outside records enter the application.
    #[serde(default)]
    pub ingresses: Vec<IngressSpec>,
    /// Where functions' egress messages leave the application.
    #[serde(default)]
    pub egresses: Vec<EgressSpec>,
    /// Number of worker processes (pods) sharing the key groups.
    #[serde(default = "default_workers")]
    pub workers: u32,
    /// Number of key groups addresses are hashed into: the unit of state distribution and the
    /// upper bound on workers. Fixed for the life of the application (checkpoints depend on it).
    #[serde(default = "default_key_groups")]
    pub key_groups: u32,
    /// Bound on messages from ingresses that are accepted but not yet processed, per worker.
    /// Past it, ingresses wait (HTTP requests are held, not refused): back-pressure, no loss.
    #[serde(default = "default_max_buffered")]
    pub max_buffered_messages: u32,
    /// Bounds in bytes on what a worker keeps in memory while it waits for something else
    /// (a checkpoint, a peer, a sink). When one is reached, the ingresses stop admitting
    /// (HTTP answers `503` with `Retry-After`, Kafka and NATS readers pause) until it drains:
    /// back-pressure, nothing accepted is dropped.
    #[serde(default, skip_serializing_if = "MemorySpec::is_default")]
    pub memory: MemorySpec,
    /// Coordinated checkpoints for exactly-once state and messaging.
    #[serde(default)]
    pub checkpoint: CheckpointSpec,
    /// A worker that does not answer the coordinator's heartbeats for this long (it is
    /// stopped, paused or cut off, not only dead) is treated as failed: the others roll back
    /// to the last checkpoint and wait for it, or its replacement, to come back; the old
    /// process, when it wakes up, belongs to a generation that is over. Shorter detects sooner;
    /// too short turns a slow moment into a rollback.
    #[serde(default = "default_failure_timeout")]
    pub failure_timeout: HumanDuration,
    /// Dead letters: what could not be delivered, kept (in checkpoints) with the reason until
    /// replayed or dropped (`spindle dead-letters`).
    #[serde(default)]
    pub dead_letters: DeadLettersSpec,
    /// The admin endpoints: who may read application data through them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminSpec>,
    /// Settings only the operator reads (ignored by `spindle run`).
    #[serde(default, skip_serializing_if = "KubernetesSpec::is_default")]
    pub kubernetes: KubernetesSpec,
}

/// How dead letters are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeadLettersSpec {
    /// Most bytes of dead letters a worker keeps (values included). Past it, new dead letters
    /// are only logged (`dead-letters.jsonl`, counted in `spindle_dead_letters_overflow_total`)
    /// until some are replayed or dropped.
    #[serde(default = "default_dead_letter_bytes")]
    pub max_bytes: u64,
}

impl Default for DeadLettersSpec {
    fn default() -> Self {
        DeadLettersSpec {
            max_bytes: default_dead_letter_bytes(),
        }
    }
}

/// Per-worker bounds, in bytes, on the queues that grow while something downstream is slow or
/// failing. Sizes count message values, ids, typenames and keys plus a fixed overhead per
/// entry, so they track, not equal, the memory used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemorySpec {
    /// Egress records waiting for the checkpoint of their epoch (they grow while checkpoints
    /// fail).
    #[serde(default = "default_held_egress_bytes")]
    pub held_egress_bytes: u64,
    /// Messages queued for other workers and not yet acknowledged by them.
    #[serde(default = "default_queue_bytes")]
    pub peer_queue_bytes: u64,
    /// Released egress records queued for their sinks.
    #[serde(default = "default_queue_bytes")]
    pub sink_queue_bytes: u64,
    /// The idempotency keys remembered for the dedup window (with the replies kept for them).
    /// They leave only as the window passes them, so a worker at this bound admits nothing for
    /// minutes: size it for the key rate times the window.
    #[serde(default = "default_queue_bytes")]
    pub idempotency_key_bytes: u64,
    /// Delayed messages (`send_after`) not yet due; they leave only as they fall due.
    #[serde(default = "default_queue_bytes")]
    pub delayed_message_bytes: u64,
}

impl Default for MemorySpec {
    fn default() -> Self {
        MemorySpec {
            held_egress_bytes: default_held_egress_bytes(),
            peer_queue_bytes: default_queue_bytes(),
            sink_queue_bytes: default_queue_bytes(),
            idempotency_key_bytes: default_queue_bytes(),
            delayed_message_bytes: default_queue_bytes(),
        }
    }
}

impl MemorySpec {
    pub fn is_default(&self) -> bool {
        *self == MemorySpec::default()
    }
}

fn default_held_egress_bytes() -> u64 {
    256 << 20
}

fn default_queue_bytes() -> u64 {
    64 << 20
}

fn default_dead_letter_bytes() -> u64 {
    64 << 20
}

fn default_failure_timeout() -> HumanDuration {
    HumanDuration::from_secs(5)
}

fn default_workers() -> u32 {
    1
}
fn default_key_groups() -> u32 {
    128
}
fn default_max_buffered() -> u32 {
    10_000
}

/// A remote function (or a namespace of them) and how to reach it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FunctionSpec {
    /// Function type `namespace/name`, or `namespace/*` for every type in a namespace.
    pub typename: String,
    /// URL the function is invoked at (StateFun request-reply protocol, HTTP POST). May contain
    /// `{function.name}`, replaced by the invoked type's name (SDKs dispatch on the target
    /// address, so one endpoint may serve a whole namespace).
    /// Locally, when `local.command` is set, the host and port are replaced by the launched
    /// process's loopback port.
    pub endpoint: String,
    /// Container image serving the function (Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Port the function's container listens on (Kubernetes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// How to launch the function as a local process (`spindle run`); ignored in Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalProcess>,
    /// Most messages for one address sent in one invocation batch.
    #[serde(default = "default_max_batch")]
    pub max_batch_size: u32,
    /// Most invocation batches in flight at once for this function entry (per worker).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
    /// Time budget for one batch, retries included: failed attempts (network errors, no answer
    /// within a minute, HTTP 408/409/420/429/499 and 5xx) are retried with exponential backoff
    /// (at most a second apart) until it runs out, and then the batch becomes a dead letter.
    /// Unset (the default): retried for as long as it takes — the batch stays in every
    /// checkpoint meanwhile and its address waits, so an outage of the function delays its
    /// messages but loses or sets aside none. Answers that retrying cannot fix (other 4xx, a
    /// malformed reply) are dead letters at once either way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_timeout: Option<HumanDuration>,
    /// Largest reply accepted from the function (bytes); a larger one makes the batch a dead
    /// letter (`too_large`) instead of filling the worker's memory.
    #[serde(default = "default_max_reply_bytes")]
    pub max_reply_bytes: u64,
    /// TLS settings for an `https://` endpoint: an extra CA bundle, a client certificate.
    /// Without them, `https://` endpoints are verified against the public web roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTls>,
    /// Resources of the function's container (Kubernetes, with `image`); unset fields take
    /// the operator's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceSpec>,
    /// For a `namespace/*` entry: the only type names it serves (`[greeter, person]`).
    /// Messages to other names in the namespace are refused at the ingress (404) and are dead
    /// letters when a function sends them, so callers cannot invent types (each one would
    /// add state, metric series and cache entries). Empty (the default): every name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
}

fn default_max_reply_bytes() -> u64 {
    16 << 20
}

fn default_max_batch() -> u32 {
    100
}
fn default_max_in_flight() -> u32 {
    64
}

/// A local process serving a function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalProcess {
    /// Program and arguments. It is run in `workingDir` with `PORT` set to a free loopback port
    /// it must listen on (HTTP).
    pub command: Vec<String>,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Directory to run in, relative to the application file; defaults to the file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// How long to wait for the process to accept connections before giving up.
    #[serde(default = "default_startup_timeout")]
    pub startup_timeout: HumanDuration,
}

fn default_startup_timeout() -> HumanDuration {
    HumanDuration::from_secs(600)
}

/// An ingress: exactly one of the source kinds (`http`, `kafka`, `nats`, `schedule`) is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressSpec {
    /// Name of the ingress, unique in the application.
    pub name: String,
    /// HTTP ingress following the StateFun playground convention: `POST` or `PUT`
    /// `/{namespace}/{type}/{id}` with `Content-Type: application/vnd.{namespace}/{typename}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpIngress>,
    /// Kafka topics read with explicit partition assignment, positions in checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaIngress>,
    /// A NATS JetStream stream, its sequence in checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats: Option<NatsIngress>,
    /// A message to one address at every tick of a cron expression or interval, each tick
    /// exactly once (the last tick fired is in the checkpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleIngress>,
}

/// Settings of an HTTP ingress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpIngress {
    /// Port to listen on (in Kubernetes, the container port; locally overridable by
    /// `spindle run --ingress-addr`).
    #[serde(default = "default_ingress_port")]
    pub port: u16,
    /// Largest accepted request body, in bytes; larger bodies get 413.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u32,
    /// Most connections open at once; past it, new connections wait to be accepted (each
    /// request holds its body in memory while it waits for admission).
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
    /// Bearer-token authentication of every request; none when absent. A request without a
    /// token is answered `401`, one with a token not accepted `403`, both with
    /// `WWW-Authenticate` and a sentence naming the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<HttpAuth>,
    /// How long a request sent with `Spindle-Reply: wait` waits for a function's reply before
    /// it is answered `504` (the record is still processed; a retry with the same
    /// `Idempotency-Key` gets the reply). A `Spindle-Reply-Timeout` header may ask for another
    /// wait, up to 15 minutes.
    #[serde(default = "default_reply_timeout")]
    pub reply_timeout: HumanDuration,
}

fn default_reply_timeout() -> HumanDuration {
    HumanDuration::from_secs(30)
}

fn default_ingress_port() -> u16 {
    8090
}
fn default_max_body() -> u32 {
    1 << 20
}
fn default_max_connections() -> u32 {
    1024
}

/// An egress: exactly one of the sink kinds (`http`, `file`, `kafka`, `nats`) is set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressSpec {
    /// Egress typename `namespace/name`, as functions address it.
    pub typename: String,
    /// POST every record to a webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpEgress>,
    /// Append every record as a JSON line to a file (local use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileEgress>,
    /// Produce every record to a Kafka topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka: Option<KafkaEgress>,
    /// Publish every record to a NATS JetStream subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nats: Option<NatsEgress>,
}

/// Settings of an HTTP webhook egress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpEgress {
    /// Absolute `http://` or `https://` URL each record is POSTed to, with the record's value
    /// as the body and its typename in `Content-Type: application/vnd.{typename}`. HTTPS
    /// uses HTTP/2 when the server offers it.
    pub url: String,
    /// Time budget per record, retries (network errors and 5xx) included; then the record
    /// becomes a dead letter. Unset (the default): retried for as long as it takes, the record
    /// staying in every checkpoint meanwhile. Other 4xx answers are dead letters at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Most records in flight at once.
    #[serde(default = "default_egress_in_flight")]
    pub max_in_flight: u32,
    /// TLS settings for an `https://` URL: an extra CA bundle, a client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ClientTls>,
}

fn default_egress_in_flight() -> u32 {
    16
}

/// Settings of a JSON-lines file egress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileEgress {
    /// File to append to, relative to the application file's directory (or absolute). Each
    /// line is `{"egress", "typename", "value"}`; values of JSON and StateFun primitive types
    /// are written decoded, others as base64 in `valueBase64`.
    pub path: String,
}

/// Checkpoint settings: exactly-once state, messaging and egress (see docs/checkpoints.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CheckpointSpec {
    /// Time between the starts of two checkpoints. `0s` turns checkpoints off: egress then
    /// leaves at once and a failure loses everything in memory (at-most-once).
    #[serde(default = "default_checkpoint_interval")]
    pub interval: HumanDuration,
    /// Group commit: a checkpoint also starts as soon as this long has passed since the
    /// previous one ended, whenever a durable acknowledgement or an egress record is waiting
    /// for one. Durable latency is then about one checkpoint's duration instead of up to
    /// `interval`; under steady output, checkpoints run back to back with this pause between
    /// them. Unset: checkpoints start only every `interval`. At most `interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_pause: Option<HumanDuration>,
    /// Object storage URL for checkpoints, shared by all workers: `file:///path`, a relative
    /// path (local runs), or `s3://bucket/prefix` (credentials, region and endpoint from the
    /// standard `AWS_*` environment variables). Empty: `.spindle/checkpoints` beside the
    /// application file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<String>,
    /// Completed checkpoints to keep; older ones are deleted, but for savepoints.
    #[serde(default = "default_retained")]
    pub retained: u32,
    /// What happens to this application's checkpoint data when the `StatefulApplication` is
    /// deleted from a cluster: `Retain` keeps it (re-creating the application resumes from it),
    /// `Delete` removes it once the workers have stopped. Ignored locally.
    #[serde(default)]
    pub retention_policy: RetentionPolicy,
    /// Name of a Secret in the application's namespace whose keys become environment variables
    /// of the workers (and of the job that deletes checkpoint data), e.g. `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`. Kubernetes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// Take a savepoint — a named checkpoint that retention never deletes — under this name.
    /// In a cluster the operator asks worker 0 for it once per name and reports it in
    /// `status.savepoint`; set a new name for the next one. Ignored by `spindle run`
    /// (use `spindle checkpoints save NAME`). A name is 1-63 characters of `a-z`, `0-9`,
    /// `.`, `_`, `-`, starting with a letter or digit, and not only digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub savepoint_request: Option<String>,
    /// Start from this savepoint (a name) or checkpoint (a number) instead of the newest
    /// checkpoint: worker 0 makes it this application's newest checkpoint before the
    /// application starts — copied when it belongs to another application or storage —
    /// once per value (a restart resumes from the newest checkpoint as usual; remove the
    /// field and set it again to restore the same one again). The key-group count must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from: Option<String>,
    /// With `restoreFrom`: the application whose savepoint or checkpoint it is, `name` or
    /// `namespace/name` (default: this one). Copying an application: its state, messages,
    /// dead letters and source positions come along.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from_application: Option<String>,
    /// With `restoreFrom`: the storage URL it is in (default: `storage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_from_storage: Option<String>,
}

/// What deleting an application in a cluster does to its checkpoint data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RetentionPolicy {
    /// Keep the checkpoints: an application created again under the same name resumes from them.
    #[default]
    Retain,
    /// Delete the checkpoints after the workers have stopped.
    Delete,
}

fn default_checkpoint_interval() -> HumanDuration {
    HumanDuration::from_secs(1)
}
fn default_retained() -> u32 {
    3
}

impl Default for CheckpointSpec {
    fn default() -> Self {
        CheckpointSpec {
            interval: default_checkpoint_interval(),
            min_pause: None,
            storage: None,
            retained: default_retained(),
            retention_policy: RetentionPolicy::default(),
            credentials_secret: None,
            savepoint_request: None,
            restore_from: None,
            restore_from_application: None,
            restore_from_storage: None,
        }
    }
}
