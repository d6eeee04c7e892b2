//! The official StateFun SDKs for Java, Go and JavaScript, unchanged, serving one small app each
//! (`e2e/java`, `e2e/go`, `e2e/js`: the same app in three languages, namespaces `java`, `go`,
//! `js`), run as real processes and driven through a Spindle worker:
//! - [`build`] runs an app's `build.sh` (which skips when up to date) and says how long it took,
//!   or prints the one `skip:` line when the toolchain or the registry is missing;
//! - [`SdkProcess`] starts the built app on a free loopback port (`PORT`), its output in a log
//!   file that is printed when the test fails;
//! - [`compat_scenario`] is the scenario every SDK must pass, with its exact expected outputs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use spindle_spec::TypeName;
use spindle_worker::{Address, Value, Worker};

use super::brokers::Kafka;
use super::*;

/// Exit status of the build scripts for "cannot be built here" (BSD's EX_TEMPFAIL).
const CANNOT_BUILD: i32 = 75;

/// Builds (or finds up to date) the app of `e2e/{sdk}` with its `build.sh`. `None` after
/// printing one `skip:` line when a tool or the registry is missing; panics on a real build
/// failure (the script's output says what failed).
pub fn build(sdk: &str) -> Option<Duration> {
    // Tests of one binary run in parallel: the first one builds, the others take its answer.
    static BUILT: std::sync::Mutex<BTreeMap<String, Option<Duration>>> = std::sync::Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(result) = built.get(sdk) {
        if result.is_none() {
            println!("skip: e2e/{sdk} cannot be built here (see above)");
        }
        return *result;
    }
    let result = build_now(sdk);
    built.insert(sdk.to_string(), result);
    result
}

fn build_now(sdk: &str) -> Option<Duration> {
    let script = workspace_root().join(format!("e2e/{sdk}/build.sh"));
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    let took = started.elapsed();
    let said = String::from_utf8_lossy(&out.stdout);
    match out.status.code() {
        Some(0) => {
            eprintln!("ready: e2e/{sdk} (build.sh took {:.1} s)", took.as_secs_f64());
            Some(took)
        }
        Some(CANNOT_BUILD) => {
            let why = said
                .lines()
                .rev()
                .find(|l| l.starts_with("missing: "))
                .unwrap_or("missing: (no reason given)");
            println!(
                "skip: e2e/{sdk} cannot be built here: {}",
                why.trim_start_matches("missing: ")
            );
            None
        }
        _ => panic!("{} failed ({}): {}", script.display(), out.status, said.trim()),
    }
}

/// A function process of an SDK app, listening on `port`; killed (with its process group) on
/// drop. Its stdout and stderr go to `log`, printed if the test panics.
pub struct SdkProcess {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
    pub what: String,
}

