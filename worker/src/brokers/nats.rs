//! NATS connections as the JetStream ingress and egress both make them, with credentials read
//! from their environment variables and TLS (rustls with ring) when the spec asks for it.

use std::path::Path;
use std::time::Duration;

use spindle_spec::{ClientTls, NatsAuth};

use super::secret;

/// Connects with the configured credentials (read from their environment variables); with
/// `tls`, TLS is required (a `tls://` server URL requires it too). Relative TLS file paths
/// start at `base_dir`.
pub async fn connect(
    servers: &[String],
    auth: Option<&NatsAuth>,
    tls: Option<&ClientTls>,
    base_dir: &Path,
) -> Result<async_nats::Client, String> {
    let mut opts = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .name("spindle");
    if let Some(auth) = auth {
        if let Some(token) = &auth.token {
            opts = opts.token(secret(token)?);
        }
        if let Some(seed) = &auth.nkey_seed {
            opts = opts.nkey(secret(seed)?);
        }
    }
    if let Some(tls) = tls {
        let config = crate::tls::client::config(Some(tls), base_dir).map_err(|e| format!("NATS TLS: {e}"))?;
        opts = opts.require_tls(true).tls_client_config(config);
    }
    opts.connect(servers)
        .await
        .map_err(|e| format!("connecting to {servers:?}: {e}"))
}
