//! `spindle status` against a running `spindle run` (found through its data directory, and by
//! `--admin` URL with `--json`), the backlog metric it and `/metrics` publish, and the live
//! status line of `spindle run`: shown when stderr is a terminal (a pty from `script`), not
//! with `--quiet` and not when stderr is a pipe.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

const SPINDLE: &str = env!("CARGO_BIN_EXE_spindle");

fn app(fn_addr: std::net::SocketAddr) -> String {
    format!(
        r#"apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {{name: glance}}
spec:
  functions:
    - typename: example/*
      endpoint: http://{fn_addr}/statefun
  ingresses:
    - name: web
      http: {{}}
  egresses:
    - typename: example/greets
      file: {{path: greets.jsonl}}
  checkpoint:
    interval: 100ms
"#
    )
}

/// A `spindle run` child whose stderr is collected.
struct Run {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Run {
    fn start(dir: &std::path::Path, extra: &[&str]) -> Run {
        let mut child = Command::new(SPINDLE)
            .current_dir(dir)
            .args(["run", "app.yaml", "--ingress-addr", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let out = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = out.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Run { child, stderr }
    }

    /// The ingress address from the banner.
    async fn ingress(&self) -> std::net::SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = self.stderr.lock().unwrap().clone();
            if let Some(rest) = text.split("ingress http://").nth(1) {
                return rest.split_whitespace().next().unwrap().parse().unwrap();
            }
            assert!(Instant::now() < deadline, "spindle run did not start in 60 s: {text}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn status(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(SPINDLE)
        .current_dir(dir)
        .arg("status")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_a_local_run_at_a_glance_and_by_admin_url() {
    let dir = TempDir::new("status");
    let (fn_addr, _stop) = example_functions().await;
    std::fs::write(dir.path().join("app.yaml"), app(fn_addr)).unwrap();

    // Nothing running: the error names what is missing.
    let (ok, _, err) = status(dir.path(), &[]);
    assert!(!ok);
    assert!(
        err.contains(".spindle/admin-urls") && err.contains("is `spindle run` running"),
        "{err}"
    );

    eprintln!("started: the example functions on {fn_addr} (in this test), `spindle run` as a child");
    let run = Run::start(dir.path(), &[]);
    let ingress = run.ingress().await;
    for i in 0..20 {
        let (code, body) = post(
            ingress,
            &format!("/example/person/p{i}"),
            "application/vnd.example/Visit",
            b"{}".to_vec(),
        )
        .await;
        assert_eq!(code, 202, "{body}");
    }

    // The local run is found through .spindle/admin-urls; wait until a checkpoint after the
    // records completed and the work is done.
    let deadline = Instant::now() + Duration::from_secs(60);
    let report = loop {
        let (ok, out, err) = status(dir.path(), &["app.yaml", "--sample", "200ms"]);
        assert!(ok, "{err}");
        if out.contains("backlog         0 ") && !out.contains("last checkpoint none yet") {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "not idle with a checkpoint after 60 s:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("spindle status:\n{report}");
    assert!(report.contains("application     glance\n"), "{report}");
    assert!(report.contains("workers         1\n"), "{report}");
    assert!(report.contains("generation      1\n"), "{report}");
    assert!(report.contains("s ago)"), "the checkpoint's age: {report}");
    // The coordinator counts the first start's restore as a rollback (spindle_rollbacks_total).
    assert!(report.contains("rollbacks       1\n"), "{report}");
    assert!(report.contains("records/s in"), "{report}");
    assert!(
        report.contains("lag by ingress  -\n"),
        "no Kafka/NATS ingress: {report}"
    );

    // By admin URL, as JSON.
    let admin = std::fs::read_to_string(dir.path().join(".spindle/admin-urls")).unwrap();
    let admin = admin.trim();
    let (ok, out, err) = status(dir.path(), &["--admin", admin, "--json", "--sample", "100ms"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["application"], "glance");
    assert!(v["lastCheckpoint"].as_u64().unwrap() > 0, "{v}");
    assert!(v["lastCheckpointAgeSeconds"].as_f64().unwrap() < 60.0, "{v}");
    assert_eq!(v["backlog"], 0, "{v}");
    assert_eq!(
        v["byWorker"][admin]["messagesInvoked"].as_u64().map(|n| n >= 40),
        Some(true),
        "20 visits, each invoking person twice: {v}"
    );
    assert!(v["deadLetters"].is_u64(), "{v}");
    // The backlog gauge on /metrics, for autoscalers.
    let (_, metrics) = get(admin.trim_start_matches("http://").parse().unwrap(), "/metrics").await;
    assert!(metrics.contains("spindle_backlog_messages 0"), "{metrics}");
    assert!(
        metrics.contains("# TYPE spindle_last_checkpoint_timestamp_seconds gauge"),
        "{metrics}"
    );

    // A worker that does not answer is named.
    let (ok, _, err) = status(dir.path(), &["--admin", "http://127.0.0.1:1"]);
    assert!(!ok);
    assert!(err.contains("cannot reach http://127.0.0.1:1/status"), "{err}");

    // stderr is a pipe here: no live line.
    let text = run.stderr.lock().unwrap().clone();
    assert!(!text.contains(" · gen "), "a live line on a pipe: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_shows_a_live_line_on_a_terminal_unless_quiet() {
    if Command::new("script").arg("--version").output().is_err() {
        println!("skip: `script` (util-linux) is not installed: no pty to run spindle in");
        return;
    }
    let dir = TempDir::new("status-live");
    let (fn_addr, _stop) = example_functions().await;
    std::fs::write(dir.path().join("app.yaml"), app(fn_addr)).unwrap();
    let mut lines = Vec::new();
    for quiet in [false, true] {
        // `script` gives spindle a pty as stdin/stdout/stderr and copies what it writes.
        let cmd = format!(
            "exec {SPINDLE} run app.yaml --ingress-addr 127.0.0.1:0{}",
            if quiet { " --quiet" } else { "" }
        );
        let mut child = Command::new("script")
            .current_dir(dir.path())
            .args(["-qfec", &cmd, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = Arc::new(Mutex::new(String::new()));
        let copy = out.clone();
        let mut pipe = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut pipe, &mut buf) {
                if n == 0 {
                    break;
                }
                copy.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        // Two redraws (one a second) of the line, or 4 s of silence with --quiet.
        let deadline = Instant::now() + Duration::from_secs(if quiet { 4 } else { 60 });
        loop {
            let text = out.lock().unwrap().clone();
            let drawn = text.matches("glance · gen 1 · ckpt ").count();
            if !quiet && drawn >= 2 || Instant::now() > deadline {
                lines.push(text);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Ctrl-C on the terminal: a clean stop.
        {
            use std::io::Write as _;
            let mut stdin = child.stdin.take().unwrap();
            let _ = stdin.write_all(b"\x03");
            let _ = stdin.flush();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                kill_spindle_in(dir.path());
                panic!("spindle run under a pty did not stop on Ctrl-C in 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(
        lines[0].contains("glance · gen 1 · ckpt ") && lines[0].contains(" rec/s · ") && lines[0].contains("\r\x1b[K"),
        "no live line on a terminal: {}",
        lines[0]
    );
    assert!(
        lines[1].contains("press Ctrl-C"),
        "the quiet run did not start: {}",
        lines[1]
    );
    assert!(
        !lines[1].contains(" · gen "),
        "a live line despite --quiet: {}",
        lines[1]
    );
}

/// Stops a `spindle run` this test started under `script` in `dir` (found through /proc by its
/// working directory, unique to the test) when Ctrl-C did not stop it.
fn kill_spindle_in(dir: &std::path::Path) {
    let dir = dir.canonicalize().unwrap_or(dir.to_path_buf());
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let is_run = cmdline.starts_with(SPINDLE.as_bytes()) && cmdline.windows(3).any(|w| w == b"run");
        if is_run && cwd.as_deref() == Some(dir.as_path()) {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}
