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
    owner_reference(&app(), UID)
}

const UID: &str = "0b5e8a3c-1111-2222-3333-444455556666";

/// The operator's configuration in a cluster: its namespace and labels, a monitoring selector.
fn cluster_config() -> OperatorConfig {
    OperatorConfig {
        network: NetworkConfig {
            operator_namespace: Some("spindle-system".into()),
            operator_pod_labels: BTreeMap::from([("app.kubernetes.io/name".into(), "spindle-operator".into())]),
            monitoring: Some(spindle_spec::NetworkPeer {
                namespace_selector: Some(BTreeMap::from([(
                    "kubernetes.io/metadata.name".into(),
                    "monitoring".into(),
                )])),
                pod_selector: Some(BTreeMap::from([("app.kubernetes.io/name".into(), "prometheus".into())])),
                cidr: None,
            }),
        },
        ..OperatorConfig::default()
    }
}

/// Certificates for `app`'s workers, as the operator issues them on first apply.
fn tls_material(app: &StatefulApplication) -> crate::tls::Material {
    let mut m = crate::tls::Material::default();
    let plan = crate::tls::plan(&m, app.spec.workers, 1_800_000_000, true);
    m.apply(&plan, &tls_identity(app), 1_800_000_000).unwrap();
    m
}

fn statefulset(app: &StatefulApplication, config: &OperatorConfig) -> k8s_openapi::api::apps::v1::StatefulSet {
    let (_, hash) = tls_secret(app, &owner(), &tls_material(app));
    worker_statefulset(app, config, &owner(), Some(&hash))
}

/// Every object the operator creates for `app`.
fn all_objects(app: &StatefulApplication) -> Vec<serde_json::Value> {
    let o = owner();
    let config = cluster_config();
    let (secret, _) = tls_secret(app, &o, &tls_material(app));
    let mut v = vec![
        serde_json::to_value(config_map(app, &config, &o)).unwrap(),
        serde_json::to_value(peer_service(app, &o)).unwrap(),
        serde_json::to_value(statefulset(app, &config)).unwrap(),
        serde_json::to_value(pod_disruption_budget(app, &o)).unwrap(),
        serde_json::to_value(secret).unwrap(),
    ];
    v.extend(ingress_service(app, &o).map(|s| serde_json::to_value(s).unwrap()));
    v.extend(worker_network_policy(app, &config.network, &o).map(|p| serde_json::to_value(p).unwrap()));
    v.extend(function_network_policy(app, &o).map(|p| serde_json::to_value(p).unwrap()));
    for i in 0..app.spec.functions.len() {
        v.extend(function_deployment(app, i, &config, &o).map(|d| serde_json::to_value(d).unwrap()));
        v.extend(function_service(app, i, &o).map(|s| serde_json::to_value(s).unwrap()));
    }
    v.push(serde_json::to_value(cleanup_job(app, &config, UID)).unwrap());
    v
}

