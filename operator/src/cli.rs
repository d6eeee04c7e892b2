//! The operator's command line; every flag can also be set by an environment variable
//! (the Helm chart sets those).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use spindle_spec::HumanDuration;

use crate::builders::{NetworkConfig, OperatorConfig, WorkerResources};
use crate::worker_admin::DEFAULT_URL_TEMPLATE;

#[derive(Debug, Parser)]
#[command(
    name = "spindle-operator",
    version,
    about = "Reconciles StatefulApplications into Spindle workers and functions"
)]
pub struct Args {
    #[clap(flatten)]
    pub server: ServerArgs,
    #[clap(flatten)]
    pub leader: LeaderArgs,
    #[clap(flatten)]
    pub workers: WorkerArgs,
}

#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "SPINDLE_OPERATOR_ADDR", default_value = "0.0.0.0:8080")]
    pub addr: SocketAddr,
    /// Log filter (tracing's EnvFilter syntax), e.g. `info` or `spindle_operator=debug`.
    #[arg(long, env = "SPINDLE_LOG", default_value = "info")]
    pub log: String,
}

#[derive(Debug, clap::Args)]
pub struct LeaderArgs {
    /// Name of the Lease replicas compete for.
    #[arg(long, env = "SPINDLE_OPERATOR_LEASE", default_value = "spindle-operator")]
    pub lease_name: String,
    /// Namespace of the Lease: the operator's own.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// This replica's name in the Lease (the pod name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// How long a lease holds without being renewed.
    #[arg(long, env = "SPINDLE_OPERATOR_LEASE_DURATION", default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// How often the holder renews (and a standby checks).
    #[arg(long, env = "SPINDLE_OPERATOR_LEASE_RENEW", default_value = "5s", value_parser = parse_duration)]
    pub renew_every: Duration,
}

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// Image of the `spindle` worker.
    #[arg(
        long,
        env = "SPINDLE_WORKER_IMAGE",
        default_value = "ghcr.io/spindle-dev/spindle-worker:0.1.0"
    )]
    pub worker_image: String,
    #[arg(long, env = "SPINDLE_IMAGE_PULL_POLICY", default_value = "IfNotPresent")]
    pub image_pull_policy: String,
    /// Checkpoint storage (`s3://bucket/prefix`) for applications whose spec names none.
    #[arg(long, env = "SPINDLE_DEFAULT_CHECKPOINT_STORAGE")]
    pub default_checkpoint_storage: Option<String>,
    /// Secret (in each application's namespace) with the credentials of the default storage.
    #[arg(long, env = "SPINDLE_DEFAULT_CREDENTIALS_SECRET")]
    pub default_credentials_secret: Option<String>,
    #[arg(long, env = "SPINDLE_WORKER_CPU_REQUEST", default_value = "100m")]
    pub worker_cpu_request: String,
    #[arg(long, env = "SPINDLE_WORKER_MEMORY_REQUEST", default_value = "128Mi")]
    pub worker_memory_request: String,
    #[arg(long, env = "SPINDLE_WORKER_MEMORY_LIMIT", default_value = "1Gi")]
    pub worker_memory_limit: String,
    /// URL of worker 0's admin endpoints; `{statefulset}`, `{service}`, `{namespace}` and
    /// `{port}` are replaced (change it to run the operator outside the cluster).
    #[arg(long, env = "SPINDLE_WORKER_ADMIN_URL", default_value = DEFAULT_URL_TEMPLATE)]
    pub worker_admin_url: String,
    /// Resources of function containers whose spec names none (empty: not set).
    #[arg(long, env = "SPINDLE_FUNCTION_CPU_REQUEST", default_value = "50m")]
    pub function_cpu_request: String,
    #[arg(long, env = "SPINDLE_FUNCTION_CPU_LIMIT", default_value = "")]
    pub function_cpu_limit: String,
    #[arg(long, env = "SPINDLE_FUNCTION_MEMORY_REQUEST", default_value = "64Mi")]
    pub function_memory_request: String,
    #[arg(long, env = "SPINDLE_FUNCTION_MEMORY_LIMIT", default_value = "512Mi")]
    pub function_memory_limit: String,
    /// Mutual TLS between workers: a CA and per-worker certificates per application, in a
    /// Secret the operator owns, mounted at /etc/spindle/tls.
    #[arg(long, env = "SPINDLE_PEER_TLS", default_value_t = true, action = clap::ArgAction::Set)]
    pub peer_tls: bool,
    /// The operator's own pod labels (`k=v,k=v`): the NetworkPolicies let these pods, in the
    /// operator's namespace, reach the workers' admin port.
    #[arg(long, env = "SPINDLE_OPERATOR_POD_LABELS", default_value = "", value_parser = parse_labels)]
    pub operator_pod_labels: Labels,
    /// Namespaces (by labels, `k=v,…`) whose pods may scrape the workers' admin port
    /// (`/metrics`); with --monitoring-pod-labels, only those pods there.
    #[arg(long, env = "SPINDLE_MONITORING_NAMESPACE_LABELS", value_parser = parse_labels)]
    pub monitoring_namespace_labels: Option<Labels>,
    /// Pods (by labels) that may scrape the workers' admin port.
    #[arg(long, env = "SPINDLE_MONITORING_POD_LABELS", value_parser = parse_labels)]
    pub monitoring_pod_labels: Option<Labels>,
    /// Watch only these namespaces (comma-separated; the chart's namespaced mode, with Roles
    /// there instead of a ClusterRole). Empty: every namespace.
    #[arg(long, env = "SPINDLE_WATCH_NAMESPACES", value_delimiter = ',')]
    pub watch_namespaces: Vec<String>,
    /// OpenTelemetry variables for every worker, as a JSON object of `OTEL_*` names to values
    /// (the chart's `worker.otel`): opt-in tracing (docs/operations.md, "Tracing").
    #[arg(long, env = "SPINDLE_WORKER_OTEL_ENV", value_parser = parse_otel_env)]
    pub worker_otel_env: Option<OtelEnv>,
}

