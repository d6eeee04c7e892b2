//! The workers: their configuration, Services, StatefulSet and disruption budget.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SecretEnvSource, Service, ServicePort,
    ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use spindle_spec::StatefulApplication;

use super::functions::resolved_endpoint;
use super::security::{restricted_container_context, restricted_pod_context, tmp_mount, tmp_volume};
use super::tls::{TLS_DIR, TLS_HASH_ANNOTATION, tls_mount, tls_volume};
use super::{
    ADMIN_PORT, CONFIG_DIR, CONFIG_FILE, DATA_DIR, OperatorConfig, PEER_PORT, checkpoint_storage, credentials_secret,
    fnv1a, meta, selector,
};

const COMPONENT: &str = "worker";

/// On the StatefulSet: the worker count its configuration was written for. While a rescale
/// is under way it differs from `spec.workers` (see `controller::rescale`).
pub const WORKERS_ANNOTATION: &str = "spindle.dev/workers";
/// On the pod template: a hash of the ConfigMap, so that a changed configuration restarts
/// the workers (they read it once, at start).
pub const CONFIG_HASH_ANNOTATION: &str = "spindle.dev/config-hash";

pub fn config_map_name(app: &StatefulApplication) -> String {
    format!("{}-config", app.metadata.name)
}

pub fn ingress_service_name(app: &StatefulApplication) -> String {
    format!("{}-ingress", app.metadata.name)
}

/// The labels of the worker pods.
pub fn worker_selector(app: &StatefulApplication) -> BTreeMap<String, String> {
    selector(app, COMPONENT)
}

