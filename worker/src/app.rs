//! The application as the worker uses it: the validated spec resolved into lookup tables
//! (which function entry serves a type, which sink an egress is). Pure: no I/O.

use std::path::{Path, PathBuf};
use std::time::Duration;

use spindle_spec::{
    ClientTls, HttpAuth, HumanDuration, KafkaEgress, KafkaIngress, NatsEgress, NatsIngress, ScheduleIngress,
    SecretValue, StatefulApplication, TypeName,
};

/// Who an application is: its namespace (`None` outside Kubernetes), name and, when the
/// operator gives it, its UID. Checkpoints record it; a restore refuses another's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppIdentity {
    pub namespace: Option<String>,
    pub name: String,
    pub uid: Option<String>,
}

impl AppIdentity {
    /// An application outside any namespace (local runs).
    pub fn named(name: &str) -> AppIdentity {
        AppIdentity {
            namespace: None,
            name: name.to_string(),
            uid: None,
        }
    }

    /// Where its checkpoints live under the storage URL: `<namespace>/<name>`, or `<name>`
    /// outside a namespace (the layout of local runs, unchanged).
    pub fn storage_root(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }
}

impl std::fmt::Display for AppIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "`{}` in namespace `{ns}`", self.name),
            None => write!(f, "`{}` outside any namespace (a local run)", self.name),
        }
    }
}

/// Index of a function entry in the spec (`spec.functions[i]`).
pub type FunctionId = usize;

#[derive(Debug, Clone)]
pub struct AppConfig {
    pub name: String,
    /// The Kubernetes namespace (`POD_NAMESPACE`; `None` locally): it isolates same-named
    /// applications (their identity and checkpoint storage).
    pub namespace: Option<String>,
    /// The `StatefulApplication`'s UID when known (`SPINDLE_APPLICATION_UID`), recorded in
    /// checkpoints.
    pub uid: Option<String>,
    pub functions: Vec<FunctionEntry>,
    pub egresses: Vec<EgressEntry>,
    pub http_ingress: Option<HttpIngressConfig>,
    /// Kafka, JetStream and schedule ingresses: sources with positions in checkpoints.
    pub sources: Vec<SourceConfig>,
    pub max_buffered_messages: usize,
    /// Most bytes of dead letters a worker keeps.
    pub dead_letter_bytes: usize,
    /// Byte bounds of the queues that wait on something downstream (`spec.memory`).
    pub memory: crate::memory::Limits,
    /// A worker silent this long is treated as failed.
    pub failure_timeout: Duration,
    pub key_groups: u32,
    pub checkpoint: CheckpointConfig,
    /// Bearer tokens the admin endpoints that expose data require (`spec.admin.auth`).
    pub admin_auth: Option<HttpAuth>,
    /// Every credential the spec references, with its field path.
    pub secrets: Vec<(String, SecretValue)>,
    /// The application file's directory: relative paths in the spec start here.
    pub base_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct CheckpointConfig {
    /// `None`: checkpoints off (`interval: 0s`); egress leaves at once, at-most-once.
    pub interval: Option<Duration>,
    /// Group commit: a checkpoint starts this long after the previous one ended whenever
    /// something waits for one (`None`: only every `interval`).
    pub min_pause: Option<Duration>,
    /// Object storage URL; `None`: `.spindle/checkpoints` under `base_dir`.
    pub storage: Option<String>,
    /// Completed checkpoints kept.
    pub retained: u32,
    /// `spec.checkpoint.restoreFrom`: what worker 0 makes the newest checkpoint at start.
    pub restore_from: Option<RestoreFrom>,
}

/// A savepoint or checkpoint to start from, maybe of another application or storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreFrom {
    /// A savepoint name, or a checkpoint number.
    pub from: String,
    /// `name` or `namespace/name`; `None`: this application.
    pub application: Option<String>,
    /// `None`: this application's storage.
    pub storage: Option<String>,
}

/// The default checkpoint storage: a path relative to the application file's directory.
pub const DEFAULT_STORAGE: &str = ".spindle/checkpoints";

