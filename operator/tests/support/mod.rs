//! The reconcile tests' world: the operator's real reconcile function against an in-memory
//! Kubernetes API (`kube-fake-client`: CRUD, server-side apply, status subresources,
//! conflicts; no watches, no controllers, no garbage collector beyond owner-reference
//! cascades), and worker 0's `/status` served over real HTTP on a loopback port. What
//! Kubernetes' own controllers would do (pods becoming ready) the tests do by writing status.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, Client};
use kube_fake_client::ClientBuilder;
use serde_json::json;
use spindle_operator::builders::OperatorConfig;
use spindle_operator::context::Context;
use spindle_operator::controller;
use spindle_operator::metrics::Metrics;
use spindle_operator::resource::StatefulApplication;
use spindle_operator::worker_admin::WorkerAdmin;

pub const NS: &str = "apps";

pub const APP: &str = r#"
apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata:
  name: greeter
  namespace: apps
spec:
  workers: 3
  functions:
    - typename: example/*
      endpoint: http://greeter-functions:8000/statefun
      image: spindle/example-greeter:0.1.0
    - typename: other/*
      endpoint: http://other:8000/statefun
      image: spindle/other:1.0.0
  ingresses:
    - name: web
      http: {port: 8090}
  egresses:
    - typename: example/greets
      http: {url: "http://sink:9000/"}
"#;

pub fn app_from(yaml: &str) -> StatefulApplication {
    serde_yaml::from_str(yaml).expect("a StatefulApplication")
}

/// Savepoint names asked for, with the `Authorization` header of each request.
pub type Asked = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// Worker 0's admin endpoint: `/status` with a checkpoint number the test sets, and any
/// other fields the test adds (`set_fields`), as the worker reports them.
pub struct FakeWorker {
    pub completed: Arc<AtomicU64>,
    pub fields: Arc<Mutex<serde_json::Map<String, serde_json::Value>>>,
    pub url: String,
    /// `POST /savepoints/{name}` requests, with their `Authorization` header; each answered
    /// with the completed checkpoint, 409 for a name asked before.
    pub savepoints: Asked,
}

impl FakeWorker {
    pub async fn start() -> FakeWorker {
        let completed = Arc::new(AtomicU64::new(0));
        let fields = Arc::new(Mutex::new(serde_json::Map::new()));
        let (c, f) = (completed.clone(), fields.clone());
        let savepoints: Asked = Arc::default();
        let (c2, sp) = (completed.clone(), savepoints.clone());
        let routes = axum::Router::new().route(
            "/savepoints/{name}",
            axum::routing::post(
                move |axum::extract::Path(name): axum::extract::Path<String>, headers: axum::http::HeaderMap| {
                    let (c, sp) = (c2.clone(), sp.clone());
                    async move {
                        use axum::response::IntoResponse;
                        let auth = headers.get("authorization").map(|v| v.to_str().unwrap().to_string());
                        let mut asked = sp.lock().unwrap();
                        let repeated = asked.iter().any(|(n, _)| *n == name);
                        asked.push((name.clone(), auth));
                        if repeated {
                            return (
                                axum::http::StatusCode::CONFLICT,
                                format!("savepoint `{name}` exists already"),
                            )
                                .into_response();
                        }
                        if name.starts_with("slow") {
                            // Taken, but the answer comes too late for the caller.
                            return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "no answer in time").into_response();
                        }
                        axum::Json(json!({"name": name, "checkpoint": c.load(Ordering::SeqCst), "createdAtMs": 1}))
                            .into_response()
                    }
                },
            ),
        );
        let sp = savepoints.clone();
        let c3 = completed.clone();
        let routes = routes.route(
            "/savepoints/{name}",
            axum::routing::get(move |axum::extract::Path(name): axum::extract::Path<String>| {
                let (sp, c) = (sp.clone(), c3.clone());
                async move {
                    use axum::response::IntoResponse;
                    if sp.lock().unwrap().iter().any(|(n, _)| *n == name) {
                        axum::Json(json!({"name": name, "checkpoint": c.load(Ordering::SeqCst), "createdAtMs": 1}))
                            .into_response()
                    } else {
                        (axum::http::StatusCode::NOT_FOUND, "no savepoint").into_response()
                    }
                }
            }),
        );
        let routes = routes.route(
            "/status",
            axum::routing::get(move || {
                let (c, f) = (c.clone(), f.clone());
                async move {
                    let mut status =
                        json!({"generation": 1, "completedCheckpoint": c.load(Ordering::SeqCst), "idle": true});
                    for (k, v) in f.lock().unwrap().iter() {
                        status[k] = v.clone();
                    }
                    axum::Json(status)
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, routes).await.unwrap() });
        eprintln!("started: a stand-in for worker 0's admin endpoint at {url}/status");
        FakeWorker {
            completed,
            fields,
            url,
            savepoints,
        }
    }

    pub fn set_completed(&self, n: u64) {
        self.completed.store(n, Ordering::SeqCst);
    }

    /// Sets fields of `/status` (e.g. `rollbacks`, `incarnation`, `dataLoss`).
    pub fn set_fields(&self, fields: serde_json::Value) {
        let mut f = self.fields.lock().unwrap();
        for (k, v) in fields.as_object().expect("an object") {
            f.insert(k.clone(), v.clone());
        }
    }
}

pub struct World {
    pub client: Client,
    pub ctx: Arc<Context>,
    pub worker: FakeWorker,
    pub config: OperatorConfig,
}

async fn fake_api(objects: Vec<serde_json::Value>) -> Client {
    ClientBuilder::new()
        .with_resource::<StatefulApplication>()
        .with_status_subresource::<StatefulApplication>()
        .with_status_subresource::<StatefulSet>()
        .with_status_subresource::<Deployment>()
        .with_status_subresource::<Job>()
        .with_runtime_objects(objects)
        .build()
        .await
        .expect("the in-memory API")
}

impl World {
    pub async fn new(config: OperatorConfig) -> World {
        let worker = FakeWorker::start().await;
        let client = fake_api(Vec::new()).await;
        let ctx = context(&client, &config, &worker);
        World {
            client,
            ctx,
            worker,
            config,
        }
    }

    pub fn apps(&self) -> Api<StatefulApplication> {
        Api::namespaced(self.client.clone(), NS)
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), NS)
    }

    pub async fn create(&self, app: &StatefulApplication) -> StatefulApplication {
        self.apps().create(&PostParams::default(), app).await.expect("created")
    }

    pub async fn get(&self) -> StatefulApplication {
        self.apps().get("greeter").await.expect("the application")
    }

    /// The application `name` in `namespace`, created and reconciled once.
    pub async fn create_in(&self, namespace: &str, yaml: &str) -> StatefulApplication {
        let mut app = app_from(yaml);
        app.metadata.namespace = Some(namespace.into());
        let api: Api<StatefulApplication> = Api::namespaced(self.client.clone(), namespace);
        let created = api.create(&PostParams::default(), &app).await.expect("created");
        controller::reconcile(Arc::new(created), self.ctx.clone())
            .await
            .expect("reconciled");
        api.get(app.metadata.name.as_deref().unwrap()).await.unwrap()
    }

    /// One reconciliation of the application as it is stored now (what the controller does
    /// on every change it is told about).
    pub async fn reconcile(&self) -> Action {
        let app = self.get().await;
        controller::reconcile(Arc::new(app), self.ctx.clone())
            .await
            .expect("reconciled")
    }

    /// Changes the spec as `kubectl apply` would (a new generation).
    pub async fn edit(&self, f: impl FnOnce(&mut StatefulApplication)) {
        let mut app = self.get().await;
        f(&mut app);
        self.apps()
            .replace("greeter", &PostParams::default(), &app)
            .await
            .expect("replaced");
    }

    pub fn condition(app: &StatefulApplication, type_: &str) -> (String, String, String) {
        let c = app
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
            .unwrap_or_else(|| panic!("no {type_} condition"));
        (c.status.clone(), c.reason.clone(), c.message.clone())
    }

    /// What the StatefulSet controller and the kubelet would report.
    pub async fn set_workers(&self, pods: i32, ready: i32) {
        let sts: Api<StatefulSet> = self.api();
        let current = sts.get("greeter-worker").await.unwrap();
        let status = json!({"status": {
            "replicas": pods,
            "readyReplicas": ready,
            "updatedReplicas": pods,
            "observedGeneration": current.metadata.generation,
            "currentRevision": "r1",
            "updateRevision": "r1",
        }});
        sts.patch_status("greeter-worker", &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
    }

    /// What the Deployment controller would report once a function's pod is available.
    pub async fn set_functions_available(&self) {
        let deployments: Api<Deployment> = self.api();
        for d in deployments.list(&ListParams::default()).await.unwrap() {
            let name = d.metadata.name.clone().unwrap();
            let status = json!({"status": {"replicas": 1, "availableReplicas": 1, "updatedReplicas": 1, "observedGeneration": d.metadata.generation}});
            deployments
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await
                .unwrap();
        }
    }

    pub async fn event_reasons(&self) -> Vec<String> {
        let events: Api<Event> = self.api();
        let mut list = events.list(&ListParams::default()).await.unwrap().items;
        list.sort_by_key(|e| e.event_time.clone().map(|t| t.0));
        list.into_iter().filter_map(|e| e.reason).collect()
    }

    /// `kubectl delete`: the in-memory API deletes at once, ignoring finalizers, so the
    /// deletion is simulated as the API server does it: the same objects, the application
    /// with a deletionTimestamp (kept while a finalizer is on it).
    pub async fn kubectl_delete(&mut self) {
        let mut objects = Vec::new();
        async fn all<K>(client: &Client, out: &mut Vec<serde_json::Value>)
        where
            K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
                + Clone
                + std::fmt::Debug
                + serde::de::DeserializeOwned
                + serde::Serialize,
        {
            let api: Api<K> = Api::namespaced(client.clone(), NS);
            for o in api.list(&ListParams::default()).await.unwrap() {
                out.push(serde_json::to_value(o).unwrap());
            }
        }
        all::<StatefulSet>(&self.client, &mut objects).await;
        all::<Deployment>(&self.client, &mut objects).await;
        all::<Service>(&self.client, &mut objects).await;
        all::<ConfigMap>(&self.client, &mut objects).await;
        all::<PodDisruptionBudget>(&self.client, &mut objects).await;
        all::<Job>(&self.client, &mut objects).await;
        all::<Event>(&self.client, &mut objects).await;
        all::<Lease>(&self.client, &mut objects).await;
        let mut app = self.get().await;
        app.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        objects.push(serde_json::to_value(app).unwrap());
        self.client = fake_api(objects).await;
        self.ctx = context(&self.client, &self.config, &self.worker);
    }

    pub async fn exists(&self) -> bool {
        self.apps().get_opt("greeter").await.unwrap().is_some()
    }
}

fn context(client: &Client, config: &OperatorConfig, worker: &FakeWorker) -> Arc<Context> {
    Arc::new(Context::new(
        client.clone(),
        Arc::new(Metrics::default()),
        config.clone(),
        WorkerAdmin::new(worker.url.clone()),
        Some("test".into()),
    ))
}
