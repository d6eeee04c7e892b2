//! Spindle's control plane. Today: the `StatefulApplication` CustomResourceDefinition
//! generated from the spec's Rust types (`crdgen` writes `crds/`), and the pure builders of
//! the objects that run an application. The controller that applies them builds on these.

pub mod builders;
pub mod crd;
