//! Ingresses: where outside records enter the application — HTTP requests, and sources with
//! positions in checkpoints (Kafka partitions, a NATS JetStream stream).

pub mod http;
pub mod kafka;
pub mod nats;
pub mod route;
pub mod sources;
