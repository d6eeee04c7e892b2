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

/// Whether process `pid` still runs (a zombie waiting to be reaped does not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
        Err(_) => false,
    }
}

#[test]
fn kill_9_of_spindle_run_stops_its_workers_and_functions() {
    use std::io::BufRead as _;
    let dir = TempDir::new("orphans");
    std::fs::write(dir.path().join("app.yaml"), python_local_app("orphans", "  workers: 2")).unwrap();
    eprintln!("running: spindle run --workers 2 (Python StateFun SDK functions), then kill -9 of it");
    let mut run = Command::new(SPINDLE)
        .current_dir(dir.path())
        .args(["run", "app.yaml", "--ingress-addr", "127.0.0.1:0"])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The children's pids, from what `spindle run` prints, until every worker is ready.
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = run.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut pids = Vec::new();
    let mut seen = String::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("spindle run did not get ready within 120 s:\n{seen}"));
        seen.push_str(&line);
        seen.push('\n');
        if let Some((_, rest)) = line.split_once("(pid ")
            && let Some(pid) = rest.split([')', ',']).next().and_then(|p| p.parse::<u32>().ok())
        {
            pids.push(pid);
        }
        if line.contains("workers ready") {
            break;
        }
    }
    assert_eq!(pids.len(), 3, "two workers and one function process:\n{seen}");
    assert!(pids.iter().all(|p| alive(*p)));
    let pid = rustix::process::Pid::from_raw(run.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    run.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while pids.iter().any(|p| alive(*p)) {
        let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        assert!(
            std::time::Instant::now() < deadline,
            "children of the killed spindle run still running after 60 s: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    eprintln!("every child ({pids:?}) stopped after its parent was killed");
}
