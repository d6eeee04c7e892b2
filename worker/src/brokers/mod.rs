//! Connections to the brokers of the connectors, shared by their ingresses and egresses.

pub mod kafka;
pub mod nats;
