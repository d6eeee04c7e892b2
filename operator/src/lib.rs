//! Spindle's control plane. Today: the `StatefulApplication` CustomResourceDefinition,
//! generated from the spec's Rust types (`crdgen` writes `crds/`). The controller that
//! reconciles applications into StatefulSets builds on it.

pub mod crd;