/// The pod specs among `objects` (StatefulSet, Deployments, Job), by kind and name.
fn pods(objects: &[serde_json::Value]) -> Vec<(String, k8s_openapi::api::core::v1::PodSpec)> {
    objects
        .iter()
        .filter(|o| o["spec"]["template"]["spec"].is_object())
        .map(|o| {
            (
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap(),
                    o["metadata"]["name"].as_str().unwrap()
                ),
                serde_json::from_value(o["spec"]["template"]["spec"].clone()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn the_statefulset_carries_the_worker_contract() {
    let sts = statefulset(&app(), &OperatorConfig::default());
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
        ("SPINDLE_APPLICATION_UID", Some(UID)),
        ("SPINDLE_TLS_DIR", Some("/etc/spindle/tls")),
        // Default interval 1s: grace max(30, 10 + 3) = 30 s, stop within 25 s.
        ("SPINDLE_STOP_TIMEOUT", Some("25s")),
    ] {
        assert!(env.contains(&want), "{want:?} in {env:?}");
    }
    assert_eq!(pod.termination_grace_period_seconds, Some(30));
    assert_eq!(pod.automount_service_account_token, Some(false));
    // POD_NAME comes before any variable that refers to it ($(POD_NAME) in the TLS mount).
    assert_eq!(env[0].0, "POD_NAME");
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
    let sts = worker_statefulset(app, &OperatorConfig::default(), &owner(), None);
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
    // Operator-only settings do not restart the workers.
    let mut k8s = base.clone();
    k8s.spec.kubernetes.network_policy.enabled = false;
    k8s.spec.functions[0].resources = Some(spindle_spec::ResourceSpec {
        memory_limit: Some("2Gi".into()),
        ..Default::default()
    });
    assert_eq!(config_hash(&base), config_hash(&k8s));
    // A savepoint request is the operator's; starting from one restarts the workers.
    let mut savepoint = base.clone();
    savepoint.spec.checkpoint.savepoint_request = Some("before-v2".into());
    assert_eq!(config_hash(&base), config_hash(&savepoint));
    let mut restore = base.clone();
    restore.spec.checkpoint.restore_from = Some("before-v2".into());
    assert_ne!(config_hash(&base), config_hash(&restore));
    let mut workers = base.clone();
    workers.spec.workers = 2;
    assert_ne!(config_hash(&base), config_hash(&workers));
    let sts = worker_statefulset(&workers, &OperatorConfig::default(), &owner(), None);
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
    let sts = worker_statefulset(&app, &with_default, &owner(), None);
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
fn the_workers_get_the_configured_otel_variables() {
    let config = OperatorConfig {
        worker_env: [(
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_string(),
            "http://collector.monitoring:4318".to_string(),
        )]
        .into(),
        ..OperatorConfig::default()
    };
    let sts = worker_statefulset(&app(), &config, &owner(), None);
    let c = &sts.spec.unwrap().template.spec.unwrap().containers[0];
    let otel = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == "OTEL_EXPORTER_OTLP_ENDPOINT")
        .expect("the variable reaches the worker");
    assert_eq!(otel.value.as_deref(), Some("http://collector.monitoring:4318"));
    let none = worker_statefulset(&app(), &OperatorConfig::default(), &owner(), None);
    let c = &none.spec.unwrap().template.spec.unwrap().containers[0];
    assert!(
        !c.env.as_ref().unwrap().iter().any(|e| e.name.starts_with("OTEL_")),
        "off by default"
    );
}

#[test]
fn the_cleanup_job_deletes_exactly_this_application() {
    let mut app = app();
    app.spec.checkpoint.storage = Some("s3://mine/prefix".into());
    app.spec.checkpoint.credentials_secret = Some("s3-mine".into());
    let job = cleanup_job(&app, &OperatorConfig::default(), UID);
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
    // The namespace as the workers get it: `spindle checkpoints delete` computes their root.
    let ns = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == "POD_NAMESPACE")
        .unwrap();
    assert_eq!(
        ns.value_from.as_ref().unwrap().field_ref.as_ref().unwrap().field_path,
        "metadata.namespace"
    );
    assert_eq!(
        checkpoint_root(&app, &OperatorConfig::default()),
        "s3://mine/prefix/apps/greeter"
    );
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
    let config = OperatorConfig::default();
    let d = function_deployment(&app, 0, &config, &o).unwrap();
    assert_eq!(d.metadata.name.as_deref(), Some("greeter-fn-0"));
    let pod = d.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        pod.containers[0].image.as_deref(),
        Some("spindle/example-greeter:0.1.0")
    );
    assert!(function_deployment(&app, 1, &config, &o).is_none());
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
    assert_eq!(objects.len(), 11);
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

/// Every pod the operator builds passes every rule of the restricted profile (the checker
/// names the rule); the API server's PodSecurity admission checks the same in the envtest
/// suite.
#[test]
fn every_pod_satisfies_pod_security_restricted() {
    let objects = all_objects(&app());
    let pods = pods(&objects);
    let names: Vec<&str> = pods.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "StatefulSet/greeter-worker",
            "Deployment/greeter-fn-0",
            "Job/greeter-delete-checkpoints"
        ]
    );
    for (name, pod) in &pods {
        let violations = crate::pod_security::restricted_violations(pod);
        assert!(
            violations.is_empty(),
            "{name} breaks the restricted profile: {violations:#?}"
        );
        // Beyond the profile: a read-only root, no ServiceAccount token, a writable /tmp.
        for c in &pod.containers {
            assert_eq!(
                c.security_context.as_ref().unwrap().read_only_root_filesystem,
                Some(true),
                "{name}/{}",
                c.name
            );
            let mounts: Vec<&str> = c
                .volume_mounts
                .iter()
                .flatten()
                .map(|m| m.mount_path.as_str())
                .collect();
            assert!(mounts.contains(&"/tmp"), "{name}: {mounts:?}");
        }
        assert_eq!(pod.automount_service_account_token, Some(false), "{name}");
        assert_eq!(
            pod.security_context.as_ref().unwrap().run_as_user,
            Some(USER_ID),
            "{name}"
        );
    }
    eprintln!(
        "restricted profile: {} pods pass every rule ({})",
        pods.len(),
        names.join(", ")
    );
}

