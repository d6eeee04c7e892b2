//! `spec.checkpoint.savepointRequest` against the in-memory API and a loopback stand-in for
//! worker 0's admin endpoint: the operator asks for each name once (with a token from
//! `spec.admin.auth`'s Secret), reports it in `status.savepoint` with an event, keeps asking
//! while the workers cannot answer (and finds a savepoint whose answer came too late), reports
//! a refusal as final — and restarts no worker.

mod support;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Secret;
use kube::api::PostParams;
use spindle_operator::builders::{CONFIG_HASH_ANNOTATION, OperatorConfig};
use support::{APP, World, app_from};

async fn config_hash(w: &World) -> String {
    let sts: kube::Api<StatefulSet> = w.api();
    let sts = sts.get("greeter-worker").await.unwrap();
    sts.spec.unwrap().template.metadata.unwrap().annotations.unwrap()[CONFIG_HASH_ANNOTATION].clone()
}

#[tokio::test]
async fn a_savepoint_request_is_carried_out_once_and_reported() {
    let w = World::new(OperatorConfig::default()).await;
    let mut app = app_from(APP);
    app.spec.checkpoint.savepoint_request = Some("before-v2".into());
    w.create(&app).await;
    w.reconcile().await;
    let status = w.get().await.status.unwrap().savepoint.unwrap();
    assert_eq!(
        (status.name.as_str(), status.phase.as_str()),
        ("before-v2", "Pending"),
        "{status:?}"
    );
    assert!(
        w.worker.savepoints.lock().unwrap().is_empty(),
        "no worker was ready to ask"
    );

    w.set_workers(3, 3).await;
    w.set_functions_available().await;
    w.worker.set_completed(5);
    let hash = config_hash(&w).await;
    w.reconcile().await;
    let status = w.get().await.status.unwrap().savepoint.unwrap();
    assert_eq!(
        (status.phase.as_str(), status.checkpoint),
        ("Taken", Some(5)),
        "{status:?}"
    );
    assert!(status.time.is_some());
    assert!(w.event_reasons().await.contains(&"SavepointTaken".to_string()));
    w.reconcile().await;
    assert_eq!(w.worker.savepoints.lock().unwrap().len(), 1, "asked once per name");
    assert_eq!(config_hash(&w).await, hash, "a savepoint request restarts no worker");

    // Another name, then the first one again: worker 0 refuses a name it has (final).
    w.edit(|a| a.spec.checkpoint.savepoint_request = Some("nightly-1".into()))
        .await;
    w.reconcile().await;
    w.edit(|a| a.spec.checkpoint.savepoint_request = Some("before-v2".into()))
        .await;
    w.reconcile().await;
    w.reconcile().await;
    let status = w.get().await.status.unwrap().savepoint.unwrap();
    assert_eq!(status.phase, "Failed", "{status:?}");
    assert!(status.message.unwrap().contains("exists already"));
    assert!(w.event_reasons().await.contains(&"SavepointFailed".to_string()));
    assert_eq!(w.worker.savepoints.lock().unwrap().len(), 3);

    // Taken, but the answer came too late (Pending); asked again, worker 0 has it: Taken.
    w.edit(|a| a.spec.checkpoint.savepoint_request = Some("slow-1".into()))
        .await;
    w.reconcile().await;
    assert_eq!(w.get().await.status.unwrap().savepoint.unwrap().phase, "Pending");
    w.reconcile().await;
    let status = w.get().await.status.unwrap().savepoint.unwrap();
    assert_eq!(
        (status.phase.as_str(), status.checkpoint),
        ("Taken", Some(5)),
        "{status:?}"
    );

    // With admin auth: a token from its Secret.
    let secrets: kube::Api<Secret> = w.api();
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "admin-tokens"},
        "data": {"tokens": "IyByb3RhdGVkIG1vbnRobHkKdC0xCnQtMAo="}
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &secret).await.unwrap();
    w.edit(|a| {
        a.spec.admin = Some(
            serde_json::from_value(serde_json::json!({"auth": {"tokens": {
                "env": "ADMIN_TOKENS", "secretKeyRef": {"name": "admin-tokens", "key": "tokens"}}}}))
            .unwrap(),
        );
        a.spec.checkpoint.savepoint_request = Some("with-token".into());
    })
    .await;
    w.reconcile().await;
    let asked = w.worker.savepoints.lock().unwrap().last().cloned().unwrap();
    assert_eq!(asked, ("with-token".to_string(), Some("Bearer t-1".to_string())));
    assert_eq!(w.get().await.status.unwrap().savepoint.unwrap().phase, "Taken");
}
