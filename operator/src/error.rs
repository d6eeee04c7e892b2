//! The operator's errors. Each has a fixed metric label (never the error text).

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("the StatefulApplication has no {0} (the API server always sets it)")]
    MissingField(&'static str),
    #[error("worker admin endpoint {url}: {reason}")]
    WorkerAdmin { url: String, reason: String },
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("kubeconfig: {0}")]
    Config(String),
    #[error("lost the leader lease `{0}` to another replica")]
    LostLease(String),
}

impl Error {
    /// The `kind` label of `spindle_operator_reconcile_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(e)) if e.code == 409 => "conflict",
            Error::Kube(_) => "kube",
            Error::MissingField(_) => "missing_field",
            Error::WorkerAdmin { .. } => "worker_admin",
            Error::Listen { .. } => "listen",
            Error::Config(_) => "config",
            Error::LostLease(_) => "lost_lease",
        }
    }
}