/// `OTEL_*` variables for the workers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OtelEnv(pub BTreeMap<String, String>);

fn parse_otel_env(s: &str) -> Result<OtelEnv, String> {
    if s.trim().is_empty() {
        return Ok(OtelEnv::default());
    }
    let map: BTreeMap<String, serde_json::Value> =
        serde_json::from_str(s).map_err(|e| format!("not a JSON object of OTEL_* variables: {e}"))?;
    let mut out = BTreeMap::new();
    for (k, v) in map {
        if !k.starts_with("OTEL_") {
            return Err(format!("`{k}` is not an OpenTelemetry variable (OTEL_…)"));
        }
        let v = match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            other => return Err(format!("{k}: `{other}` is not a string")),
        };
        out.insert(k, v);
    }
    Ok(OtelEnv(out))
}

/// Labels as `k=v,k=v`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Labels(pub BTreeMap<String, String>);

fn parse_labels(s: &str) -> Result<Labels, String> {
    let mut out = BTreeMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("`{pair}` is not a label `key=value`"))?;
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(Labels(out))
}

impl WorkerArgs {
    /// `namespace`: the operator's own (its pods reach the workers' admin port from there).
    pub fn operator_config(&self, namespace: &str) -> OperatorConfig {
        let set = |s: &String| Some(s.clone()).filter(|s| !s.is_empty());
        let monitoring =
            (self.monitoring_namespace_labels.is_some() || self.monitoring_pod_labels.is_some()).then(|| {
                spindle_spec::NetworkPeer {
                    namespace_selector: self.monitoring_namespace_labels.clone().map(|l| l.0),
                    pod_selector: self.monitoring_pod_labels.clone().map(|l| l.0),
                    cidr: None,
                }
            });
        OperatorConfig {
            worker_image: self.worker_image.clone(),
            image_pull_policy: self.image_pull_policy.clone(),
            default_storage: self.default_checkpoint_storage.clone().filter(|s| !s.is_empty()),
            default_credentials_secret: self.default_credentials_secret.clone().filter(|s| !s.is_empty()),
            worker_resources: WorkerResources {
                cpu_request: self.worker_cpu_request.clone(),
                memory_request: self.worker_memory_request.clone(),
                memory_limit: self.worker_memory_limit.clone(),
            },
            function_resources: spindle_spec::ResourceSpec {
                cpu_request: set(&self.function_cpu_request),
                cpu_limit: set(&self.function_cpu_limit),
                memory_request: set(&self.function_memory_request),
                memory_limit: set(&self.function_memory_limit),
            },
            peer_tls: self.peer_tls,
            worker_env: self.worker_otel_env.clone().map(|e| e.0).unwrap_or_default(),
            network: NetworkConfig {
                operator_namespace: Some(namespace.to_string()),
                operator_pod_labels: self.operator_pod_labels.0.clone(),
                monitoring,
            },
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    HumanDuration::parse(s)
        .map(HumanDuration::as_duration)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn otel_variables_are_a_json_object_of_otel_names() {
        let env =
            parse_otel_env(r#"{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_BSP_SCHEDULE_DELAY": 1000}"#)
                .unwrap();
        assert_eq!(env.0["OTEL_EXPORTER_OTLP_ENDPOINT"], "http://c:4318");
        assert_eq!(env.0["OTEL_BSP_SCHEDULE_DELAY"], "1000");
        assert_eq!(parse_otel_env("").unwrap(), OtelEnv::default());
        assert_eq!(
            parse_otel_env(r#"{"PATH": "/x"}"#).unwrap_err(),
            "`PATH` is not an OpenTelemetry variable (OTEL_…)"
        );
        assert!(parse_otel_env("OTEL_X=1").unwrap_err().starts_with("not a JSON object"));
    }
}