/// Each worker mounts only its own files of the TLS Secret, by its pod name.
#[test]
fn workers_mount_their_own_certificates() {
    let app = app();
    let material = tls_material(&app);
    let (secret, hash) = tls_secret(&app, &owner(), &material);
    let keys: Vec<&String> = secret.data.as_ref().unwrap().keys().collect();
    for want in ["ca.crt", "ca-signing.key", "worker-0.crt", "worker-2.key"] {
        assert!(keys.iter().any(|k| *k == want), "{want} in {keys:?}");
    }
    let sts = worker_statefulset(&app, &OperatorConfig::default(), &owner(), Some(&hash));
    let template = sts.spec.unwrap().template;
    assert_eq!(
        template.metadata.unwrap().annotations.unwrap()[TLS_HASH_ANNOTATION],
        hash
    );
    let pod = template.spec.unwrap();
    let volume = pod.volumes.unwrap().into_iter().find(|v| v.name == "tls").unwrap();
    let source = volume.secret.unwrap();
    assert_eq!(source.secret_name.as_deref(), Some("greeter-tls"));
    let items: Vec<(String, String)> = source.items.unwrap().into_iter().map(|i| (i.key, i.path)).collect();
    assert_eq!(items.len(), 9, "three files for each of 3 workers");
    assert!(items.contains(&("worker-1.key".into(), "greeter-worker-1/tls.key".into())));
    assert!(items.contains(&("ca.crt".into(), "greeter-worker-2/ca.crt".into())));
    assert!(
        !items.iter().any(|(k, _)| k.starts_with("ca-signing")),
        "the CA key is never mounted"
    );
    let mount = pod.containers[0]
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.name == "tls")
        .unwrap()
        .clone();
    assert_eq!(
        (
            mount.mount_path.as_str(),
            mount.sub_path_expr.as_deref(),
            mount.read_only
        ),
        ("/etc/spindle/tls", Some("$(POD_NAME)"), Some(true))
    );
    // A certificate kept for a count being left (rescale 3 -> 2) restarts nobody.
    let mut two = app.clone();
    two.spec.workers = 2;
    let (_, before) = tls_secret(&two, &owner(), &material);
    let mut fewer = material;
    fewer.workers.remove(&2);
    let (_, after) = tls_secret(&two, &owner(), &fewer);
    assert_eq!(before, after);
    // Peer TLS off: no mount, no variable.
    let plain = worker_statefulset(&app, &OperatorConfig::default(), &owner(), None);
    let pod = plain.spec.unwrap().template.spec.unwrap();
    assert!(!pod.volumes.unwrap().iter().any(|v| v.name == "tls"));
    assert!(
        !pod.containers[0]
            .env
            .as_ref()
            .unwrap()
            .iter()
            .any(|e| e.name == "SPINDLE_TLS_DIR")
    );
}

#[test]
fn the_grace_period_fits_a_final_checkpoint() {
    let mut app = app();
    let stop = |app: &StatefulApplication| {
        let sts = worker_statefulset(app, &OperatorConfig::default(), &owner(), None);
        let pod = sts.spec.unwrap().template.spec.unwrap();
        let env = pod.containers[0].env.clone().unwrap();
        let timeout = env
            .into_iter()
            .find(|e| e.name == "SPINDLE_STOP_TIMEOUT")
            .unwrap()
            .value
            .unwrap();
        (pod.termination_grace_period_seconds.unwrap(), timeout)
    };
    assert_eq!(stop(&app), (30, "25s".to_string()));
    app.spec.checkpoint.interval = spindle_spec::HumanDuration::parse("10s").unwrap();
    assert_eq!(stop(&app), (40, "35s".to_string()));
    app.spec.checkpoint.interval = spindle_spec::HumanDuration::parse("1500ms").unwrap();
    assert_eq!(stop(&app), (30, "25s".to_string()));
    app.spec.checkpoint.interval = spindle_spec::HumanDuration::parse("0s").unwrap();
    assert_eq!(stop(&app), (30, "25s".to_string()));
}

