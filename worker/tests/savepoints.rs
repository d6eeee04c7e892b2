//! Savepoints, restoreFrom and state from a terminal, through the real `spindle` command
//! against real workers (two, in this process, connected over loopback gRPC, with the Rust-SDK
//! counter function): `checkpoints save` on worker 0's admin endpoint, `state get|list|export`
//! from the running workers and offline from the savepoint in storage (a directory, and moto
//! S3), `checkpoints list|inspect`, and a new application started with `restoreFrom` the
//! savepoint of another — with exactly the savepoint's state, although retention deleted every
//! other checkpoint of that time. And the errors: a taken name, an unknown savepoint, another
//! key-group count, a damaged part.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use spindle_spec::TypeName;
use spindle_worker::{Address, AppConfig, Listeners, Worker, WorkerOptions};
use support::moto::Moto;
use support::*;
use tokio::net::TcpListener;

const SPINDLE: &str = env!("CARGO_BIN_EXE_spindle");
const IDLE: Duration = Duration::from_secs(60);

fn spindle(args: &[&str], env: &[(String, String)]) -> (bool, String, String) {
    let out = Command::new(SPINDLE)
        .args(args)
        .envs(env.iter().cloned())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

async fn functions() -> (String, tokio::sync::watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
    let functions = Arc::new(spindle_example_greeter::functions());
    tokio::spawn(spindle_sdk::serve(listener, functions, async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    eprintln!("started: example functions (Rust SDK) on {addr}");
    (format!("http://{addr}/statefun"), stop)
}

fn app(tokens: &Path, name: &str, endpoint: &str, storage: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {{name: {name}}}
spec:
  keyGroups: 16
  functions:
    - typename: example/*
      endpoint: {endpoint}
  ingresses:
    - name: web
      http: {{}}
  egresses:
    - typename: example/totals
      file: {{path: totals.jsonl}}
  checkpoint:
    interval: 100ms
    retained: 1
    storage: "{storage}"
{extra}
  admin:
    auth: {{tokensFile: "{tokens}"}}
"#,
        tokens = tokens.display()
    )
}

/// The token the test applications' admin endpoints accept (`spec.admin.auth`).
const TOKEN: &str = "s3cr3t-admin";

async fn add(ingress: std::net::SocketAddr, key: &str, seq: u64, value: i64) {
    let body = serde_json::json!({"seq": seq, "value": value}).to_string().into_bytes();
    let (status, body) = post(
        ingress,
        &format!("/example/counter/{key}"),
        "application/vnd.example/Add",
        body,
    )
    .await;
    assert_eq!(status, 202, "{body}");
}

async fn totals(workers: &[Worker], keys: &[&str]) -> BTreeMap<String, i64> {
    let mut out = BTreeMap::new();
    for key in keys {
        let addr = Address::new(TypeName::parse("example/counter").unwrap(), *key);
        for w in workers {
            for (name, value) in w.read_state(addr.clone()).await.unwrap() {
                if name == "total"
                    && let Some(spindle_protocol::Primitive::Long(n)) =
                        spindle_protocol::Primitive::decode(&value.typename, &value.bytes)
                {
                    out.insert(key.to_string(), n);
                }
            }
        }
    }
    out
}

const KEYS: [&str; 5] = ["k0", "k1", "k2", "k3", "k4"];

/// The whole walk-through on one storage (`storage` URL; `env` reaches it).
async fn walk_through(dir: &Path, storage: &str, env: &[(String, String)]) {
    let tokens = dir.join("admin-tokens");
    std::fs::write(&tokens, format!("# the tests' admin token\n{TOKEN}\n")).unwrap();
    let no_token = env;
    let with_token: Vec<(String, String)> = env
        .iter()
        .cloned()
        .chain([("SPINDLE_ADMIN_TOKEN".to_string(), TOKEN.to_string())])
        .collect();
    let env = &with_token[..];
    let (endpoint, _stop) = functions().await;
    let workers = start_cluster(&app(&tokens, "source", &endpoint, storage, ""), dir, 2).await;
    let ingress = workers[0].ingress_addr.unwrap();
    let admins: Vec<String> = workers.iter().map(|w| format!("http://{}", w.admin_addr)).collect();
    for seq in 0..40u64 {
        add(ingress, KEYS[(seq % 5) as usize], seq, seq as i64 + 1).await;
    }
    wait_cluster_idle(&workers, IDLE).await;
    let saved = totals(&workers, &KEYS).await;
    assert_eq!(saved.len(), 5, "{saved:?}");

    // Data and savepoints need a token of spec.admin.auth.
    let (ok, _, err) = spindle(&["checkpoints", "save", "no-token", "--admin", &admins[0]], no_token);
    assert!(!ok && err.contains("401"), "{err}");
    let (ok, _, err) = spindle(&["state", "export", "--admin", &admins[0]], no_token);
    assert!(!ok && err.contains("401"), "{err}");

    // A savepoint of the running application, through worker 0.
    let asked = std::time::Instant::now();
    let (ok, out, err) = spindle(&["checkpoints", "save", "before-upgrade", "--admin", &admins[0]], env);
    assert!(ok, "{err}");
    let took = asked.elapsed();
    let n: u64 = out
        .split("checkpoint ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no checkpoint in {out}"));
    eprintln!("savepoint before-upgrade: checkpoint {n}, `spindle checkpoints save` took {took:?} (interval 100ms)");
    let (ok, _, err) = spindle(&["checkpoints", "save", "before-upgrade", "--admin", &admins[0]], env);
    assert!(
        !ok && err.contains("savepoint `before-upgrade` exists already"),
        "{err}"
    );
    let (ok, _, err) = spindle(&["checkpoints", "save", "before-upgrade", "--admin", &admins[1]], env);
    assert!(
        !ok && err.contains("worker 1 does not coordinate checkpoints: ask worker 0"),
        "{err}"
    );

    // State from the running workers (each owns some key groups: ask both).
    let all = admins.join(",");
    let (ok, out, err) = spindle(&["state", "get", "example/counter/k1", "--admin", &all], env);
    assert!(ok, "{err}");
    let got: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(got["total"]["typename"], "io.statefun.types/long", "{out}");
    assert_eq!(got["total"]["value"], saved["k1"], "{out}");
    let (ok, out, err) = spindle(
        &[
            "state",
            "list",
            "example/counter",
            "--prefix",
            "k",
            "--limit",
            "3",
            "--admin",
            &all,
        ],
        env,
    );
    assert!(ok, "{err}");
    let ids: Vec<String> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ids, ["k0", "k1", "k2"], "{out}");
    let (ok, _, err) = spindle(&["state", "get", "example/counter/nobody", "--admin", &all], env);
    assert!(!ok && err.contains("no state at example/counter/nobody"), "{err}");

    // Later changes, and enough checkpoints that retention (retained: 1) has run past it.
    add(ingress, "k0", 100, 1000).await;
    let target = n + 12;
    wait_until("12 more checkpoints", IDLE, || {
        workers[0].progress().completed >= target
    })
    .await;
    wait_cluster_idle(&workers, IDLE).await;
    for w in workers {
        w.shutdown().await;
    }

    // Offline, from storage.
    let at = ["--storage", storage, "--application", "source"];
    let (ok, out, err) = spindle(&[&["checkpoints", "list"][..], &at[..]].concat(), env);
    assert!(ok, "{err}");
    eprintln!("spindle checkpoints list:\n{out}");
    let rows: Vec<&str> = out.lines().skip(1).collect();
    assert!(
        rows[0].trim_start().starts_with(&format!("{n} ")) && rows[0].ends_with("before-upgrade"),
        "{out}"
    );
    // Retention (at every fourth checkpoint, keeping 1) deleted the others of that time. The
    // last retention known to have ended is the one at the highest multiple of 4 at least 4
    // checkpoints before the end: a later one may still be running when the workers stop.
    let swept = (target - 4) / 4 * 4;
    let others: Vec<u64> = rows[1..]
        .iter()
        .map(|r| r.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert!(
        swept > n && !others.is_empty() && others.iter().all(|&o| o >= swept),
        "retention at checkpoint {swept} should have deleted every checkpoint before it but {n}:\n{out}"
    );
    let (ok, out, err) = spindle(
        &[&["checkpoints", "inspect", "before-upgrade"][..], &at[..]].concat(),
        env,
    );
    assert!(ok, "{err}");
    let inspected: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(inspected["checkpoint"], n);
    assert_eq!(inspected["savepoints"], serde_json::json!(["before-upgrade"]));
    assert_eq!(inspected["workers"], 2);
    assert_eq!(inspected["keyGroups"], 16);
    assert_eq!(
        inspected["addressesByType"],
        serde_json::json!({"example/counter": 5}),
        "{out}"
    );
    assert_eq!(inspected["heldEgress"], serde_json::json!([]), "{out}");
    assert!(
        inspected["size"].as_u64().unwrap() > 0 && inspected["parts"].as_array().unwrap().len() == 2,
        "{out}"
    );
    let (ok, out, err) = spindle(
        &[
            &[
                "state",
                "export",
                "--type",
                "example/counter",
                "--checkpoint",
                "before-upgrade",
            ][..],
            &at[..],
        ]
        .concat(),
        env,
    );
    assert!(ok, "{err}");
    let exported: BTreeMap<String, i64> = out
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["id"].as_str().unwrap().to_string(),
                v["state"]["total"]["value"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(exported, saved, "the savepoint holds the state when it was taken");
    let (ok, _, err) = spindle(&[&["checkpoints", "inspect", "nope"][..], &at[..]].concat(), env);
    assert!(
        !ok && err.contains("no savepoint `nope` (savepoints there: before-upgrade)"),
        "{err}"
    );

    // A new application from the savepoint of `source`: exactly its state.
    let copy = app(
        &tokens,
        "copy",
        &endpoint,
        storage,
        "    restoreFrom: before-upgrade\n    restoreFromApplication: source",
    );
    let started = std::time::Instant::now();
    let copied = start_cluster(&copy, &dir.join("copy"), 2).await;
    wait_until("the copy restored", IDLE, || copied[0].progress().restored > 0).await;
    eprintln!(
        "restoreFrom another application ({storage}): copied and restored in {:?}",
        started.elapsed()
    );
    wait_cluster_idle(&copied, IDLE).await;
    assert_eq!(
        totals(&copied, &KEYS).await,
        saved,
        "restoreFrom: exactly the savepoint's state"
    );
    add(copied[0].ingress_addr.unwrap(), "k4", 200, 5).await;
    wait_cluster_idle(&copied, IDLE).await;
    let restored = copied[0].progress().restored;
    for w in copied {
        w.shutdown().await;
    }
    // A restart resumes from its own newest checkpoint, not from the savepoint again.
    let copied = start_cluster(&copy, &dir.join("copy"), 2).await;
    wait_until("the copy resumed", IDLE, || copied[0].progress().restored > restored).await;
    wait_cluster_idle(&copied, IDLE).await;
    assert_eq!(
        totals(&copied, &["k4"]).await["k4"],
        saved["k4"] + 5,
        "restarted, not restored again"
    );
    for w in copied {
        w.shutdown().await;
    }

    // The source itself, restarted from a checkpoint by number (its savepoint's): no copy,
    // a new manifest over the same objects; k0's later +1000 is gone.
    let again = app(
        &tokens,
        "source",
        &endpoint,
        storage,
        &format!("    restoreFrom: \"{n}\""),
    );
    let restarted = start_cluster(&again, dir, 2).await;
    wait_until("the source restored", IDLE, || restarted[0].progress().restored > n).await;
    wait_cluster_idle(&restarted, IDLE).await;
    assert_eq!(totals(&restarted, &KEYS).await, saved, "restoreFrom {n}: its state");
    for w in restarted {
        w.shutdown().await;
    }

    // Errors name what is wrong.
    let from_savepoint = "    restoreFrom: before-upgrade\n    restoreFromApplication: source";
    let err = refused(
        &app(
            &tokens,
            "e1",
            &endpoint,
            storage,
            "    restoreFrom: nope\n    restoreFromApplication: source",
        ),
        &dir.join("e1"),
    )
    .await;
    assert!(
        err.contains("spec.checkpoint.restoreFrom:")
            && err.contains("no savepoint `nope` (savepoints there: before-upgrade)"),
        "{err}"
    );
    let other_groups = app(&tokens, "e2", &endpoint, storage, from_savepoint).replace("keyGroups: 16", "keyGroups: 32");
    let err = refused(&other_groups, &dir.join("e2")).await;
    assert!(
        err.contains(&format!("checkpoint {n} of"))
            && err.contains("has 16 key groups, this application 32: the key-group count cannot change"),
        "{err}"
    );
    if let Some(root) = storage.strip_prefix('/').map(|_| Path::new(storage)) {
        // A damaged part of the savepoint: found where it is read, named.
        let part = inspected["parts"][0]["key"].as_str().unwrap();
        let file = root.join(part);
        let mut bytes = std::fs::read(&file).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&file, &bytes).unwrap();
        let (ok, _, err) = spindle(
            &[&["checkpoints", "inspect", "before-upgrade"][..], &at[..]].concat(),
            env,
        );
        assert!(!ok && err.contains("is damaged") && err.contains(part), "{err}");
        let err = refused(&app(&tokens, "e3", &endpoint, storage, from_savepoint), &dir.join("e3")).await;
        assert!(err.contains("is damaged") && err.contains(part), "{err}");
    }
}

/// Starts one worker of `yaml`, which must refuse: the error.
async fn refused(yaml: &str, dir: &Path) -> String {
    init_logs();
    let spec = spindle_spec::from_yaml_str(yaml, "test app").unwrap();
    let listeners = Listeners {
        ingress: Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
        admin: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        peer: None,
    };
    let options = WorkerOptions {
        data_dir: Some(dir.join("data")),
        ..WorkerOptions::default()
    };
    match Worker::start(AppConfig::resolve(&spec, dir), options, listeners).await {
        Ok(_) => panic!("started:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn savepoint_restore_from_and_state_on_a_directory() {
    let dir = TempDir::new("savepoints");
    let storage = dir.path().join("store").display().to_string();
    walk_through(dir.path(), &storage, &[]).await;
}

/// The same on moto S3. The workers in this process read the `AWS_*` variables, so the walk
/// through runs in a child process of this test binary that has them (the test below).
#[test]
fn savepoint_restore_from_and_state_on_s3() {
    let moto = Moto::start("savepoints");
    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "s3_walk_through_with_the_aws_variables",
            "--ignored",
            "--nocapture",
        ])
        .envs(moto.env())
        .env("SPINDLE_TEST_S3_URL", moto.url("apps"))
        .status()
        .unwrap();
    assert!(status.success(), "the walk through on moto S3 failed (output above)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run by savepoint_restore_from_and_state_on_s3, with its moto's AWS_* variables"]
async fn s3_walk_through_with_the_aws_variables() {
    let Ok(url) = std::env::var("SPINDLE_TEST_S3_URL") else {
        println!("skip: SPINDLE_TEST_S3_URL is not set (savepoint_restore_from_and_state_on_s3 sets it)");
        return;
    };
    let env: Vec<(String, String)> = std::env::vars().filter(|(k, _)| k.starts_with("AWS_")).collect();
    let dir = TempDir::new("savepoints-s3");
    walk_through(dir.path(), &url, &env).await;
}

/// `spindle run` in the background (a local application, its Python StateFun SDK functions
/// launched from `local.command`), its admin endpoint on `admin`; stdout and stderr in `dir`.
fn spawn_run(dir: &Path, file: &str, admin: std::net::SocketAddr, input: Option<&str>) -> std::process::Child {
    let log = std::fs::File::create(dir.join(format!("{file}.log"))).unwrap();
    let mut cmd = Command::new(SPINDLE);
    cmd.current_dir(dir)
        .args([
            "run",
            file,
            "--ingress-addr",
            "127.0.0.1:0",
            "--admin-addr",
            &admin.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(log);
    if let Some(i) = input {
        cmd.args(["--input", i]);
    }
    cmd.spawn().unwrap()
}

/// SIGTERM (a clean stop: a final checkpoint), then waits for the exit.
fn stop(mut child: std::process::Child) {
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let status = child.wait().unwrap();
    assert!(status.success(), "spindle run exited with {status}");
}

async fn wait_status(admin: std::net::SocketAddr, what: &str, cond: impl Fn(&serde_json::Value) -> bool) {
    let deadline = tokio::time::Instant::now() + IDLE;
    loop {
        let status = match tokio::net::TcpStream::connect(admin).await {
            Ok(_) => {
                let (code, body) = get(admin, "/status").await;
                (code == 200).then(|| serde_json::from_str::<serde_json::Value>(&body).unwrap())
            }
            Err(_) => None,
        };
        if status.as_ref().is_some_and(&cond) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not after {IDLE:?}; last /status: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// On a local application (`spindle run`): a savepoint through its admin endpoint, its state
/// from the terminal, and a second local application started from that savepoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_application_saves_and_another_starts_from_its_savepoint() {
    let dir = TempDir::new("savepoints-local");
    std::fs::write(
        dir.path().join("app.yaml"),
        python_local_app("local", "  checkpoint: {interval: 200ms}"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("input.jsonl"),
        "{\"target\": \"py/counter/zoe\", \"typename\": \"py/Command\", \"value\": {\"op\": \"add\", \"n\": 4}}\n\
         {\"target\": \"py/counter/zoe\", \"typename\": \"py/Command\", \"value\": {\"op\": \"add\", \"n\": 1}}\n",
    )
    .unwrap();
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    eprintln!("running: spindle run app.yaml (Python StateFun SDK functions), admin at {admin}");
    let run = spawn_run(dir.path(), "app.yaml", admin, Some("input.jsonl"));
    wait_status(admin, "both records processed", |s| {
        s["ingressAccepted"] == 2 && s["idle"] == true && s["completedCheckpoint"].as_u64() > Some(0)
    })
    .await;
    let url = format!("http://{admin}");
    let (ok, out, err) = spindle(&["checkpoints", "save", "before", "--admin", &url], &[]);
    assert!(ok, "{err}");
    assert!(out.starts_with("savepoint `before`: checkpoint "), "{out}");
    let (ok, out, err) = spindle(&["state", "get", "py/counter/zoe", "--admin", &url], &[]);
    assert!(ok, "{err}");
    let state: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        state["count"],
        serde_json::json!({"typename": "io.statefun.types/int", "value": 5}),
        "{out}"
    );
    let (ok, out, err) = spindle(&["state", "export", "--admin", &url], &[]);
    assert!(ok, "{err}");
    let types: Vec<String> = out
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!("{}/{}", v["typename"].as_str().unwrap(), v["id"].as_str().unwrap())
        })
        .collect();
    // The counter tells py/echo, which keeps its own count.
    assert_eq!(types, ["py/counter/zoe", "py/echo/zoe"], "{out}");
    stop(run);

    // Another application, in the same directory (so the same default storage), from it.
    std::fs::write(
        dir.path().join("copy.yaml"),
        python_local_app(
            "local-copy",
            "  checkpoint: {interval: 200ms, restoreFrom: before, restoreFromApplication: local}",
        )
        .replace("out/py.jsonl", "out/copy.jsonl"),
    )
    .unwrap();
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let run = spawn_run(dir.path(), "copy.yaml", admin, None);
    wait_status(admin, "the copy restored", |s| {
        s["restoredCheckpoint"].as_u64() > Some(0)
    })
    .await;
    let url = format!("http://{admin}");
    let (ok, out, err) = spindle(&["state", "get", "py/counter/zoe", "--admin", &url], &[]);
    assert!(ok, "{err}");
    let state: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(state["count"]["value"], 5, "the copy has the savepoint's state: {out}");
    stop(run);
    let storage = dir.path().join(".spindle/checkpoints").display().to_string();
    let (ok, out, err) = spindle(
        &[
            "checkpoints",
            "inspect",
            "before",
            "--storage",
            &storage,
            "--application",
            "local",
        ],
        &[],
    );
    assert!(ok, "{err}");
    let inspected: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(inspected["addressesByType"]["py/counter"], 1, "{out}");
}
