//! Several worker processes: `spindle run --workers 3` starts three `spindle worker` children on
//! loopback, connected over gRPC, running StateFun Python SDK functions whose messages cycle
//! between addresses on different workers.

mod support;

use std::process::Command;

use support::*;

const SPINDLE: &str = env!("CARGO_BIN_EXE_spindle");

#[test]
fn three_worker_processes_run_a_cyclic_application_exactly() {
    let dir = TempDir::new("processes");
    let app = python_local_app("three", "  workers: 3");
    std::fs::write(dir.path().join("app.yaml"), app).unwrap();
    // 60 counters, 3 adds each: counter -> echo -> counter round trips, addresses spread over
    // the three workers (counter/x and echo/x hash to different key groups).
    let mut input = String::new();
    for round in 1..=3 {
        for i in 0..60 {
            input.push_str(&format!(
                "{{\"target\": \"py/counter/c{i}\", \"typename\": \"py/Command\", \"value\": {{\"op\": \"add\", \"n\": {round}}}}}\n"
            ));
        }
    }
    std::fs::write(dir.path().join("input.jsonl"), input).unwrap();
    eprintln!("running: spindle run --workers 3 (three worker processes, Python StateFun SDK functions)");
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
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("started worker 2"), "{stderr}");
    assert!(stderr.contains("3 workers ready"), "{stderr}");
    // The workers authenticate each other with certificates of a CA made for this run.
    assert_eq!(
        stderr.matches("peer endpoint listening (mutual TLS)").count(),
        3,
        "{stderr}"
    );
    assert!(
        !stderr.contains("WITHOUT TLS") && !stderr.contains("refused"),
        "{stderr}"
    );

    let mut got = egress_values(&dir.path().join("out/py.jsonl"));
    got.sort();
    let mut want: Vec<String> = (0..60)
        .flat_map(|i| [(1, 1), (3, 2), (6, 3)].map(|(count, seen)| format!("echoed:c{i}:{count}#seen={seen}")))
        .collect();
    want.sort();
    assert_eq!(got, want, "every round trip exactly once, in order per address");
    for w in 0..3 {
        let dead = std::fs::read_to_string(dir.path().join(format!(".spindle/worker-{w}/dead-letters.jsonl"))).unwrap();
        assert!(dead.is_empty(), "worker {w}: {dead}");
    }
}
