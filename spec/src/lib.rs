//! The `StatefulApplication` spec (API group `spindle.dev`): the one YAML that runs locally and,
//! applied with `kubectl`, in a cluster. Loading validates it and names the failing field.

pub mod connectors;
mod duration;
pub mod kubernetes;
mod load;
pub mod module_yaml;
pub mod reference;
pub mod schedule;
pub mod security;
mod typename;
mod types;
mod validate;
mod validate_connectors;

pub use connectors::*;
pub use duration::{DurationError, HumanDuration};
pub use kubernetes::{KubernetesSpec, NetworkPeer, NetworkPolicySpec, ResourceSpec};
pub use load::{LoadError, from_yaml_str, load_file, module_name};
pub use schedule::{CatchUp, Plan, ScheduleIngress};
pub use security::*;
pub use typename::{TypeName, TypeNameError};
pub use types::*;
pub use validate::{FieldError, ValidationErrors, check_savepoint_name};

/// The custom resource's API group, version, `group/version`, kind and plural (the last is
/// the resource's name in API paths and in the CRD's name `statefulapplications.spindle.dev`).
pub const API_GROUP: &str = "spindle.dev";
pub const VERSION: &str = "v1alpha1";
pub const API_VERSION: &str = "spindle.dev/v1alpha1";
pub const KIND: &str = "StatefulApplication";
pub const PLURAL: &str = "statefulapplications";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_version_is_group_and_version() {
        assert_eq!(API_VERSION, format!("{API_GROUP}/{VERSION}"));
    }
}