impl CheckpointConfig {
    /// The storage URL; a relative path (the default among them) is resolved against the
    /// application file's directory when the store opens — once, not here as well.
    pub fn storage_url(&self) -> &str {
        self.storage.as_deref().unwrap_or(DEFAULT_STORAGE)
    }
}

#[derive(Debug, Clone)]
pub struct FunctionEntry {
    pub id: FunctionId,
    pub serves: Serves,
    /// URL template with `{function.name}`.
    pub endpoint: String,
    pub max_batch_size: usize,
    pub max_in_flight: usize,
    /// `None`: retried for as long as it takes.
    pub call_timeout: Option<Duration>,
    /// Largest reply accepted; a larger one makes the batch a dead letter.
    pub max_reply_bytes: usize,
    /// TLS settings of an `https://` endpoint.
    pub tls: Option<ClientTls>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Serves {
    Type(TypeName),
    /// Every type of a namespace, or only the listed names (`types`) when there are any.
    Namespace {
        namespace: String,
        only: Vec<String>,
    },
}

#[derive(Debug, Clone)]
pub struct EgressEntry {
    pub typename: TypeName,
    pub sink: EgressSink,
}

#[derive(Debug, Clone)]
pub enum EgressSink {
    Http {
        url: String,
        /// `None`: retried for as long as it takes.
        timeout: Option<Duration>,
        max_in_flight: usize,
        tls: Option<ClientTls>,
    },
    /// Path resolved against the application file's directory.
    File {
        path: PathBuf,
    },
    Kafka(KafkaEgress),
    Nats(NatsEgress),
}

/// An ingress that reads from a log with positions (`spec.ingresses[i]`).
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// The ingress name, unique in the application: positions are stored under it.
    pub name: String,
    pub kind: SourceKind,
}

#[derive(Debug, Clone)]
pub enum SourceKind {
    Kafka(KafkaIngress),
    Nats(NatsIngress),
    /// A schedule: its position is the last tick fired.
    Schedule(ScheduleIngress),
}

#[derive(Debug, Clone)]
pub struct HttpIngressConfig {
    pub port: u16,
    pub max_body_bytes: usize,
    pub max_connections: usize,
    /// Bearer tokens every request needs, and the field path of the setting.
    pub auth: Option<(String, HttpAuth)>,
    /// How long a request waiting for its reply waits by default.
    pub reply_timeout: Duration,
}

