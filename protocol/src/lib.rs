//! The Apache Flink StateFun 3.x request-reply protocol, bit-compatible with the published
//! schema, plus the primitive wrapper types and typenames the SDKs use.
//!
//! `reqreply` holds `ToFunction` / `FromFunction` and friends; `types` the primitive wrappers
//! (`io.statefun.types/int` …); `egress` the Kafka producer record.

pub mod reqreply {
    include!(concat!(env!("OUT_DIR"), "/io.statefun.sdk.reqreply.rs"));
}

pub mod types {
    include!(concat!(env!("OUT_DIR"), "/io.statefun.sdk.types.rs"));
}

pub mod egress {
    include!(concat!(env!("OUT_DIR"), "/io.statefun.sdk.egress.rs"));
}

mod primitives;
pub use primitives::{Primitive, typenames};

pub use prost::Message;

/// The content type of every request and reply body.
pub const CONTENT_TYPE: &str = "application/octet-stream";
