//! Kafka clients as the ingress and the egress both make them.

use std::time::Duration;

use rskafka::BackoffConfig;
use rskafka::client::ClientBuilder;

/// A client builder for `brokers`. rskafka retries retryable errors inside a call, by default
/// forever with waits growing to 500 s; Spindle retries itself (and must notice a rollback),
/// so a call gives up after a few seconds.
pub(crate) fn client_builder(brokers: &[String]) -> ClientBuilder {
    ClientBuilder::new(brokers.to_vec())
        .client_id("spindle")
        .backoff_config(BackoffConfig {
            init_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            base: 2.,
            deadline: Some(Duration::from_secs(5)),
        })
}
