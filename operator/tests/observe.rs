//! What the operator reads from worker 0's `/status` beyond checkpoints, against the
//! in-memory API and a loopback stand-in for worker 0: rollbacks and failed checkpoints as
//! status counters and events, a data-loss fallback as `Degraded` (`CheckpointDataLoss`) until
//! acknowledged, and the scale subresource's fields (`status.replicas`, `status.selector`).

mod support;

use kube::api::{Patch, PatchParams};
use serde_json::json;
use spindle_operator::builders::OperatorConfig;
use support::{APP, World, app_from};

async fn ready() -> World {
    let w = World::new(OperatorConfig::default()).await;
    w.create(&app_from(APP)).await;
    w.reconcile().await;
    w.set_workers(3, 3).await;
    w.set_functions_available().await;
    w
}

#[tokio::test]
async fn rollbacks_and_failed_checkpoints_are_counted_and_told() {
    let w = ready().await;
    w.worker.set_completed(3);
    w.reconcile().await;
    let status = w.get().await.status.unwrap();
    assert_eq!(
        (status.rollbacks, status.checkpoints_failed),
        (0, 0),
        "a worker without the counters changes nothing"
    );
    assert!(status.last_checkpoint_time.is_some());
    let first_seen = status.last_checkpoint_time.clone();

    w.worker
        .set_fields(json!({"incarnation": 11, "rollbacks": 2, "checkpointsFailed": 1}));
    w.reconcile().await;
    let status = w.get().await.status.unwrap();
    assert_eq!((status.rollbacks, status.checkpoints_failed), (2, 1));
    assert_eq!(
        status.last_checkpoint_time, first_seen,
        "the same checkpoint: the same time"
    );
    let reasons = w.event_reasons().await;
    assert!(reasons.contains(&"Rollback".to_string()), "{reasons:?}");
    assert!(reasons.contains(&"CheckpointFailed".to_string()), "{reasons:?}");

    // Worker 0 restarted: its counters start again; the totals go on.
    w.worker
        .set_fields(json!({"incarnation": 12, "rollbacks": 1, "checkpointsFailed": 0}));
    w.worker.set_completed(4);
    w.reconcile().await;
    let status = w.get().await.status.unwrap();
    assert_eq!((status.rollbacks, status.checkpoints_failed), (3, 1));
    assert_eq!(status.last_checkpoint, Some(4));
    // One event, reported twice (kube's recorder counts repeats in the event's series).
    let events: kube::Api<k8s_openapi::api::events::v1::Event> = w.api();
    let rollback = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|e| e.reason.as_deref() == Some("Rollback"))
        .unwrap();
    assert_eq!(
        rollback.series.map(|s| s.count),
        Some(2),
        "reported by both reconciliations"
    );
    assert_eq!(rollback.type_.as_deref(), Some("Warning"));
    assert_eq!(World::condition(&w.get().await, "Degraded").0, "False");
}

#[tokio::test]
async fn a_data_loss_fallback_degrades_until_acknowledged() {
    let w = ready().await;
    w.worker.set_completed(9);
    w.worker.set_fields(json!({
        "incarnation": 5, "rollbacks": 1, "checkpointsFailed": 0,
        "dataLoss": {"lostFrom": 7, "lostTo": 8, "restored": 6, "atMs": 1_750_000_000_000u64}
    }));
    w.reconcile().await;
    let app = w.get().await;
    let (status, reason, message) = World::condition(&app, "Degraded");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "CheckpointDataLoss"));
    assert!(
        message.contains("checkpoints 7..=8 were lost and 6 was restored"),
        "{message}"
    );
    assert_eq!(app.status.as_ref().unwrap().data_loss.unwrap().restored, 6);
    let reasons = w.event_reasons().await;
    assert_eq!(
        reasons.iter().filter(|r| *r == "CheckpointDataLoss").count(),
        1,
        "{reasons:?}"
    );

    // Seen again: no second event. A new coordinator without the report: still Degraded.
    w.reconcile().await;
    w.worker.set_fields(json!({"incarnation": 6, "dataLoss": null}));
    w.reconcile().await;
    assert_eq!(World::condition(&w.get().await, "Degraded").1, "CheckpointDataLoss");
    let reasons = w.event_reasons().await;
    assert_eq!(
        reasons.iter().filter(|r| *r == "CheckpointDataLoss").count(),
        1,
        "{reasons:?}"
    );

    // Acknowledged: Degraded clears; the record stays in the status.
    let patch = json!({"metadata": {"annotations": {"spindle.dev/data-loss-acknowledged": "1750000000000"}}});
    w.apps()
        .patch("greeter", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    w.reconcile().await;
    let app = w.get().await;
    assert_eq!(World::condition(&app, "Degraded").0, "False");
    assert_eq!(app.status.unwrap().data_loss.unwrap().lost_to, 8);
}

#[tokio::test]
async fn the_status_carries_what_the_scale_subresource_reads() {
    let w = ready().await;
    w.worker.set_completed(1);
    w.reconcile().await;
    let status = w.get().await.status.unwrap();
    assert_eq!((status.workers, status.replicas), (3, 3));
    assert_eq!(
        status.selector,
        "app.kubernetes.io/component=worker,app.kubernetes.io/instance=greeter,app.kubernetes.io/name=spindle"
    );
    // `kubectl scale --replicas 2` writes spec.workers: a rescale begins; until it is done the
    // current replicas stay 3.
    w.edit(|a| a.spec.workers = 2).await;
    w.reconcile().await;
    let status = w.get().await.status.unwrap();
    assert_eq!((status.workers, status.replicas), (2, 3));
    assert!(status.rescale.is_some());
}
