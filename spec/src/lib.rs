//! The `StatefulApplication` spec (API group `spindle.dev`): the one YAML that runs locally and,
//! applied with `kubectl`, in a cluster. Loading validates it and names the failing field.

pub mod connectors;
mod duration;
mod load;
pub mod reference;
pub mod security;
mod typename;
mod types;
mod validate;
mod validate_connectors;

pub use connectors::*;
pub use duration::{DurationError, HumanDuration};
pub use load::{LoadError, from_yaml_str, load_file};
pub use security::*;
pub use typename::{TypeName, TypeNameError};
pub use types::*;
pub use validate::{FieldError, ValidationErrors};

/// API group and version of the custom resource.
pub const API_GROUP: &str = "spindle.dev";
pub const API_VERSION: &str = "spindle.dev/v1alpha1";
pub const KIND: &str = "StatefulApplication";
