//! Auto-generated code from Kubernetes metadata
//!
//! This module contains code generated from Kubernetes API discovery and OpenAPI metadata.

#[path = "discovery.rs"]
pub mod discovery;

#[path = "immutable.rs"]
pub mod immutable;
