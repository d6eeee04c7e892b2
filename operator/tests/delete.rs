//! Deleting an application against the in-memory API, with each checkpoint retention policy:
//! the workers stop first; `Retain` keeps the data, `Delete` runs the deletion job and waits
//! for it; the finalizer goes last and the owned objects go with the application.

mod support;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use spindle_operator::builders::OperatorConfig;
use support::{APP, World, app_from};

async fn running(policy: &str) -> World {
    let w = World::new(OperatorConfig::default()).await;
    let yaml = APP.replace(
        "  egresses:",
        &format!("  checkpoint:\n    storage: s3://checkpoints/spindle\n    credentialsSecret: s3\n    retentionPolicy: {policy}\n  egresses:"),
    );
    w.create(&app_from(&yaml)).await;
    w.reconcile().await;
    w.set_workers(3, 3).await;
    w
}

#[tokio::test]
async fn retain_stops_the_workers_and_keeps_the_checkpoints() {
    let mut w = running("Retain").await;
    w.kubectl_delete().await;
    w.reconcile().await;
    assert!(
        w.api::<StatefulSet>()
            .get_opt("greeter-worker")
            .await
            .unwrap()
            .is_none(),
        "the workers stop first"
    );
    assert!(w.exists().await, "the finalizer holds the application meanwhile");

    w.reconcile().await;
    assert!(!w.exists().await, "cleanup done: the application is gone");
    assert!(
        w.api::<Job>()
            .get_opt("greeter-delete-checkpoints")
            .await
            .unwrap()
            .is_none(),
        "no deletion job"
    );
    assert!(
        w.api::<ConfigMap>().get_opt("greeter-config").await.unwrap().is_none(),
        "owned objects went with it"
    );
    assert!(w.api::<Deployment>().get_opt("greeter-fn-0").await.unwrap().is_none());
    let reasons = w.event_reasons().await;
    assert!(
        reasons.contains(&"StoppingWorkers".to_string()) && reasons.contains(&"CheckpointsRetained".to_string()),
        "{reasons:?}"
    );
    assert!(
        w.ctx
            .metrics
            .encode()
            .contains("spindle_operator_deletions_total{policy=\"retain\"} 1")
    );
}

async fn finish_job(w: &World, status: serde_json::Value) {
    let jobs = w.api::<Job>();
    jobs.patch_status(
        "greeter-delete-checkpoints",
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": status})),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn delete_runs_the_deletion_job_and_waits_for_it() {
    let mut w = running("Delete").await;
    w.kubectl_delete().await;
    w.reconcile().await;
    assert!(
        w.api::<StatefulSet>()
            .get_opt("greeter-worker")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        w.api::<Job>()
            .get_opt("greeter-delete-checkpoints")
            .await
            .unwrap()
            .is_none(),
        "no job while workers may run"
    );

    w.reconcile().await;
    let job = w
        .api::<Job>()
        .get("greeter-delete-checkpoints")
        .await
        .expect("the deletion job");
    let c = &job.spec.unwrap().template.spec.unwrap().containers[0];
    assert_eq!(
        c.args.as_deref().unwrap(),
        [
            "checkpoints",
            "delete",
            "--storage",
            "s3://checkpoints/spindle",
            "--application",
            "greeter"
        ]
    );
    assert_eq!(c.env_from.as_ref().unwrap()[0].secret_ref.as_ref().unwrap().name, "s3");

    // Still running: the application stays.
    w.reconcile().await;
    assert!(w.exists().await);

    // It failed (storage down): said, and tried again with a fresh job.
    finish_job(
        &w,
        json!({"failed": 4, "conditions": [{"type": "Failed", "status": "True"}]}),
    )
    .await;
    w.reconcile().await;
    assert!(w.exists().await, "kept until the data is deleted");
    assert!(
        w.event_reasons()
            .await
            .contains(&"CheckpointDeletionFailed".to_string())
    );
    assert!(
        w.api::<Job>()
            .get_opt("greeter-delete-checkpoints")
            .await
            .unwrap()
            .is_none()
    );
    w.reconcile().await;
    w.api::<Job>()
        .get("greeter-delete-checkpoints")
        .await
        .expect("a new deletion job");

    finish_job(&w, json!({"succeeded": 1})).await;
    w.reconcile().await;
    assert!(!w.exists().await, "cleanup done");
    assert!(
        w.api::<Job>()
            .get_opt("greeter-delete-checkpoints")
            .await
            .unwrap()
            .is_none(),
        "the job is deleted too"
    );
    let reasons = w.event_reasons().await;
    for want in ["StoppingWorkers", "DeletingCheckpoints", "CheckpointsDeleted"] {
        assert!(reasons.contains(&want.to_string()), "{want} in {reasons:?}");
    }
    assert!(
        w.ctx
            .metrics
            .encode()
            .contains("spindle_operator_deletions_total{policy=\"delete\"} 1")
    );
}

#[tokio::test]
async fn switching_a_stuck_deletion_to_retain_lets_the_application_go() {
    let mut w = running("Delete").await;
    w.kubectl_delete().await;
    w.reconcile().await;
    w.reconcile().await;
    w.api::<Job>()
        .get("greeter-delete-checkpoints")
        .await
        .expect("the deletion job");
    w.edit(|a| a.spec.checkpoint.retention_policy = spindle_spec::RetentionPolicy::Retain)
        .await;
    w.reconcile().await;
    assert!(!w.exists().await);
    assert!(
        w.api::<Job>()
            .get_opt("greeter-delete-checkpoints")
            .await
            .unwrap()
            .is_none()
    );
}
