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

    // A schedule's cron expression, with the field path.
    let schedule = "  ingresses:\n    - name: nightly\n      schedule: {cron: \"61 3 * * *\", target: t/f/x}\n";
    std::fs::write(
        &file,
        test_app("http://fns:8000/x", "").replace("  ingresses:\n", schedule),
    )
    .unwrap();
    let out = Command::new(SPINDLE).arg("validate").arg(&file).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spec.ingresses[0].schedule.cron: `61 3 * * *` is not a cron expression"),
        "{err}"
    );

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

/// `spindle run dir/app.yaml` twice, from the parent directory, with one and with two worker
/// processes: checkpoints land beside the app file (once, not under a doubled path); each
/// clean stop (idle) takes a final checkpoint, so the second run re-sends nothing of the first
/// — its output is only its own records, and the egress file holds every record once (read
/// without deduplication: exactly-once across a clean stop and restart).
#[test]
fn a_clean_stop_and_restart_from_a_relative_path_repeats_no_output() {
    for workers in ["1", "2"] {
        let dir = TempDir::new(&format!("cli-restart-{workers}"));
        let sub = dir.path().join("apps/counter");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("app.yaml"), python_local_app("restart", "")).unwrap();
        std::fs::write(
            sub.join("input.jsonl"),
            "{\"target\": \"py/counter/zoe\", \"typename\": \"py/Command\", \"value\": {\"op\": \"add\", \"n\": 4}}\n\
             {\"target\": \"py/counter/zoe\", \"typename\": \"py/Command\", \"value\": {\"op\": \"add\", \"n\": 1}}\n",
        )
        .unwrap();
        let mut echoed_by_run = Vec::new();
        for run in 1..=2 {
            eprintln!(
                "running: spindle run apps/counter/app.yaml --workers {workers} (run {run}; Python StateFun SDK functions)"
            );
            let out = Command::new(SPINDLE)
                .current_dir(dir.path())
                .args(["run", "apps/counter/app.yaml", "--input", "apps/counter/input.jsonl"])
                .args([
                    "--exit-when-idle",
                    "--ingress-addr",
                    "127.0.0.1:0",
                    "--workers",
                    workers,
                ])
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).to_string();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "run {run}, {workers} workers:\n{stderr}");
            assert!(
                stderr.contains("final checkpoint complete"),
                "run {run}, {workers} workers: the stop took no final checkpoint:\n{stderr}"
            );
            let echoed: Vec<String> = stdout
                .lines()
                .filter(|l| l.starts_with("egress py/out <- "))
                .map(String::from)
                .collect();
            echoed_by_run.push(echoed);
        }
        let checkpoints = sub.join(".spindle/checkpoints/restart/checkpoints");
        assert!(checkpoints.is_dir(), "no checkpoints at {}", checkpoints.display());
        assert!(
            !sub.join("apps").exists(),
            "the checkpoint path was doubled under {}",
            sub.display()
        );
        let values = |lines: &[String]| -> Vec<String> {
            let mut v: Vec<String> = lines
                .iter()
                .map(|l| {
                    let json: serde_json::Value =
                        serde_json::from_str(l.trim_start_matches("egress py/out <- ")).unwrap();
                    json["value"].as_str().unwrap_or_default().to_string()
                })
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            values(&echoed_by_run[0]),
            ["echoed:zoe:4#seen=1", "echoed:zoe:5#seen=2"]
        );
        assert_eq!(
            values(&echoed_by_run[1]),
            ["echoed:zoe:10#seen=4", "echoed:zoe:9#seen=3"],
            "{workers} workers: the second run printed what is not its own"
        );
        let file = std::fs::read_to_string(sub.join("out/py.jsonl")).unwrap();
        let mut keys: Vec<String> = file
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["key"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(keys.len(), 4, "{workers} workers: every record once:\n{file}");
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 4, "{workers} workers: a key twice:\n{file}");
    }
}
