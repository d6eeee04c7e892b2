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
    #[error("peer TLS: {0}")]
    Tls(String),
}

impl Error {
    /// Someone else wrote the object first (409 with reason `Conflict`: a stale
    /// resourceVersion), as the Go client's `IsConflict` decides it; a 409 `AlreadyExists` is
    /// not one. Retrying with a fresh read succeeds, so it is retried sooner than other errors.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(status)) if status.is_conflict())
    }

    /// The `kind` label of `spindle_operator_reconcile_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            e if e.is_conflict() => "conflict",
            Error::Kube(_) => "kube",
            Error::MissingField(_) => "missing_field",
            Error::WorkerAdmin { .. } => "worker_admin",
            Error::Listen { .. } => "listen",
            Error::Config(_) => "config",
            Error::LostLease(_) => "lost_lease",
            Error::Tls(_) => "tls",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn api(reason: &str, code: u16) -> Error {
        Error::Kube(kube::Error::Api(Status::failure("", reason).with_code(code).boxed()))
    }

    #[test]
    fn conflicts_are_told_by_the_status_not_the_label() {
        assert!(api("Conflict", 409).is_conflict());
        assert_eq!(api("Conflict", 409).metric_label(), "conflict");
        assert!(
            !api("AlreadyExists", 409).is_conflict(),
            "creating what exists is no stale write"
        );
        assert!(!api("NotFound", 404).is_conflict());
        assert_eq!(api("NotFound", 404).metric_label(), "kube");
        assert!(!Error::MissingField("metadata.uid").is_conflict());
    }
}
