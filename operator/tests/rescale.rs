//! A change of `spec.workers` against the in-memory API: wait for a fresh checkpoint, stop
//! the workers at the old count, start the new count (which restores that checkpoint).

mod support;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ConfigMap;
use spindle_operator::builders::{OperatorConfig, WORKERS_ANNOTATION};
use support::{APP, World, app_from};

async fn workers(w: &World) -> (i32, String, String) {
    let sts = w.api::<StatefulSet>().get("greeter-worker").await.unwrap();
    let cm = w.api::<ConfigMap>().get("greeter-config").await.unwrap();
    let yaml = cm.data.unwrap()["app.yaml"].clone();
    let in_config = yaml
        .lines()
        .find(|l| l.trim_start().starts_with("workers:"))
        .unwrap()
        .trim()
        .to_string();
    (
        sts.spec.unwrap().replicas.unwrap(),
        sts.metadata.annotations.unwrap()[WORKERS_ANNOTATION].clone(),
        in_config,
    )
}

#[tokio::test]
async fn scaling_goes_through_a_checkpoint_and_a_restart_at_the_new_count() {
    let w = World::new(OperatorConfig::default()).await;
    w.create(&app_from(APP)).await;
    w.reconcile().await;
    w.set_workers(3, 3).await;
    w.set_functions_available().await;
    w.worker.set_completed(5);
    w.reconcile().await;

    w.edit(|a| a.spec.workers = 2).await;
    w.reconcile().await;
    let app = w.get().await;
    let rescale = app
        .status
        .as_ref()
        .unwrap()
        .rescale
        .clone()
        .expect("a rescale under way");
    assert_eq!((rescale.from, rescale.to, rescale.after_checkpoint), (3, 2, Some(5)));
    assert_eq!(World::condition(&app, "Progressing").1, "WaitingForCheckpoint");
    assert_eq!(World::condition(&app, "Ready").1, "Rescaling");
    assert_eq!(
        workers(&w).await,
        (3, "3".into(), "workers: 3".into()),
        "nothing stops before the checkpoint"
    );

    // Checkpoint 5 completed before the change: not enough.
    w.reconcile().await;
    assert_eq!(workers(&w).await.0, 3);

    w.worker.set_completed(6);
    w.reconcile().await;
    let app = w.get().await;
    assert_eq!(
        app.status.as_ref().unwrap().rescale.as_ref().unwrap().checkpoint,
        Some(6)
    );
    assert_eq!(World::condition(&app, "Progressing").1, "StoppingWorkers");
    assert_eq!(
        workers(&w).await,
        (0, "3".into(), "workers: 3".into()),
        "stopping, still configured for 3"
    );

    // Pods are terminating: wait.
    w.reconcile().await;
    assert_eq!(workers(&w).await.0, 0);

    w.set_workers(0, 0).await;
    w.reconcile().await;
    assert_eq!(
        workers(&w).await,
        (2, "2".into(), "workers: 2".into()),
        "started at the new count"
    );
    let app = w.get().await;
    assert_eq!(World::condition(&app, "Progressing").1, "StartingWorkers");

    w.set_workers(2, 2).await;
    w.worker.set_completed(7);
    w.reconcile().await;
    let app = w.get().await;
    let status = app.status.clone().unwrap();
    assert_eq!(World::condition(&app, "Ready").0, "True");
    assert_eq!(
        (status.worker_summary.as_str(), status.rescale, status.last_checkpoint),
        ("2/2", None, Some(7))
    );
    let reasons = w.event_reasons().await;
    for want in ["RescaleStarted", "StoppingWorkers", "StartingWorkers"] {
        assert!(reasons.contains(&want.to_string()), "{want} in {reasons:?}");
    }
    assert!(w.ctx.metrics.encode().contains("spindle_operator_rescales_total 1"));
}

#[tokio::test]
async fn with_no_worker_ready_there_is_nothing_to_checkpoint() {
    let w = World::new(OperatorConfig::default()).await;
    w.create(&app_from(APP)).await;
    w.reconcile().await;
    w.set_workers(3, 0).await;
    w.edit(|a| a.spec.workers = 4).await;
    w.reconcile().await;
    assert_eq!(workers(&w).await.0, 0, "stopped at once");
    let reasons = w.event_reasons().await;
    assert!(reasons.contains(&"StoppingWorkers".to_string()), "{reasons:?}");
    w.set_workers(0, 0).await;
    w.reconcile().await;
    assert_eq!(workers(&w).await, (4, "4".into(), "workers: 4".into()));
}

#[tokio::test]
async fn changing_back_while_stopped_starts_the_old_count_again() {
    let w = World::new(OperatorConfig::default()).await;
    w.create(&app_from(APP)).await;
    w.reconcile().await;
    w.set_workers(3, 0).await;
    w.edit(|a| a.spec.workers = 2).await;
    w.reconcile().await;
    assert_eq!(workers(&w).await.0, 0, "stopping");
    w.edit(|a| a.spec.workers = 3).await;
    w.set_workers(0, 0).await;
    w.reconcile().await;
    assert_eq!(
        workers(&w).await,
        (3, "3".into(), "workers: 3".into()),
        "running at 3 again"
    );
}