impl AppConfig {
    /// Resolves a validated application; relative file paths are taken from `base_dir`.
    pub fn resolve(app: &StatefulApplication, base_dir: &Path) -> AppConfig {
        let spec = &app.spec;
        let functions = spec
            .functions
            .iter()
            .enumerate()
            .map(|(id, f)| FunctionEntry {
                id,
                serves: match f.typename.strip_suffix("/*") {
                    Some(ns) => Serves::Namespace {
                        namespace: ns.to_string(),
                        only: f.types.clone(),
                    },
                    None => Serves::Type(TypeName::parse(&f.typename).expect("validated spec has valid typenames")),
                },
                endpoint: f.endpoint.clone(),
                max_batch_size: f.max_batch_size as usize,
                max_in_flight: f.max_in_flight as usize,
                call_timeout: f.call_timeout.map(HumanDuration::as_duration),
                max_reply_bytes: f.max_reply_bytes as usize,
                tls: f.tls.clone(),
            })
            .collect();
        let egresses = spec
            .egresses
            .iter()
            .map(|e| EgressEntry {
                typename: TypeName::parse(&e.typename).expect("validated spec has valid typenames"),
                sink: if let Some(h) = &e.http {
                    EgressSink::Http {
                        url: h.url.clone(),
                        timeout: h.timeout.map(HumanDuration::as_duration),
                        max_in_flight: h.max_in_flight as usize,
                        tls: h.tls.clone(),
                    }
                } else if let Some(f) = &e.file {
                    EgressSink::File {
                        path: base_dir.join(&f.path),
                    }
                } else if let Some(k) = &e.kafka {
                    EgressSink::Kafka(k.clone())
                } else if let Some(n) = &e.nats {
                    EgressSink::Nats(n.clone())
                } else {
                    unreachable!("validated spec: every egress has a kind")
                },
            })
            .collect();
        let http_ingress = spec
            .ingresses
            .iter()
            .enumerate()
            .find_map(|(i, ing)| Some((i, ing.http.as_ref()?)))
            .map(|(i, h)| HttpIngressConfig {
                port: h.port,
                max_body_bytes: h.max_body_bytes as usize,
                max_connections: h.max_connections as usize,
                auth: h.auth.clone().map(|a| (format!("spec.ingresses[{i}].http.auth"), a)),
                reply_timeout: h.reply_timeout.as_duration(),
            });
        let sources = spec
            .ingresses
            .iter()
            .filter_map(|i| {
                let kind = match (&i.kafka, &i.nats, &i.schedule) {
                    (Some(k), _, _) => SourceKind::Kafka(k.clone()),
                    (None, Some(n), _) => SourceKind::Nats(n.clone()),
                    (None, None, Some(s)) => SourceKind::Schedule(s.clone()),
                    (None, None, None) => return None,
                };
                Some(SourceConfig {
                    name: i.name.clone(),
                    kind,
                })
            })
            .collect();
        AppConfig {
            name: app.metadata.name.clone(),
            namespace: None,
            uid: None,
            functions,
            egresses,
            http_ingress,
            sources,
            max_buffered_messages: spec.max_buffered_messages as usize,
            dead_letter_bytes: spec.dead_letters.max_bytes as usize,
            memory: crate::memory::Limits::from_spec(&spec.memory),
            failure_timeout: spec.failure_timeout.as_duration(),
            key_groups: spec.key_groups,
            checkpoint: CheckpointConfig {
                interval: Some(spec.checkpoint.interval.as_duration()).filter(|d| !d.is_zero()),
                min_pause: spec.checkpoint.min_pause.map(|d| d.as_duration()),
                storage: spec.checkpoint.storage.clone(),
                retained: spec.checkpoint.retained,
                restore_from: spec.checkpoint.restore_from.clone().map(|from| RestoreFrom {
                    from,
                    application: spec.checkpoint.restore_from_application.clone(),
                    storage: spec.checkpoint.restore_from_storage.clone(),
                }),
            },
            admin_auth: spec.admin.as_ref().and_then(|a| a.auth.clone()),
            secrets: app.secrets().into_iter().map(|(at, s)| (at, s.clone())).collect(),
            base_dir: base_dir.to_path_buf(),
        }
    }

    pub fn identity(&self) -> AppIdentity {
        AppIdentity {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            uid: self.uid.clone(),
        }
    }

    /// The entry serving `t`: the first that matches, as the spec documents.
    pub fn function_for(&self, t: &TypeName) -> Option<&FunctionEntry> {
        self.functions.iter().find(|f| match &f.serves {
            Serves::Type(x) => x == t,
            Serves::Namespace { namespace, only } => {
                namespace == t.namespace() && (only.is_empty() || only.iter().any(|n| n == t.name()))
            }
        })
    }

    /// Every credential the spec reads from the environment, with its field path.
    pub fn credentials(&self) -> impl Iterator<Item = (&str, &SecretValue)> {
        self.secrets.iter().map(|(at, s)| (at.as_str(), s))
    }

    /// The TLS settings of every Kafka and NATS connector, with its name.
    pub fn connector_tls(&self) -> Vec<(String, &ClientTls)> {
        let mut out = Vec::new();
        for s in &self.sources {
            let tls = match &s.kind {
                SourceKind::Kafka(k) => k.tls.as_ref(),
                SourceKind::Nats(n) => n.tls.as_ref(),
                SourceKind::Schedule(_) => None,
            };
            out.extend(tls.map(|t| (format!("ingress {}", s.name), t)));
        }
        for e in &self.egresses {
            let tls = match &e.sink {
                EgressSink::Kafka(k) => k.tls.as_ref(),
                EgressSink::Nats(n) => n.tls.as_ref(),
                _ => None,
            };
            out.extend(tls.map(|t| (format!("egress {}", e.typename), t)));
        }
        out
    }

