//! The operator's reconcile function against an in-memory Kubernetes API: create, update,
//! image change, invalid spec, and pruning. Scale and delete are in `rescale.rs` and
//! `delete.rs`.

mod support;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::ListParams;
use spindle_operator::builders::{CONFIG_HASH_ANNOTATION, OperatorConfig};
use spindle_operator::controller::FINALIZER;
use support::{APP, World, app_from};

#[tokio::test]
async fn create_makes_every_object_and_reports_readiness() {
    let w = World::new(OperatorConfig::default()).await;
    w.create(&app_from(APP)).await;
    w.reconcile().await;

    let app = w.get().await;
    assert!(
        app.metadata
            .finalizers
            .as_ref()
            .unwrap()
            .contains(&FINALIZER.to_string())
    );
    let uid = app.metadata.uid.clone().unwrap();
    let sts = w
        .api::<StatefulSet>()
        .get("greeter-worker")
        .await
        .expect("the workers' StatefulSet");
    assert_eq!(sts.spec.as_ref().unwrap().replicas, Some(3));
    let owner = &sts.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("StatefulApplication", uid.as_str(), Some(true))
    );
    let cm = w.api::<ConfigMap>().get("greeter-config").await.expect("the ConfigMap");
    assert!(cm.data.unwrap()["app.yaml"].contains("endpoint: http://greeter-fn-0:8000/statefun"));
    for name in ["greeter-workers", "greeter-ingress", "greeter-fn-0", "greeter-fn-1"] {
        w.api::<Service>()
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("Service {name}: {e}"));
    }
    for name in ["greeter-fn-0", "greeter-fn-1"] {
        w.api::<Deployment>()
            .get(name)
            .await
            .unwrap_or_else(|e| panic!("Deployment {name}: {e}"));
    }
    w.api::<PodDisruptionBudget>()
        .get("greeter-worker")
        .await
        .expect("the PodDisruptionBudget");

    let status = app.status.clone().expect("a status");
    assert_eq!(status.observed_generation, app.metadata.generation);
    assert_eq!(
        (status.workers, status.ready_workers, status.worker_summary.as_str()),
        (3, 0, "0/3")
    );
    assert_eq!(World::condition(&app, "Ready").0, "False");
    assert_eq!(World::condition(&app, "Progressing").1, "RollingOut");
    assert_eq!(World::condition(&app, "Degraded").0, "False");
    let degraded_since = app.status.as_ref().unwrap().conditions[2].last_transition_time.clone();

    // The pods come up; worker 0 has completed checkpoint 4.
    w.set_workers(3, 3).await;
    w.set_functions_available().await;
    w.worker.set_completed(4);
    w.reconcile().await;
    let app = w.get().await;
    let status = app.status.clone().unwrap();
    assert_eq!(
        World::condition(&app, "Ready"),
        (
            "True".into(),
            "AllReady".into(),
            "3/3 workers ready, functions available".into()
        )
    );
    assert_eq!(World::condition(&app, "Progressing").0, "False");
    assert_eq!(
        (status.worker_summary.as_str(), status.last_checkpoint),
        ("3/3", Some(4))
    );
    assert_eq!(
        status.conditions[2].last_transition_time, degraded_since,
        "an unchanged condition keeps its time"
    );

    let reasons = w.event_reasons().await;
    assert!(reasons.contains(&"Applied".to_string()), "{reasons:?}");
    assert!(reasons.contains(&"Ready".to_string()), "{reasons:?}");
    assert!(
        reasons.contains(&"PodLocalCheckpoints".to_string()),
        "no shared storage is said: {reasons:?}"
    );
}

fn template(d: &Deployment) -> serde_json::Value {
    serde_json::to_value(&d.spec.as_ref().unwrap().template).unwrap()
}

fn sts_template(s: &StatefulSet) -> serde_json::Value {
    serde_json::to_value(&s.spec.as_ref().unwrap().template).unwrap()
}