impl SdkProcess {
    /// Starts `command` in `e2e/{sdk}` with `PORT` and `env` set, and waits until it accepts
    /// connections.
    pub fn start(sdk: &str, command: &[&str], env: &[(&str, &str)], dir: &Path, what: &str) -> SdkProcess {
        let port = free_port();
        let log = dir.join(format!("{sdk}-functions.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(command[0]);
        cmd.args(&command[1..])
            .current_dir(workspace_root().join("e2e").join(sdk))
            .env("PORT", port.to_string())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        // Its own process group, so that the drop stops whatever it started too.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what} ({command:?}): {e}"));
        let mut p = SdkProcess {
            child,
            port,
            log,
            what: what.to_string(),
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = p.child.try_wait().unwrap() {
                panic!(
                    "{what} exited ({status}) before listening on port {port}:\n{}",
                    p.log_text()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{what} not listening on port {port} after 60 s:\n{}",
                p.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "started: {what} on 127.0.0.1:{port} (pid {}, listening after {:.1} s)",
            p.child.id(),
            started.elapsed().as_secs_f64()
        );
        p
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for SdkProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- output of {} ({}):\n{}--- end",
                self.what,
                self.log.display(),
                self.log_text()
            );
        }
        // The child leads its own group (see `start`) and is not reaped yet, so its pid is
        // still the group's id.
        if let Ok(None) = self.child.try_wait()
            && let Some(group) = rustix::process::Pid::from_raw(self.child.id() as i32)
        {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = self.child.wait();
    }
}

/// The application of the compatibility scenario for namespace `ns`: the SDK app's functions
/// `{ns}/*` at `port`, an HTTP ingress, the file egress `{ns}/out` (`out.jsonl`) and the Kafka
/// egress `{ns}/kafka-out` on `broker`.
pub fn compat_app(ns: &str, port: u16, broker: &str) -> String {
    format!(
        r#"
apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {{name: {ns}-compat}}
spec:
  functions:
    - typename: {ns}/*
      endpoint: http://127.0.0.1:{port}/statefun
      maxBatchSize: 10
  ingresses:
    - name: web
      http: {{}}
  egresses:
    - typename: {ns}/out
      file: {{path: out.jsonl}}
    - typename: {ns}/kafka-out
      kafka: {{brokers: ["{broker}"]}}
  checkpoint: {{interval: 100ms}}
"#
    )
}

/// The typed state values the SDK writes: `seen` is a long in Java and Go, an int in the
/// JavaScript SDK (which has no long type).
#[derive(Debug, Clone, Copy)]
pub enum SeenType {
    Long,
    Int,
}

/// Sends the command `text` (custom type `{ns}/Command`, UTF-8) to `{ns}/counter/{id}`.
async fn command(worker: &Worker, ns: &str, id: &str, text: &str) {
    let ingress = worker.ingress_addr.unwrap();
    let (status, body) = post(
        ingress,
        &format!("/{ns}/counter/{id}"),
        &format!("application/vnd.{ns}/Command"),
        text.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(status, 202, "command {text:?} to {ns}/counter/{id}: {body}");
}

/// Waits until the worker is idle; on a timeout, says what the worker holds and what the SDK
/// process printed (an SDK that cannot handle what Spindle sends shows up here).
async fn idle(worker: &Worker, function: &SdkProcess, step: &str) {
    if let Err(e) = worker.wait_idle(Duration::from_secs(60)).await {
        panic!(
            "{step}: the worker is not idle ({e}); dead letters: {:?}; status: {:?}",
            worker.dead_letters.recent(),
            super::procs::status(worker.admin_addr).await
        );
    }
    let dead = worker.dead_letters.recent();
    assert!(
        dead.is_empty(),
        "{step}: dead letters (the {} failed?): {dead:?}",
        function.what
    );
}

fn addr(t: &str, id: &str) -> Address {
    Address::new(TypeName::parse(t).unwrap(), id)
}

pub fn int(v: i32) -> Value {
    let p = spindle_protocol::Primitive::Int(v);
    Value::new(p.typename(), p.encode())
}

pub fn long(v: i64) -> Value {
    let p = spindle_protocol::Primitive::Long(v);
    Value::new(p.typename(), p.encode())
}

/// The scenario every SDK app passes, with exact outputs: messages between two function types
/// with state in both and a reply to the caller; delayed messages, one delivered and two
/// cancelled (in the same call and by a later one); a value that expires 2 s after it was
/// written (present, then absent, waited for without a fixed sleep); and records for the SDK's
/// Kafka egress builder, read back from the broker.
pub async fn compat_scenario(ns: &str, function: &SdkProcess, tansu: &Kafka, seen: SeenType) {
    let dir = TempDir::new(&format!("{ns}-sdk"));
    tansu.create_topic("relayed", 2).await;
    let worker = start_worker(&compat_app(ns, function.port, &tansu.addr), dir.path()).await;
    eprintln!(
        "started: Spindle worker in-process, ingress {}, admin {}; egress {ns}/out -> {}, {ns}/kafka-out -> tansu {}",
        worker.ingress_addr.unwrap(),
        worker.admin_addr,
        dir.path().join("out.jsonl").display(),
        tansu.addr
    );
    let out = dir.path().join("out.jsonl");

    // A round trip between two function types, state in both, the reply addressed to the
    // caller. Delayed messages: a, b and c are scheduled, c cancelled in the same call, b by a
    // later message; only a arrives.
    for (id, text) in [
        ("alice", "add 2"),
        ("alice", "add 3"),
        ("bob", "add 10"),
        ("carol", "arm"),
        ("carol", "disarm b"),
    ] {
        command(&worker, ns, id, text).await;
    }
    idle(&worker, function, "messages and delayed messages").await;
    let mut got = egress_values(&out);
    got.sort();
    assert_eq!(
        got,
        [
            "delayed:carol:ding-a",
            "echoed:alice:2#seen=1",
            "echoed:alice:5#seen=2",
            "echoed:bob:10#seen=1"
        ],
        "egress {ns}/out"
    );
    for line in egress_lines(&out) {
        assert_eq!(line["typename"], "io.statefun.types/string", "{line}");
        assert_eq!(line["egress"], format!("{ns}/out"), "{line}");
        assert!(
            line["key"].is_string(),
            "a released record has an idempotency key: {line}"
        );
    }
    let seen = |n: i64| match seen {
        SeenType::Long => long(n),
        SeenType::Int => int(n as i32),
    };
    let state = |t: &str, id: &str| worker.read_state(addr(&format!("{ns}/{t}"), id));
    assert_eq!(
        state("counter", "alice").await.unwrap(),
        [("count".to_string(), int(5))]
    );
    assert_eq!(state("counter", "bob").await.unwrap(), [("count".to_string(), int(10))]);
    assert_eq!(state("echo", "alice").await.unwrap(), [("seen".to_string(), seen(2))]);
    assert_eq!(state("echo", "bob").await.unwrap(), [("seen".to_string(), seen(1))]);
    eprintln!(
        "checked: {ns}/counter -> {ns}/echo -> caller round trips, state in both, delayed a delivered, b and c cancelled"
    );

    // A value that expires 2 s after it was written: present right after, then gone.
    let written = Instant::now();
    command(&worker, ns, "dave", "note hi").await;
    command(&worker, ns, "dave", "probe").await;
    idle(&worker, function, "note and probe").await;
    let probes = || {
        egress_values(&out)
            .into_iter()
            .filter(|v| v.starts_with("probe:dave"))
            .collect::<Vec<_>>()
    };
    assert_eq!(probes(), ["probe:dave:present:hi"]);
    let absent_after = loop {
        assert!(
            written.elapsed() < Duration::from_secs(20),
            "the note never expired: {:?}",
            probes()
        );
        command(&worker, ns, "dave", "probe").await;
        idle(&worker, function, "probe").await;
        if probes().last().unwrap() == "probe:dave:absent:" {
            break written.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        absent_after >= Duration::from_secs(2),
        "expired too early: {absent_after:?}"
    );
    let probes = probes();
    let present = probes.iter().filter(|p| *p == "probe:dave:present:hi").count();
    assert_eq!(probes.len(), present + 1, "present, present…, then absent: {probes:?}");
    assert!(egress_values(&out).contains(&"note-set:dave:hi".to_string()));
    eprintln!("checked: note (expires 2 s after write) present {present} times, absent after {absent_after:?}");

    // The SDK's Kafka egress builder: key = the relay's id, value = text + "!".
    let words = ["ada", "grace", "edsger", "barbara"];
    for (i, w) in words.iter().enumerate() {
        let body = spindle_protocol::Primitive::String(w.to_string()).encode().to_vec();
        let (status, text) = post(
            worker.ingress_addr.unwrap(),
            &format!("/{ns}/relay/id{i}"),
            "application/vnd.io.statefun.types/string",
            body,
        )
        .await;
        assert_eq!(status, 202, "{text}");
    }
    idle(&worker, function, "relay to Kafka").await;
    let client = tansu.client().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let records = loop {
        let records = tansu.read_all(&client, "relayed", 2).await;
        if records.len() >= words.len() {
            break records;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} records on topic relayed: {records:?}",
            records.len(),
            words.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut got: Vec<(String, String)> = records
        .iter()
        .map(|(_, _, r)| {
            assert!(r.headers.contains_key("idempotency-key"), "{r:?}");
            (
                String::from_utf8(r.key.clone().unwrap()).unwrap(),
                String::from_utf8(r.value.clone().unwrap()).unwrap(),
            )
        })
        .collect();
    got.sort();
    let want: Vec<(String, String)> = words
        .iter()
        .enumerate()
        .map(|(i, w)| (format!("id{i}"), format!("{w}!")))
        .collect();
    assert_eq!(got, want, "topic relayed");
    eprintln!("checked: {ns}/relay's Kafka egress records on topic relayed (tansu): {got:?}");

    assert!(
        worker.dead_letters.recent().is_empty(),
        "{:?}",
        worker.dead_letters.recent()
    );
    worker.shutdown().await;
}