/// The worker pods' selector as a label-selector string (`status.selector`, which
/// `kubectl scale` and a HorizontalPodAutoscaler read through the scale subresource).
pub fn selector_string(app: &StatefulApplication) -> String {
    worker_selector(app)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Seconds a worker pod gets to stop (`terminationGracePeriodSeconds`): room for its clean
/// stop — input stops, a final checkpoint, exit — which the worker bounds by
/// `SPINDLE_STOP_TIMEOUT`, 5 s less. `max(30 s, 10 s + 3 × checkpoint interval)`: a
/// checkpoint already under way when the signal comes, then the final one, and slack.
pub fn grace_period(app: &StatefulApplication) -> i64 {
    let interval = app.spec.checkpoint.interval.as_duration();
    let interval_secs = interval.as_secs() + u64::from(interval.subsec_nanos() > 0);
    30.max(10 + 3 * interval_secs as i64)
}

pub fn statefulset_name(app: &StatefulApplication) -> String {
    format!("{}-worker", app.metadata.name)
}

pub fn peer_service_name(app: &StatefulApplication) -> String {
    format!("{}-workers", app.metadata.name)
}

pub(crate) fn ingress_port(app: &StatefulApplication) -> Option<i32> {
    app.spec
        .ingresses
        .iter()
        .find_map(|i| i.http.as_ref())
        .map(|h| i32::from(h.port))
}

/// The application file the workers read: function endpoints resolved to the operator's
/// Services, checkpoint storage resolved (see [`checkpoint_storage`]), and nothing the workers
/// do not use (images, local commands, labels), so that only changes that matter to them
/// restart them. Credentials stay out of it: they come from a Secret, as environment.
pub fn config_map(app: &StatefulApplication, config: &OperatorConfig, owner: &OwnerReference) -> ConfigMap {
    ConfigMap {
        metadata: meta(app, config_map_name(app), COMPONENT, owner),
        data: Some(BTreeMap::from([(CONFIG_FILE.to_string(), worker_config(app, config))])),
        ..ConfigMap::default()
    }
}

fn worker_config(app: &StatefulApplication, config: &OperatorConfig) -> String {
    let mut resolved = app.clone();
    for i in 0..resolved.spec.functions.len() {
        let f = &mut resolved.spec.functions[i];
        f.endpoint = resolved_endpoint(app, i);
        f.local = None;
        f.image = None;
    }
    resolved.metadata = spindle_spec::ObjectMeta {
        name: app.metadata.name.clone(),
        ..Default::default()
    };
    resolved.spec.checkpoint.storage = Some(checkpoint_storage(app, config).url().to_string());
    resolved.spec.checkpoint.credentials_secret = None;
    // The operator carries it out (worker 0's admin endpoint): asking must not restart them.
    resolved.spec.checkpoint.savepoint_request = None;
    // The operator's business, not the workers': changing it must not restart them.
    resolved.spec.kubernetes = Default::default();
    for f in &mut resolved.spec.functions {
        f.resources = None;
    }
    serde_yaml::to_string(&resolved).expect("the spec serializes")
}

/// Headless: gives each worker pod the stable name `<statefulset>-<i>.<service>` its peers dial.
pub fn peer_service(app: &StatefulApplication, owner: &OwnerReference) -> Service {
    Service {
        metadata: meta(app, peer_service_name(app), COMPONENT, owner),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            // Peers must reach each other before they are ready: readiness waits for them.
            publish_not_ready_addresses: Some(true),
            selector: Some(selector(app, COMPONENT)),
            ports: Some(vec![
                ServicePort {
                    name: Some("peer".into()),
                    port: PEER_PORT,
                    target_port: Some(IntOrString::String("peer".into())),
                    ..ServicePort::default()
                },
                // The operator reads `/status` of worker 0 through its DNS name; Prometheus
                // finds the workers' `/metrics` here too.
                ServicePort {
                    name: Some("admin".into()),
                    port: ADMIN_PORT,
                    target_port: Some(IntOrString::String("admin".into())),
                    ..ServicePort::default()
                },
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The HTTP ingress of every worker behind one Service; `None` without an HTTP ingress.
pub fn ingress_service(app: &StatefulApplication, owner: &OwnerReference) -> Option<Service> {
    let port = ingress_port(app)?;
    Some(Service {
        metadata: meta(app, ingress_service_name(app), COMPONENT, owner),
        spec: Some(ServiceSpec {
            selector: Some(selector(app, COMPONENT)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port,
                target_port: Some(IntOrString::String("ingress".into())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    })
}

pub(crate) fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

pub(crate) fn env_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn resources(config: &OperatorConfig) -> ResourceRequirements {
    let r = &config.worker_resources;
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity(r.cpu_request.clone())),
            ("memory".to_string(), Quantity(r.memory_request.clone())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity(r.memory_limit.clone()),
        )])),
        ..ResourceRequirements::default()
    }
}

fn http_probe(path: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("admin".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        ..Probe::default()
    }
}

/// The workers: `spindle worker /etc/spindle/app.yaml`, finding their index and peers from the
/// pod name and the headless Service (see the worker's `peer::discovery`). `tls_hash`: the
/// hash of the certificates in the TLS Secret (`tls_secret`), when peer TLS is on.
pub fn worker_statefulset(
    app: &StatefulApplication,
    config: &OperatorConfig,
    owner: &OwnerReference,
    tls_hash: Option<&str>,
) -> StatefulSet {
    let mut ports = vec![
        ContainerPort {
            name: Some("admin".into()),
            container_port: ADMIN_PORT,
            ..ContainerPort::default()
        },
        ContainerPort {
            name: Some("peer".into()),
            container_port: PEER_PORT,
            ..ContainerPort::default()
        },
    ];
    if let Some(port) = ingress_port(app) {
        ports.push(ContainerPort {
            name: Some("ingress".into()),
            container_port: port,
            ..ContainerPort::default()
        });
    }
    let grace = grace_period(app);
    let mut mounts = vec![
        VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        },
        VolumeMount {
            name: "data".into(),
            mount_path: DATA_DIR.into(),
            ..VolumeMount::default()
        },
        tmp_mount(),
    ];
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(app),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: "data".into(),
            empty_dir: Some(Default::default()),
            ..Volume::default()
        },
        tmp_volume(),
    ];
    if tls_hash.is_some() {
        mounts.push(tls_mount());
        volumes.push(tls_volume(app));
    }
    let container = Container {
        name: "worker".into(),
        image: Some(config.worker_image.clone()),
        image_pull_policy: Some(config.image_pull_policy.clone()),
        args: Some(vec!["worker".into(), format!("{CONFIG_DIR}/{CONFIG_FILE}")]),
        env: Some(
            [
                vec![
                    env_field("POD_NAME", "metadata.name"),
                    env_field("POD_NAMESPACE", "metadata.namespace"),
                    env("SPINDLE_STATEFULSET", statefulset_name(app)),
                    env("SPINDLE_PEER_SERVICE", peer_service_name(app)),
                    env("SPINDLE_PEER_PORT", PEER_PORT.to_string()),
                    env("SPINDLE_ADMIN_ADDR", format!("0.0.0.0:{ADMIN_PORT}")),
                    env("SPINDLE_DATA_DIR", DATA_DIR),
                    // Recorded in checkpoints: a worker restores only its own application's.
                    env("SPINDLE_APPLICATION_UID", owner.uid.clone()),
                    env("SPINDLE_STOP_TIMEOUT", format!("{}s", grace - 5)),
                ],
                tls_hash.map(|_| env("SPINDLE_TLS_DIR", TLS_DIR)).into_iter().collect(),
                super::credentials::credential_env(app),
                config.worker_env.iter().map(|(k, v)| env(k, v.as_str())).collect(),
            ]
            .concat(),
        ),
        env_from: credentials_secret(app, config).map(|name| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name,
                    optional: Some(false),
                }),
                ..EnvFromSource::default()
            }]
        }),
        resources: Some(resources(config)),
        ports: Some(ports),
        readiness_probe: Some(http_probe("/readyz", 2)),
        liveness_probe: Some(http_probe("/healthz", 10)),
        volume_mounts: Some(mounts),
        security_context: Some(restricted_container_context()),
        ..Container::default()
    };
    let pod = PodSpec {
        containers: vec![container],
        volumes: Some(volumes),
        security_context: Some(restricted_pod_context()),
        termination_grace_period_seconds: Some(grace),
        // Workers never call the Kubernetes API.
        automount_service_account_token: Some(false),
        // Peers come from the headless Service's DNS names, not from Docker-link variables.
        enable_service_links: Some(false),
        ..PodSpec::default()
    };
    let mut metadata = meta(app, statefulset_name(app), COMPONENT, owner);
    metadata.annotations = Some(BTreeMap::from([(
        WORKERS_ANNOTATION.to_string(),
        app.spec.workers.to_string(),
    )]));
    let mut template_annotations =
        BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_string(), fnv1a(&worker_config(app, config)))]);
    if let Some(hash) = tls_hash {
        template_annotations.insert(TLS_HASH_ANNOTATION.to_string(), hash.to_string());
    }
    StatefulSet {
        metadata,
        spec: Some(StatefulSetSpec {
            replicas: Some(app.spec.workers as i32),
            service_name: Some(peer_service_name(app)),
            // All workers start together: each waits for its peers anyway.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector(app, COMPONENT)),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(super::labels(app, COMPONENT)),
                    annotations: Some(template_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod),
            },
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

/// At most one worker voluntarily evicted at a time.
pub fn pod_disruption_budget(app: &StatefulApplication, owner: &OwnerReference) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(app, statefulset_name(app), COMPONENT, owner),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector(app, COMPONENT)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}
