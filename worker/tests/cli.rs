//! The `spindle` command itself: `run` launches the function process from `local.command`,
//! sends the input through the ingress, prints the egress and stops when idle; `validate`
//! names what is wrong.

mod support;

use std::process::Command;

use support::*;

const SPINDLE: &str = env!("CARGO_BIN_EXE_spindle");

#[test]
fn validate_names_the_field_and_fails() {
    let dir = TempDir::new("validate");
    let file = dir.path().join("app.yaml");
    std::fs::write(&file, test_app("fns:8000/x", "  keyGroups: 0")).unwrap();
    let out = Command::new(SPINDLE).arg("validate").arg(&file).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.functions[0].endpoint: `fns:8000/x` is not an absolute URL"),
        "{err}"
    );
    assert!(err.contains("spec.keyGroups: must be between 1 and 32768"), "{err}");

    let examples = workspace_root().join("examples/greeter/app.yaml");
    let out = Command::new(SPINDLE).arg("validate").arg(&examples).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn run_launches_the_functions_sends_input_and_prints_the_egress() {
    let dir = TempDir::new("cli-run");
    let app = python_local_app("cli", "");
    std::fs::write(dir.path().join("app.yaml"), app).unwrap();
    std::fs::write(
        dir.path().join("input.jsonl"),
        "# two adds for one counter\n\
         {\"target\": \"py/counter/zoe\", \"typename\": \"py/Command\", \"value\": {\"op\": \"add\", \"n\": 4}}\n\
         {\"target\": \"py/counter/zoe\", \"typename\": \"py/Command\", \"value\": {\"op\": \"add\", \"n\": 1}}\n",
    )
    .unwrap();
    eprintln!("running: spindle run (Python StateFun SDK functions launched from local.command)");
    let out = Command::new(SPINDLE)
        .current_dir(dir.path())
        .args([
            "run",
            "app.yaml",
            "--input",
            "input.jsonl",
            "--exit-when-idle",
            "--ingress-addr",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("sent 2 records from input.jsonl"), "{stderr}");
    assert!(stderr.contains("2 records accepted, 0 dead letters"), "{stderr}");
    let echoed: Vec<&str> = stdout.lines().filter(|l| l.starts_with("egress py/out <- ")).collect();
    assert_eq!(echoed.len(), 2, "{stdout}");
    let mut values = egress_values(&dir.path().join("out/py.jsonl"));
    values.sort();
    assert_eq!(values, ["echoed:zoe:4#seen=1", "echoed:zoe:5#seen=2"]);
    assert!(dir.path().join(".spindle/dead-letters.jsonl").exists());
}
