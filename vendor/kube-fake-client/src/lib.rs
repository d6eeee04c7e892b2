//! In-memory Kubernetes client for testing controllers and operators.
//!
//! Based on controller-runtime's fake client from the Go ecosystem.
//!
//! # Examples
//!
//! ## Namespaced Resources
//!
//! ```rust
//! use kube_fake_client::ClientBuilder;
//! use k8s_openapi::api::core::v1::Pod;
//! use kube::api::{Api, PostParams};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = ClientBuilder::new().build().await?;
//! let pods: Api<Pod> = Api::namespaced(client, "default");
//!
//! let mut pod = Pod::default();
//! pod.metadata.name = Some("test-pod".to_string());
//!
//! pods.create(&PostParams::default(), &pod).await?;
//! # Ok(())
//! # }
//! ```

mod builder;
mod client;
mod client_utils;
pub mod discovery;
mod error;
mod field_selectors;
mod fields_v1;
pub mod gen;
pub mod interceptor;
pub mod label_selector;
mod managed_fields;
mod mock_service;
pub mod registry;
mod tracker;
mod utils;
pub mod validator;

pub use builder::ClientBuilder;
pub use error::{Error, Result};
pub use kube::Client;
pub use mock_service::PatchType;
