//! A Deployment and a Service per function entry that names an image.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, Service, ServicePort,
    ServiceSpec, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use spindle_spec::{FunctionSpec, StatefulApplication};

use super::{meta, selector};

const DEFAULT_PORT: u16 = 8000;

fn component(index: usize) -> String {
    format!("function-{index}")
}

/// The Service of `spec.functions[index]`: `<app>-fn-<index>`.
pub fn function_service_name(app: &StatefulApplication, index: usize) -> String {
    format!("{}-fn-{index}", app.metadata.name)
}

fn port(f: &FunctionSpec) -> i32 {
    i32::from(f.port.unwrap_or(DEFAULT_PORT))
}

/// `None` when the entry has no image (it is served from elsewhere: its endpoint as written).
pub fn function_deployment(app: &StatefulApplication, index: usize, owner: &OwnerReference) -> Option<Deployment> {
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
                        ..Container::default()
                    }],
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        ..PodSecurityContext::default()
                    }),
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
