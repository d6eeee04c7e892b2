//! Spindle's control plane: the `StatefulApplication` CRD (generated from the spec's Rust
//! types by `crdgen`), the pure builders of the objects that run an application, and the
//! controller that applies them (see docs/operator.md).

pub mod builders;
pub mod cli;
pub mod context;
pub mod controller;
pub mod crd;
mod error;
pub mod leader;
pub mod metrics;
pub mod pod_security;
pub mod resource;
mod run;
pub mod server;
pub mod tls;
pub mod worker_admin;

pub use error::Error;
pub use run::run;