#[test]
fn network_policies_admit_only_the_application_the_operator_and_monitoring() {
    let app = app();
    let config = cluster_config();
    let p = serde_json::to_value(worker_network_policy(&app, &config.network, &owner()).unwrap()).unwrap();
    let spec = &p["spec"];
    assert_eq!(
        spec["policyTypes"],
        serde_json::json!(["Ingress"]),
        "outgoing traffic is not restricted"
    );
    let workers = serde_json::json!({"matchLabels": {
        "app.kubernetes.io/component": "worker",
        "app.kubernetes.io/instance": "greeter",
        "app.kubernetes.io/name": "spindle"
    }});
    assert_eq!(spec["podSelector"], workers);
    let rules = spec["ingress"].as_array().unwrap();
    let rule = |port: &str| {
        rules
            .iter()
            .find(|r| r["ports"][0]["port"] == port)
            .unwrap_or_else(|| panic!("a rule for port {port}: {rules:?}"))
    };
    assert_eq!(rule("peer")["from"], serde_json::json!([{"podSelector": workers}]));
    assert_eq!(
        rule("admin")["from"],
        serde_json::json!([
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "spindle-system"}},
             "podSelector": {"matchLabels": {"app.kubernetes.io/name": "spindle-operator"}}},
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
             "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}
        ])
    );
    assert!(rule("ingress").get("from").is_none(), "no ingressFrom: every source");
    let mut limited = app.clone();
    limited.spec.kubernetes.network_policy.ingress_from = vec![spindle_spec::NetworkPeer {
        cidr: Some("10.1.0.0/16".into()),
        ..Default::default()
    }];
    let p = serde_json::to_value(worker_network_policy(&limited, &config.network, &owner()).unwrap()).unwrap();
    let ingress = p["spec"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ports"][0]["port"] == "ingress")
        .unwrap()
        .clone();
    assert_eq!(
        ingress["from"],
        serde_json::json!([{"ipBlock": {"cidr": "10.1.0.0/16"}}])
    );
    // Without a known operator namespace or monitoring, nobody may reach the admin port.
    let p = serde_json::to_value(worker_network_policy(&app, &NetworkConfig::default(), &owner()).unwrap()).unwrap();
    assert!(
        !p["spec"]["ingress"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["ports"][0]["port"] == "admin")
    );
    let f = serde_json::to_value(function_network_policy(&app, &owner()).unwrap()).unwrap();
    assert_eq!(
        f["spec"]["podSelector"]["matchExpressions"],
        serde_json::json!([{"key": "app.kubernetes.io/component", "operator": "In", "values": ["function-0"]}])
    );
    assert_eq!(
        f["spec"]["ingress"][0]["from"],
        serde_json::json!([{"podSelector": workers}])
    );
    let mut off = app;
    off.spec.kubernetes.network_policy.enabled = false;
    assert!(worker_network_policy(&off, &config.network, &owner()).is_none());
    assert!(function_network_policy(&off, &owner()).is_none());
}

#[test]
fn function_pods_get_resource_defaults_or_their_own() {
    let mut app = app();
    let config = OperatorConfig::default();
    let resources = |app: &StatefulApplication| {
        let d = function_deployment(app, 0, &config, &owner()).unwrap();
        let r = d.spec.unwrap().template.spec.unwrap().containers[0]
            .resources
            .clone()
            .unwrap();
        let show = |m: Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>| {
            m.unwrap_or_default()
                .into_iter()
                .map(|(k, v)| format!("{k}={}", v.0))
                .collect::<Vec<_>>()
                .join(",")
        };
        (show(r.requests), show(r.limits))
    };
    assert_eq!(
        resources(&app),
        ("cpu=50m,memory=64Mi".to_string(), "memory=512Mi".to_string())
    );
    app.spec.functions[0].resources = Some(spindle_spec::ResourceSpec {
        cpu_limit: Some("2".into()),
        memory_limit: Some("1Gi".into()),
        ..Default::default()
    });
    assert_eq!(
        resources(&app),
        ("cpu=50m,memory=64Mi".to_string(), "cpu=2,memory=1Gi".to_string())
    );
}

#[test]
fn the_status_selector_selects_the_worker_pods() {
    let app = app();
    assert_eq!(
        selector_string(&app),
        "app.kubernetes.io/component=worker,app.kubernetes.io/instance=greeter,app.kubernetes.io/name=spindle"
    );
    let sts = worker_statefulset(&app, &OperatorConfig::default(), &owner(), None);
    let labels = sts.spec.unwrap().template.metadata.unwrap().labels.unwrap();
    for pair in selector_string(&app).split(',') {
        let (k, v) = pair.split_once('=').unwrap();
        assert_eq!(labels.get(k).map(String::as_str), Some(v));
    }
}
