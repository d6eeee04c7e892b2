//! The job that deletes an application's checkpoint data (`retentionPolicy: Delete`).
//!
//! It runs the worker image (`spindle checkpoints delete`), so the storage layout and the
//! credentials stay the workers' business: the operator never reads the Secret. It has no
//! owner reference: it runs while the application is being deleted, and a foreground
//! deletion would remove owned objects before it finished; the operator deletes it itself.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{Container, EnvFromSource, EnvVar, PodSpec, PodTemplateSpec, SecretEnvSource};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use spindle_spec::StatefulApplication;

use super::security::{restricted_container_context, restricted_pod_context, tmp_mount, tmp_volume};
use super::workers::{env, env_field};
use super::{OperatorConfig, checkpoint_storage, credentials_secret, labels};

const COMPONENT: &str = "checkpoint-cleanup";

pub fn cleanup_job_name(app: &StatefulApplication) -> String {
    format!("{}-delete-checkpoints", app.metadata.name)
}

/// `spindle checkpoints delete` for exactly this application: the storage URL and name as
/// the workers have them, and the namespace from `POD_NAMESPACE` as theirs, so it computes
/// the same root (`<storage>/<namespace>/<name>`) and touches no other application's data.
pub fn cleanup_job(app: &StatefulApplication, config: &OperatorConfig, uid: &str) -> Job {
    let storage = checkpoint_storage(app, config);
    let container = Container {
        name: "delete-checkpoints".into(),
        image: Some(config.worker_image.clone()),
        image_pull_policy: Some(config.image_pull_policy.clone()),
        args: Some(vec![
            "checkpoints".into(),
            "delete".into(),
            "--storage".into(),
            storage.url().to_string(),
            "--application".into(),
            app.metadata.name.clone(),
        ]),
        env_from: credentials_secret(app, config).map(|name| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name,
                    optional: Some(false),
                }),
                ..EnvFromSource::default()
            }]
        }),
        env: Some(vec![
            env_field("POD_NAMESPACE", "metadata.namespace"),
            env("SPINDLE_APPLICATION_UID", uid),
        ]) as Option<Vec<EnvVar>>,
        security_context: Some(restricted_container_context()),
        volume_mounts: Some(vec![tmp_mount()]),
        ..Container::default()
    };
    let labels: BTreeMap<String, String> = labels(app, COMPONENT);
    Job {
        metadata: ObjectMeta {
            name: Some(cleanup_job_name(app)),
            namespace: app.metadata.namespace.clone(),
            labels: Some(labels.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(3),
            // If the operator is gone before it deletes the job, Kubernetes does.
            ttl_seconds_after_finished: Some(3600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    restart_policy: Some("Never".into()),
                    security_context: Some(restricted_pod_context()),
                    volumes: Some(vec![tmp_volume()]),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}
