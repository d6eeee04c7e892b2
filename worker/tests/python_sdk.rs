//! Compatibility with the official Apache Flink StateFun Python SDK (3.3.0): real SDK code in a
//! real Python process, driven through Spindle's HTTP ingress. The venv is created on first use
//! by `e2e/python/setup-venv.sh` (in `$SPINDLE_PY_VENV`, default `target/py-venv`).

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use spindle_spec::{HumanDuration, LocalProcess, TypeName};
use spindle_worker::local::{FunctionProcess, InputRecord, send_input};
use spindle_worker::{Address, Value};
use support::*;

fn cmd(target: &str, value: serde_json::Value) -> InputRecord {
    InputRecord {
        target: target.into(),
        typename: "py/Command".into(),
        value,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_functions_run_unchanged() {
    let venv = python_venv();
    let dir = TempDir::new("python");
    let local = LocalProcess {
        command: vec![
            venv.join("bin/python").display().to_string(),
            workspace_root().join("e2e/python/functions.py").display().to_string(),
        ],
        env: Default::default(),
        working_dir: None,
        startup_timeout: HumanDuration::from_secs(60),
    };
    let function = FunctionProcess::start("py/*", &local, dir.path())
        .await
        .expect("python function starts");
    eprintln!(
        "started: StateFun Python SDK 3.3.0 functions (aiohttp) on 127.0.0.1:{}, venv {}",
        function.port,
        venv.display()
    );
    let yaml = format!(
        r#"
apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {{name: python-compat}}
spec:
  functions:
    - typename: py/*
      endpoint: http://127.0.0.1:{port}/statefun
      maxBatchSize: 10
  ingresses:
    - name: web
      http: {{}}
  egresses:
    - typename: py/out
      file: {{path: out.jsonl}}
"#,
        port = function.port
    );
    let worker = start_worker(&yaml, dir.path()).await;
    let ingress = worker.ingress_addr.unwrap();
    eprintln!(
        "started: Spindle worker, ingress {ingress}, admin {}",
        worker.admin_addr
    );
    let out = dir.path().join("out.jsonl");

    // Messages between two function types, state in both, a round trip back to the caller.
    let records = [
        cmd("py/counter/alice", json!({"op": "add", "n": 2})),
        cmd("py/counter/alice", json!({"op": "add", "n": 3})),
        cmd("py/counter/bob", json!({"op": "add", "n": 10})),
        // Delayed messages: a, b and c are scheduled, c cancelled in the same call, b by a
        // later message; only a arrives.
        cmd("py/counter/carol", json!({"op": "arm"})),
        cmd("py/counter/carol", json!({"op": "disarm", "token": "b"})),
    ];
    send_input(ingress, &records).await.unwrap();
    worker.wait_idle(Duration::from_secs(30)).await.unwrap();
    assert!(
        worker.dead_letters.recent().is_empty(),
        "{:?}",
        worker.dead_letters.recent()
    );
    let mut got = egress_values(&out);
    got.sort();
    assert_eq!(
        got,
        [
            "delayed:carol:ding-a",
            "echoed:alice:2#seen=1",
            "echoed:alice:5#seen=2",
            "echoed:bob:10#seen=1",
        ]
    );
    let lines = egress_lines(&out);
    assert!(
        lines
            .iter()
            .all(|l| l["typename"] == "io.statefun.types/string" && l["egress"] == "py/out")
    );

    let addr = |t: &str, id: &str| Address::new(TypeName::parse(t).unwrap(), id);
    let state = worker.read_state(addr("py/counter", "alice")).await.unwrap();
    assert_eq!(state, [("count".to_string(), int(5))]);
    let state = worker.read_state(addr("py/echo", "alice")).await.unwrap();
    assert_eq!(state, [("seen".to_string(), long(2))]);
    let state = worker.read_state(addr("py/echo", "bob")).await.unwrap();
    assert_eq!(state, [("seen".to_string(), long(1))]);

    // A value that expires 2 s after it was written: present right after, then gone.
    let written = Instant::now();
    send_input(
        ingress,
        &[
            cmd("py/counter/dave", json!({"op": "note", "text": "hi"})),
            cmd("py/counter/dave", json!({"op": "probe"})),
        ],
    )
    .await
    .unwrap();
    worker.wait_idle(Duration::from_secs(30)).await.unwrap();
    let probes = |out: &std::path::Path| {
        egress_values(out)
            .into_iter()
            .filter(|v| v.starts_with("probe:dave"))
            .collect::<Vec<_>>()
    };
    assert_eq!(probes(&out), ["probe:dave:present:hi"]);
    let mut absent_after = None;
    while absent_after.is_none() {
        assert!(written.elapsed() < Duration::from_secs(20), "the note never expired");
        send_input(ingress, &[cmd("py/counter/dave", json!({"op": "probe"}))])
            .await
            .unwrap();
        worker.wait_idle(Duration::from_secs(30)).await.unwrap();
        if probes(&out).last().unwrap().contains(":absent:") {
            absent_after = Some(written.elapsed());
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let absent_after = absent_after.unwrap();
    assert!(
        absent_after >= Duration::from_secs(2),
        "expired too early: {absent_after:?}"
    );
    assert!(egress_values(&out).contains(&"note-set:dave:hi".to_string()));

    assert!(
        worker.dead_letters.recent().is_empty(),
        "{:?}",
        worker.dead_letters.recent()
    );
    worker.shutdown().await;
    function.stop().await;
}

fn int(v: i32) -> Value {
    let p = spindle_protocol::Primitive::Int(v);
    Value::new(p.typename(), p.encode())
}

fn long(v: i64) -> Value {
    let p = spindle_protocol::Primitive::Long(v);
    Value::new(p.typename(), p.encode())
}