#[tokio::test]
async fn an_image_change_rolls_only_that_function() {
    let w = World::new(OperatorConfig::default()).await;
    w.create(&app_from(APP)).await;
    w.reconcile().await;
    let fn0 = w.api::<Deployment>().get("greeter-fn-0").await.unwrap();
    let fn1 = w.api::<Deployment>().get("greeter-fn-1").await.unwrap();
    let sts = w.api::<StatefulSet>().get("greeter-worker").await.unwrap();

    w.edit(|a| a.spec.functions[1].image = Some("spindle/other:2.0.0".into()))
        .await;
    w.reconcile().await;
    let fn0_after = w.api::<Deployment>().get("greeter-fn-0").await.unwrap();
    let fn1_after = w.api::<Deployment>().get("greeter-fn-1").await.unwrap();
    let sts_after = w.api::<StatefulSet>().get("greeter-worker").await.unwrap();
    let image = |d: &Deployment| {
        d.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0]
            .image
            .clone()
    };
    assert_eq!(image(&fn1_after).as_deref(), Some("spindle/other:2.0.0"));
    assert_ne!(template(&fn1), template(&fn1_after));
    assert_eq!(
        template(&fn0),
        template(&fn0_after),
        "the other function's pods are not touched"
    );
    assert_eq!(
        sts_template(&sts),
        sts_template(&sts_after),
        "the workers are not restarted"
    );
    let app = w.get().await;
    assert_eq!(app.status.unwrap().observed_generation, app.metadata.generation);
}

#[tokio::test]
async fn a_config_change_restarts_the_workers_and_removed_functions_are_pruned() {
    let w = World::new(OperatorConfig::default()).await;
    w.create(&app_from(APP)).await;
    w.reconcile().await;
    let before = w.api::<StatefulSet>().get("greeter-worker").await.unwrap();
    let hash = |s: &StatefulSet| {
        s.spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .annotations
            .as_ref()
            .unwrap()[CONFIG_HASH_ANNOTATION]
            .clone()
    };

    // The second function is now served from elsewhere: no image, another endpoint.
    w.edit(|a| {
        a.spec.functions[1].image = None;
        a.spec.functions[1].endpoint = "https://fns.example.com/other".into();
    })
    .await;
    w.reconcile().await;
    let after = w.api::<StatefulSet>().get("greeter-worker").await.unwrap();
    assert_ne!(
        hash(&before),
        hash(&after),
        "the workers get the new endpoint by a restart"
    );
    let cm = w.api::<ConfigMap>().get("greeter-config").await.unwrap();
    assert!(cm.data.unwrap()["app.yaml"].contains("endpoint: https://fns.example.com/other"));
    let deployments: Vec<String> = w
        .api::<Deployment>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .into_iter()
        .filter_map(|d| d.metadata.name)
        .collect();
    assert_eq!(
        deployments,
        ["greeter-fn-0"],
        "the function without an image lost its Deployment"
    );
    assert!(
        w.api::<Service>().get_opt("greeter-fn-1").await.unwrap().is_none(),
        "and its Service"
    );
    let reasons = w.event_reasons().await;
    assert!(reasons.contains(&"RestartingWorkers".to_string()), "{reasons:?}");
}

#[tokio::test]
async fn an_invalid_spec_is_degraded_naming_the_field_and_changes_nothing() {
    let w = World::new(OperatorConfig::default()).await;
    let bad = APP.replace("endpoint: http://other:8000/statefun", "endpoint: other:8000/statefun");
    w.create(&app_from(&bad)).await;
    w.reconcile().await;
    let app = w.get().await;
    let (status, reason, message) = World::condition(&app, "Degraded");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "InvalidSpec"));
    assert!(
        message.contains("spec.functions[1].endpoint: `other:8000/statefun` is not an absolute URL"),
        "{message}"
    );
    assert_eq!(World::condition(&app, "Ready").0, "False");
    assert!(
        w.api::<StatefulSet>()
            .get_opt("greeter-worker")
            .await
            .unwrap()
            .is_none(),
        "nothing is applied"
    );
    assert!(w.event_reasons().await.contains(&"InvalidSpec".to_string()));

    // Fixed: applied, and no longer degraded.
    w.edit(|a| a.spec.functions[1].endpoint = "http://other:8000/statefun".into())
        .await;
    w.reconcile().await;
    let app = w.get().await;
    assert_eq!(World::condition(&app, "Degraded").0, "False");
    assert!(
        w.api::<StatefulSet>()
            .get_opt("greeter-worker")
            .await
            .unwrap()
            .is_some()
    );
}
