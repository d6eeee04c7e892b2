//! Kafka clients as the ingress and the egress both make them: TLS (rustls with ring) and
//! SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) as the connector's spec says.

use std::path::Path;
use std::time::Duration;

use rskafka::BackoffConfig;
use rskafka::client::{ClientBuilder, Credentials, SaslConfig};
use spindle_spec::{ClientTls, KafkaSasl, SaslMechanism};

use super::secret;

/// A client builder for `brokers`. rskafka retries retryable errors inside a call, by default
/// forever with waits growing to 500 s; Spindle retries itself (and must notice a rollback),
/// so a call gives up after a few seconds. Relative TLS file paths start at `base_dir`.
pub(crate) fn client_builder(
    brokers: &[String],
    tls: Option<&ClientTls>,
    sasl: Option<&KafkaSasl>,
    base_dir: &Path,
) -> Result<ClientBuilder, String> {
    let mut builder = ClientBuilder::new(brokers.to_vec())
        .client_id("spindle")
        .backoff_config(BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            base: 2.,
            deadline: Some(Duration::from_secs(5)),
        });
    if let Some(tls) = tls {
        let config = crate::tls::client::shared(tls, base_dir).map_err(|e| format!("Kafka TLS: {e}"))?;
        builder = builder.tls_config(config);
    }
    if let Some(s) = sasl {
        let credentials = Credentials::new(s.username.clone(), secret(&s.password)?);
        builder = builder.sasl_config(match s.mechanism {
            SaslMechanism::Plain => SaslConfig::Plain(credentials),
            SaslMechanism::ScramSha256 => SaslConfig::ScramSha256(credentials),
            SaslMechanism::ScramSha512 => SaslConfig::ScramSha512(credentials),
        });
    }
    Ok(builder)
}
