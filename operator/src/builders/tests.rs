use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

const APP: &str = r#"
apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata:
  name: greeter
  namespace: apps
  labels: {team: fns}
spec:
  workers: 3
  functions:
    - typename: example/*
      endpoint: http://greeter-functions:8000/statefun
      image: spindle/example-greeter:0.1.0
      port: 8000
      local: {command: ["cargo", "run"]}
    - typename: other/*
      endpoint: https://fns.example.com/other/{function.name}
  ingresses:
    - name: web
      http: {port: 8090}
  egresses:
    - typename: example/greets
      http: {url: "http://sink:9000/"}
"#;

fn app() -> StatefulApplication {
    spindle_spec::from_yaml_str(APP, "test").unwrap()
}

fn owner() -> OwnerReference {
    owner_reference(&app(), "0b5e8a3c-1111-2222-3333-444455556666")
}

/// Every object the operator creates for `app`.
fn all_objects(app: &StatefulApplication) -> Vec<serde_json::Value> {
    let o = owner();
    let config = OperatorConfig::default();
    let mut v = vec![
        serde_json::to_value(config_map(app, &config, &o)).unwrap(),
        serde_json::to_value(peer_service(app, &o)).unwrap(),
        serde_json::to_value(worker_statefulset(app, &config, &o)).unwrap(),
        serde_json::to_value(pod_disruption_budget(app, &o)).unwrap(),
    ];
    v.extend(ingress_service(app, &o).map(|s| serde_json::to_value(s).unwrap()));
    for i in 0..app.spec.functions.len() {
        v.extend(function_deployment(app, i, &o).map(|d| serde_json::to_value(d).unwrap()));
        v.extend(function_service(app, i, &o).map(|s| serde_json::to_value(s).unwrap()));
    }
    v.push(serde_json::to_value(cleanup_job(app, &config)).unwrap());
    v
}

#[test]
fn the_statefulset_carries_the_worker_contract() {
    let sts = worker_statefulset(&app(), &OperatorConfig::default(), &owner());
    let spec = sts.spec.unwrap();
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(spec.service_name.as_deref(), Some("greeter-workers"));
    let pod = spec.template.spec.unwrap();
    let c = &pod.containers[0];
    assert_eq!(c.args.as_deref().unwrap(), ["worker", "/etc/spindle/app.yaml"]);
    let env: Vec<(&str, Option<&str>)> = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| (e.name.as_str(), e.value.as_deref()))
        .collect();
    for want in [
        ("POD_NAME", None),
        ("POD_NAMESPACE", None),
        ("SPINDLE_STATEFULSET", Some("greeter-worker")),
        ("SPINDLE_PEER_SERVICE", Some("greeter-workers")),
        ("SPINDLE_PEER_PORT", Some("9091")),
    ] {
        assert!(env.contains(&want), "{want:?} in {env:?}");
    }
    let ports: Vec<(&str, i32)> = c
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| (p.name.as_deref().unwrap(), p.container_port))
        .collect();
    assert_eq!(ports, [("admin", 9090), ("peer", 9091), ("ingress", 8090)]);
    assert_eq!(
        c.readiness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/readyz")
    );
    assert_eq!(
        c.liveness_probe
            .as_ref()
            .unwrap()
            .http_get
            .as_ref()
            .unwrap()
            .path
            .as_deref(),
        Some("/healthz")
    );
    let meta = sts.metadata;
    assert_eq!(meta.namespace.as_deref(), Some("apps"));
    assert_eq!(meta.labels.unwrap()["team"], "fns");
    assert_eq!(meta.owner_references.unwrap()[0].kind, "StatefulApplication");
}

#[test]
fn the_config_map_points_functions_at_their_services() {
    let cm = config_map(&app(), &OperatorConfig::default(), &owner());
    let yaml = &cm.data.unwrap()["app.yaml"];
    let resolved = spindle_spec::from_yaml_str(yaml, "config map").expect("the workers can load it");
    assert_eq!(resolved.spec.functions[0].endpoint, "http://greeter-fn-0:8000/statefun");
    assert_eq!(
        resolved.spec.functions[0].local, None,
        "local commands mean nothing in a pod"
    );
    assert_eq!(
        resolved.spec.functions[0].image, None,
        "images are the Deployments' business"
    );
    assert_eq!(
        resolved.spec.functions[1].endpoint,
        "https://fns.example.com/other/{function.name}"
    );
    assert!(resolved.metadata.labels.is_empty(), "labels do not restart workers");
    assert_eq!(
        resolved.spec.checkpoint.storage.as_deref(),
        Some("file:///var/lib/spindle/checkpoints")
    );
}

fn config_hash(app: &StatefulApplication) -> String {
    let sts = worker_statefulset(app, &OperatorConfig::default(), &owner());
    sts.spec.unwrap().template.metadata.unwrap().annotations.unwrap()[CONFIG_HASH_ANNOTATION].clone()
}

/// Workers read their configuration once: the pod template carries its hash, so a change
/// that matters to them restarts them, and one that does not (an image) leaves them alone.
#[test]
fn only_changes_the_workers_see_restart_them() {
    let base = app();
    let mut image = base.clone();
    image.spec.functions[0].image = Some("spindle/example-greeter:0.2.0".into());
    assert_eq!(config_hash(&base), config_hash(&image));
    let mut label = base.clone();
    label.metadata.labels.insert("release".into(), "2".into());
    assert_eq!(config_hash(&base), config_hash(&label));
    let mut endpoint = base.clone();
    endpoint.spec.functions[1].endpoint = "https://fns2.example.com/other".into();
    assert_ne!(config_hash(&base), config_hash(&endpoint));
    let mut workers = base.clone();
    workers.spec.workers = 2;
    assert_ne!(config_hash(&base), config_hash(&workers));
    let sts = worker_statefulset(&workers, &OperatorConfig::default(), &owner());
    assert_eq!(sts.metadata.annotations.unwrap()[WORKERS_ANNOTATION], "2");
}

#[test]
fn checkpoint_storage_and_credentials_in_a_cluster() {
    let mut app = app();
    let config = OperatorConfig::default();
    assert!(matches!(checkpoint_storage(&app, &config), Storage::PodLocal(_)));
    // A relative path is for local runs: the operator's default applies.
    app.spec.checkpoint.storage = Some(".spindle/checkpoints".into());
    let with_default = OperatorConfig {
        default_storage: Some("s3://shared/spindle".into()),
        default_credentials_secret: Some("s3-default".into()),
        ..OperatorConfig::default()
    };
    assert_eq!(
        checkpoint_storage(&app, &with_default),
        Storage::Shared("s3://shared/spindle".into())
    );
    assert_eq!(credentials_secret(&app, &with_default).as_deref(), Some("s3-default"));
    app.spec.checkpoint.storage = Some("s3://mine/prefix".into());
    app.spec.checkpoint.credentials_secret = Some("s3-mine".into());
    assert_eq!(
        checkpoint_storage(&app, &with_default),
        Storage::Shared("s3://mine/prefix".into())
    );
    let sts = worker_statefulset(&app, &with_default, &owner());
    let c = &sts.spec.unwrap().template.spec.unwrap().containers[0];
    let from = c.env_from.as_ref().unwrap()[0].secret_ref.as_ref().unwrap();
    assert_eq!(from.name, "s3-mine");
    assert_eq!(
        c.resources.as_ref().unwrap().limits.as_ref().unwrap()["memory"].0,
        "1Gi"
    );
    let cm = config_map(&app, &with_default, &owner());
    assert!(cm.data.unwrap()["app.yaml"].contains("storage: s3://mine/prefix"));
}

#[test]
fn the_cleanup_job_deletes_exactly_this_application() {
    let mut app = app();
    app.spec.checkpoint.storage = Some("s3://mine/prefix".into());
    app.spec.checkpoint.credentials_secret = Some("s3-mine".into());
    let job = cleanup_job(&app, &OperatorConfig::default());
    assert_eq!(job.metadata.name.as_deref(), Some("greeter-delete-checkpoints"));
    assert!(
        job.metadata.owner_references.is_none(),
        "it must outlive a foreground deletion"
    );
    let pod = job.spec.unwrap().template.spec.unwrap();
    let c = &pod.containers[0];
    assert_eq!(
        c.args.as_deref().unwrap(),
        [
            "checkpoints",
            "delete",
            "--storage",
            "s3://mine/prefix",
            "--application",
            "greeter"
        ]
    );
    assert_eq!(
        c.env_from.as_ref().unwrap()[0].secret_ref.as_ref().unwrap().name,
        "s3-mine"
    );
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
}

#[test]
fn the_peer_service_exposes_admin_for_the_operator() {
    let svc = peer_service(&app(), &owner());
    let ports: Vec<_> = svc
        .spec
        .unwrap()
        .ports
        .unwrap()
        .into_iter()
        .map(|p| (p.name.unwrap(), p.port))
        .collect();
    assert_eq!(ports, [("peer".to_string(), 9091), ("admin".to_string(), 9090)]);
}

#[test]
fn only_functions_with_images_get_deployments() {
    let (app, o) = (app(), owner());
    let d = function_deployment(&app, 0, &o).unwrap();
    assert_eq!(d.metadata.name.as_deref(), Some("greeter-fn-0"));
    let pod = d.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some("spindle/example-greeter:0.1.0")
    );
    assert!(function_deployment(&app, 1, &o).is_none());
    assert!(function_service(&app, 1, &o).is_none());
    let svc = function_service(&app, 0, &o).unwrap();
    assert_eq!(svc.spec.unwrap().ports.unwrap()[0].port, 8000);
}

fn venv() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let venv = std::env::var_os("SPINDLE_PY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/py-venv"));
    let status = Command::new("bash")
        .arg(root.join("e2e/python/setup-venv.sh"))
        .arg(&venv)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cannot create the Python venv with kubernetes-validate"
    );
    venv
}

/// Every generated object against the real Kubernetes OpenAPI schemas, strictly (unknown
/// fields are errors), for 1.30 and the newest version kubernetes-validate ships.
#[test]
fn every_object_is_valid_for_kubernetes() {
    let objects = all_objects(&app());
    assert_eq!(objects.len(), 8);
    let dir = std::env::temp_dir().join(format!("spindle-manifests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    for (i, o) in objects.iter().enumerate() {
        let path = dir.join(format!("{i}-{}.yaml", o["kind"].as_str().unwrap()));
        std::fs::write(&path, serde_yaml::to_string(o).unwrap()).unwrap();
        files.push(path);
    }
    let validate = venv().join("bin/kubernetes-validate");
    for version in ["1.30.0", "1.37.0"] {
        let out = Command::new(&validate)
            .args(["--strict", "--quiet", "-k", version])
            .args(&files)
            .output()
            .unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "Kubernetes {version}:\n{report}");
        eprintln!(
            "kubernetes-validate --strict -k {version}: {} objects valid",
            files.len()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
