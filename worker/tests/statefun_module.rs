//! A StateFun 3.3 `module.yaml`, as its documentation writes one, given to the `spindle`
//! command unchanged:
//! - `validate_and_import_read_statefun_modules`: `spindle validate` accepts a module and names
//!   the document and field of what it cannot take; `spindle import` prints an application
//!   that `spindle validate` accepts.
//! - `a_statefun_module_runs_unchanged_tansu`: `spindle run module.yaml` with an HTTP endpoint
//!   (the official Python SDK 3.3.0 functions, started here), a Kafka ingress and a Kafka egress
//!   (a tansu broker started here) and a playground ingress. Words produced to Kafka come back
//!   relayed by the function's `kafka_egress_message` (an at-least-once egress), each once in a
//!   run without failures (read without deduplication: every key once); a greeting through the playground
//!   ingress gets the function's reply in its HTTP response.

mod support;

use std::io::BufRead;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use spindle_protocol::Primitive;
use spindle_spec::{HumanDuration, LocalProcess};
use spindle_worker::local::FunctionProcess;
use support::brokers::{Flavor, Kafka, TestRecord};
use support::*;

const SPINDLE: &str = env!("CARGO_BIN_EXE_spindle");

/// The module: every kind Spindle reads from a StateFun 3.x deployment but the playground egress.
fn module(function_port: u16, broker: &str) -> String {
    format!(
        r#"# A StateFun 3.3 module (https://nightlies.apache.org/flink/flink-statefun-docs-release-3.3/docs/modules/overview/)
kind: io.statefun.endpoints.v2/http
spec:
  functions: py/*
  urlPathTemplate: http://127.0.0.1:{function_port}/statefun
  maxNumBatchRequests: 100
  transport:
    type: io.statefun.transports.v1/async
    call: 2m
    connect: 20s
---
kind: io.statefun.kafka.v1/ingress
spec:
  id: py/words
  address: {broker}
  consumerGroupId: relayers
  startupPosition:
    type: earliest
  topics:
    - topic: words
      valueType: io.statefun.types/string
      targets:
        - py/relay
---
kind: io.statefun.kafka.v1/egress
spec:
  id: py/kafka-out
  address: {broker}
  # exactly-once (Kafka transactions) is verified on Apache Kafka only: tansu does not
  # serve transactions as Kafka does (docs/testing.md); the mapping is unit tested in spec.
  deliverySemantic:
    type: at-least-once
---
kind: io.statefun.playground.v1/ingress
spec:
  port: 8090
"#
    )
}

fn spindle(args: &[&str], dir: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(SPINDLE).current_dir(dir).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn validate_and_import_read_statefun_modules() {
    let dir = TempDir::new("statefun-module");
    let sub = dir.path().join("relay");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join("module.yaml"), module(8000, "kafka:9092")).unwrap();

    let (ok, out, err) = spindle(&["validate", "relay/module.yaml"], dir.path());
    assert!(ok, "{err}");
    assert!(
        out.contains("relay/module.yaml: StateFun module, imported as application `relay` is valid (1 functions, 2 ingresses, 1 egresses)"),
        "{out}"
    );

    let (ok, app, err) = spindle(&["import", "relay/module.yaml", "--name", "words"], dir.path());
    assert!(ok, "{err}");
    assert!(
        app.contains("# - document 3 (io.statefun.kafka.v1/egress): egress py/kafka-out"),
        "{app}"
    );
    std::fs::write(dir.path().join("app.yaml"), &app).unwrap();
    let (ok, out, err) = spindle(&["validate", "app.yaml"], dir.path());
    assert!(ok, "{err}");
    assert!(
        out.contains("application `words` is valid (1 functions, 2 ingresses, 1 egresses)"),
        "{out}"
    );

    // Kinesis: the document and kind are named, and nothing runs.
    let kinesis = format!(
        "{}---\nkind: io.statefun.kinesis.v1/ingress\nspec:\n  id: py/clicks\n  awsRegion: {{type: default}}\n",
        module(8000, "kafka:9092")
    );
    std::fs::write(sub.join("module.yaml"), kinesis).unwrap();
    for cmd in ["validate", "run", "import"] {
        let (ok, _, err) = spindle(&[cmd, "relay/module.yaml"], dir.path());
        assert!(!ok, "{cmd} accepted a Kinesis ingress");
        assert!(
            err.contains("relay/module.yaml document 5: kind io.statefun.kinesis.v1/ingress is not supported: Spindle has no AWS Kinesis connector"),
            "{cmd}: {err}"
        );
    }
    // A field: the Kafka ingress's startup position.
    let offsets = module(8000, "kafka:9092").replace("type: earliest", "type: specific-offsets");
    std::fs::write(sub.join("module.yaml"), offsets).unwrap();
    let (ok, _, err) = spindle(&["validate", "relay/module.yaml"], dir.path());
    assert!(!ok);
    assert!(
        err.contains("relay/module.yaml document 2: kind io.statefun.kafka.v1/ingress: spec.startupPosition.type `specific-offsets` is not supported"),
        "{err}"
    );
    // `import` of an application that is not a module says so.
    let (ok, _, err) = spindle(&["import", "app.yaml"], dir.path());
    assert!(!ok);
    assert!(err.contains("app.yaml is not a StateFun module"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statefun_module_runs_unchanged_tansu() {
    init_logs();
    let Some(broker) = Kafka::start(Flavor::Tansu, "a_statefun_module_runs_unchanged").await else {
        return;
    };
    broker.create_topic("words", 2).await;
    broker.create_topic("relayed", 2).await;
    let dir = TempDir::new("statefun-module-run");
    let venv = python_venv();
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
        .expect("python functions start");
    eprintln!(
        "started: tansu at {}, StateFun Python SDK 3.3.0 functions on 127.0.0.1:{}",
        broker.addr, function.port
    );
    let file = dir.path().join("module.yaml");
    std::fs::write(&file, module(function.port, &broker.addr)).unwrap();

    let mut run = Command::new(SPINDLE)
        .current_dir(dir.path())
        .args([
            "run",
            "module.yaml",
            "--ingress-addr",
            "127.0.0.1:0",
            "--admin-addr",
            "127.0.0.1:0",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eprintln!("started: spindle run module.yaml (pid {})", run.id());
    // The ingress address from `spindle run`'s banner; the rest of its output passes through.
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = run.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[spindle run] {line}");
            if let Some(rest) = line.split("ingress http://").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or_default().to_string());
            }
        }
    });
    let ingress: SocketAddr = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("spindle run printed no ingress address within 60 s")
        .parse()
        .unwrap();

    let client = broker.client().await;
    let words = ["ada", "grace", "edsger", "barbara", "tony", "frances"];
    for (i, w) in words.iter().enumerate() {
        let r = TestRecord::new(Some(&format!("id{i}")), &Primitive::String(w.to_string()).encode());
        broker.produce(&client, "words", i as i32 % 2, vec![r]).await;
    }

    // The playground ingress is an HTTP ingress: a request waiting for the function's reply.
    let (status, _, body) = post_with(
        ingress,
        "/py/greeter/ann",
        "application/vnd.py/Greet",
        br#"{"name": "Ann"}"#.to_vec(),
        &[("spindle-reply", "wait")],
    )
    .await
    .expect("the ingress answers");
    assert_eq!((status, body.as_str()), (200, "Hello Ann, visit 1"));

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let out = broker.read_all(&client, "relayed", 2).await;
        if out.len() >= words.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after 120 s, {} of {} relayed records: {out:?}",
            out.len(),
            words.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = rustix::process::Pid::from_raw(run.id() as i32).unwrap();
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let status = run.wait().unwrap();
    function.stop().await;
    // Read again after the stop: a repeat produced meanwhile would show here.
    let out = broker.read_all(&client, "relayed", 2).await;
    let mut got: Vec<(String, String)> = out
        .iter()
        .map(|(_, _, r)| {
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
    assert_eq!(got, want, "every word relayed once, read without deduplication");
    assert!(status.success(), "spindle run exited with {status} after SIGTERM");
}