    pub fn egress(&self, t: &TypeName) -> Option<&EgressEntry> {
        self.egresses.iter().find(|e| &e.typename == t)
    }

    /// Points function `id` at a local process on `127.0.0.1:port`, keeping the endpoint's path.
    pub fn use_local_port(&mut self, id: FunctionId, port: u16) {
        let f = &mut self.functions[id];
        let rest = f.endpoint.split_once("://").map_or("", |(_, r)| r);
        let path = rest.find('/').map_or("/", |i| &rest[i..]);
        f.endpoint = format!("http://127.0.0.1:{port}{path}");
    }
}

impl FunctionEntry {
    /// The URL to invoke type `t` at.
    /// The endpoint for type `t`: `{function.name}` replaced by its name, percent-encoded
    /// (a name is put into the URL's path, never into its host, query or fragment).
    pub fn endpoint_for(&self, t: &TypeName) -> String {
        self.endpoint.replace("{function.name}", &percent_encode(t.name()))
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> AppConfig {
        let app = spindle_spec::from_yaml_str(
            r#"
apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {name: t}
spec:
  functions:
    - typename: example/special
      endpoint: http://special:9000/
    - typename: example/*
      endpoint: https://fns.example:8000/statefun/{function.name}?v=1
  egresses:
    - typename: example/out
      file: {path: out.jsonl}
"#,
            "t",
        )
        .unwrap();
        AppConfig::resolve(&app, Path::new("/apps/t"))
    }

    #[test]
    fn first_matching_entry_serves_a_type() {
        let app = app();
        let t = |s| TypeName::parse(s).unwrap();
        assert_eq!(app.function_for(&t("example/special")).unwrap().id, 0);
        let f = app.function_for(&t("example/greeter")).unwrap();
        assert_eq!(f.id, 1);
        assert_eq!(
            f.endpoint_for(&t("example/greeter")),
            "https://fns.example:8000/statefun/greeter?v=1"
        );
        assert!(app.function_for(&t("other/greeter")).is_none());
    }

    #[test]
    fn a_wildcard_entry_with_types_serves_only_those() {
        let yaml = "apiVersion: spindle.dev/v1alpha1\nkind: StatefulApplication\nmetadata: {name: t}\nspec:\n  functions:\n    - {typename: ex/*, endpoint: 'http://f/', types: [greeter, person]}\n";
        let app = AppConfig::resolve(&spindle_spec::from_yaml_str(yaml, "t").unwrap(), Path::new("."));
        let t = |s| TypeName::parse(s).unwrap();
        assert!(app.function_for(&t("ex/greeter")).is_some());
        assert!(app.function_for(&t("ex/person")).is_some());
        assert!(
            app.function_for(&t("ex/invented")).is_none(),
            "a type nobody listed has no function"
        );
    }

    #[test]
    fn the_storage_root_holds_the_namespace_when_there_is_one() {
        let mut app = app();
        assert_eq!(app.identity().storage_root(), "t");
        app.namespace = Some("shop".into());
        assert_eq!(app.identity().storage_root(), "shop/t");
        assert_eq!(app.identity().to_string(), "`t` in namespace `shop`");
    }

    #[test]
    fn function_names_are_percent_encoded_into_the_path() {
        let mut app = app();
        app.functions[0].endpoint = "http://f:8000/fn/{function.name}".into();
        let t = TypeName::parse("ex/a?b#c%d").unwrap();
        assert_eq!(app.functions[0].endpoint_for(&t), "http://f:8000/fn/a%3Fb%23c%25d");
    }

    #[test]
    fn local_port_keeps_the_path() {
        let mut app = app();
        app.use_local_port(1, 4321);
        assert_eq!(
            app.functions[1].endpoint,
            "http://127.0.0.1:4321/statefun/{function.name}?v=1"
        );
        match &app.egresses[0].sink {
            EgressSink::File { path } => assert_eq!(path, Path::new("/apps/t/out.jsonl")),
            other => panic!("{other:?}"),
        }
    }
}
