//! A Deployment and a Service per function entry that names an image.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, Service, ServicePort,
    ServiceSpec, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use spindle_spec::{FunctionSpec, ResourceSpec, StatefulApplication};

use super::security::{restricted_container_context, restricted_pod_context, tmp_mount, tmp_volume};
use super::{OperatorConfig, meta, selector};

const DEFAULT_PORT: u16 = 8000;

pub(crate) fn component(index: usize) -> String {
    format!("function-{index}")
}

/// The Service of `spec.functions[index]`: `<app>-fn-<index>`.
pub fn function_service_name(app: &StatefulApplication, index: usize) -> String {
    format!("{}-fn-{index}", app.metadata.name)
}

fn port(f: &FunctionSpec) -> i32 {
    i32::from(f.port.unwrap_or(DEFAULT_PORT))
}

/// The function's resources: its own, field by field, else the operator's defaults.
fn resources(f: &FunctionSpec, defaults: &ResourceSpec) -> ResourceRequirements {
    let own = f.resources.clone().unwrap_or_default();
    let pick = |pairs: [(&str, &Option<String>, &Option<String>); 2]| -> Option<BTreeMap<String, Quantity>> {
        let map: BTreeMap<String, Quantity> = pairs
            .into_iter()
            .filter_map(|(name, own, default)| Some((name.to_string(), Quantity(own.clone().or(default.clone())?))))
            .collect();
        (!map.is_empty()).then_some(map)
    };
    ResourceRequirements {
        requests: pick([
            ("cpu", &own.cpu_request, &defaults.cpu_request),
            ("memory", &own.memory_request, &defaults.memory_request),
        ]),
        limits: pick([
            ("cpu", &own.cpu_limit, &defaults.cpu_limit),
            ("memory", &own.memory_limit, &defaults.memory_limit),
        ]),
        ..ResourceRequirements::default()
    }
}

/// `None` when the entry has no image (it is served from elsewhere: its endpoint as written).
/// The container runs as the restricted profile wants, with a read-only root filesystem and
/// a writable `/tmp`; it gets no ServiceAccount token.
pub fn function_deployment(
    app: &StatefulApplication,
    index: usize,
    config: &OperatorConfig,
    owner: &OwnerReference,
) -> Option<Deployment> {
    let f = &app.spec.functions[index];
    let image = f.image.clone()?;
    let component = component(index);
    let port = port(f);
    let probe = Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::Int(port),
            ..TCPSocketAction::default()
        }),
        period_seconds: Some(5),
        ..Probe::default()
    };
    Some(Deployment {
        metadata: meta(app, function_service_name(app, index), &component, owner),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(selector(app, &component)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(super::labels(app, &component)),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "function".into(),
                        image: Some(image),
                        env: Some(vec![EnvVar {
                            name: "PORT".into(),
                            value: Some(port.to_string()),
                            ..EnvVar::default()
                        }]),
                        ports: Some(vec![ContainerPort {
                            name: Some("http".into()),
                            container_port: port,
                            ..ContainerPort::default()
                        }]),
                        readiness_probe: Some(probe.clone()),
                        liveness_probe: Some(probe),
                        resources: Some(resources(f, &config.function_resources)),
                        security_context: Some(restricted_container_context()),
                        volume_mounts: Some(vec![tmp_mount()]),
                        ..Container::default()
                    }],
                    volumes: Some(vec![tmp_volume()]),
                    security_context: Some(restricted_pod_context()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    })
}

pub fn function_service(app: &StatefulApplication, index: usize, owner: &OwnerReference) -> Option<Service> {
    let f = &app.spec.functions[index];
    f.image.as_ref()?;
    let component = component(index);
    Some(Service {
        metadata: meta(app, function_service_name(app, index), &component, owner),
        spec: Some(ServiceSpec {
            selector: Some(selector(app, &component)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: port(f),
                target_port: Some(IntOrString::String("http".into())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

/// The endpoint workers use for `spec.functions[index]`: the function's Service, keeping the
/// written endpoint's path, when the operator runs its image; the endpoint as written otherwise.
pub(crate) fn resolved_endpoint(app: &StatefulApplication, index: usize) -> String {
    let f = &app.spec.functions[index];
    if f.image.is_none() {
        return f.endpoint.clone();
    }
    let rest = f.endpoint.split_once("://").map_or("", |(_, r)| r);
    let path = rest.find('/').map_or("/", |i| &rest[i..]);
    format!("http://{}:{}{path}", function_service_name(app, index), port(f))
}
