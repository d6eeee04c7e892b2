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

/// OTLP trace export messages (`ExportTraceServiceRequest` and what it holds), vendored from
/// opentelemetry-proto (`proto/opentelemetry`, Apache-2.0): what the worker's opt-in tracing
/// sends to a collector. With the `otlp` feature (the worker's).
#[cfg(feature = "otlp")]
pub mod otlp {
    // Nested as the protobuf packages are: the generated code names its imports by
    // `super::super::common::v1`.
    pub mod common {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/opentelemetry.proto.common.v1.rs"));
        }
    }
    pub mod resource {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/opentelemetry.proto.resource.v1.rs"));
        }
    }
    pub mod trace {
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/opentelemetry.proto.trace.v1.rs"));
        }
    }
    pub mod collector {
        pub mod trace {
            pub mod v1 {
                include!(concat!(env!("OUT_DIR"), "/opentelemetry.proto.collector.trace.v1.rs"));
            }
        }
    }
}

mod primitives;
pub use primitives::{Primitive, typenames};

pub use prost::Message;

/// The content type of every request and reply body.
pub const CONTENT_TYPE: &str = "application/octet-stream";
