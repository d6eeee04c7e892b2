//! Connections to the brokers of the connectors, shared by their ingresses and egresses.

pub mod kafka;
pub mod nats;

use spindle_spec::SecretValue;

/// A credential's value from its environment variable.
pub fn secret(s: &SecretValue) -> Result<String, String> {
    std::env::var(&s.env).map_err(|_| format!("environment variable {} (the credential) is not set", s.env))
}
