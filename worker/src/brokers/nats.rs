//! NATS connections as the JetStream ingress and egress both make them, with credentials read
//! from their environment variables.

use std::time::Duration;

use spindle_spec::{NatsAuth, SecretValue};

/// Connects with the configured credentials (read from their environment variables).
pub async fn connect(servers: &[String], auth: Option<&NatsAuth>) -> Result<async_nats::Client, String> {
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
    opts.connect(servers)
        .await
        .map_err(|e| format!("connecting to {servers:?}: {e}"))
}

/// A credential's value from its environment variable.
pub fn secret(s: &SecretValue) -> Result<String, String> {
    std::env::var(&s.env).map_err(|_| format!("environment variable {} (the credential) is not set", s.env))
}
