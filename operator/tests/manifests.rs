//! The YAML files a person applies by hand: the applications load and validate with the
//! same code the operator runs, and the kind suite's built-in objects are valid for
//! Kubernetes (strictly, 1.30 and 1.37).

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

#[test]
fn example_applications_validate() {
    for file in [
        "examples/greeter/app.yaml",
        "examples/greeter/k8s.yaml",
        "e2e/kind/app.yaml",
    ] {
        let app = spindle_spec::load_file(&root().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(app.metadata.name, "greeter", "{file}");
    }
    let e2e = spindle_spec::load_file(&root().join("e2e/kind/app.yaml")).unwrap();
    assert_eq!(
        e2e.spec.checkpoint.retention_policy,
        spindle_spec::RetentionPolicy::Delete
    );
    assert_eq!(e2e.spec.checkpoint.credentials_secret.as_deref(), Some("s3"));
}

#[test]
fn kind_suite_objects_are_valid_for_kubernetes() {
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
    for version in ["1.30.0", "1.37.0"] {
        let out = Command::new(venv.join("bin/kubernetes-validate"))
            .args(["--strict", "--quiet", "-k", version])
            .arg(root().join("e2e/kind/infra.yaml"))
            .output()
            .unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "e2e/kind/infra.yaml, Kubernetes {version}:\n{report}"
        );
    }
}
