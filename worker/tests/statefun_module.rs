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

use std::collections::BTreeMap;
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

/// The playground's shopping cart as its module.yaml is written (StateFun 3.x documentation,
/// flink-statefun-playground java/shopping-cart): one HTTP endpoint for `com.example/*`, one
/// Kafka ingress with three topics, one Kafka egress with `deliverySemantic: exactly-once`.
fn shopping_cart_module(function_port: u16, broker: &str) -> String {
    format!(
        r#"kind: io.statefun.endpoints.v2/http
spec:
  functions: com.example/*
  urlPathTemplate: http://127.0.0.1:{function_port}/statefun
  transport:
    type: io.statefun.transports.v1/async
---
kind: io.statefun.kafka.v1/ingress
spec:
  id: com.example/shopping-cart
  address: {broker}
  consumerGroupId: shopping-cart
  startupPosition:
    type: earliest
  topics:
    - topic: restock-items
      valueType: com.example/RestockItem
      targets:
        - com.example/stock
    - topic: add-to-cart
      valueType: com.example/AddToCart
      targets:
        - com.example/user-shopping-cart
    - topic: checkout
      valueType: com.example/Checkout
      targets:
        - com.example/user-shopping-cart
---
kind: io.statefun.kafka.v1/egress
spec:
  id: com.example/receipts
  address: {broker}
  deliverySemantic:
    type: exactly-once
    transactionTimeout: 15min
"#
    )
}

const CART_PARTITIONS: i32 = 2;
const USERS: usize = 24;
/// Items and their restocks; `rare` has one, which the one user asking for two cannot get.
const ITEMS: [(&str, i64); 5] = [("socks", 100), ("hat", 60), ("scarf", 80), ("gloves", 70), ("rare", 1)];

/// What user `u` adds: (item, quantity), deterministic; user 5 also asks for two `rare`.
fn adds_of(u: usize) -> Vec<(&'static str, i64)> {
    let mut adds: Vec<(&'static str, i64)> = (0..(u % 3) + 1)
        .map(|j| (ITEMS[(u + j) % 4].0, ((u * 7 + j) % 3) as i64 + 1))
        .collect();
    if u == 5 {
        adds.push(("rare", 2));
    }
    adds
}

/// Every record of `topic` a `read_committed` consumer sees, values as text (kafka-python,
/// `e2e/kafka/read_all.py`: no deduplication).
fn read_committed(broker: &Kafka, topic: &str, partitions: i32) -> Vec<String> {
    let script = workspace_root().join("e2e/kafka/read_all.py");
    let out = Command::new(python_venv().join("bin/python"))
        .arg(&script)
        .args([&broker.addr, topic, &partitions.to_string(), "read_committed"])
        .stderr(Stdio::inherit())
        .output()
        .expect("running read_all.py");
    assert!(out.status.success(), "{} failed", script.display());
    let rows: Vec<(i32, i64, String, Option<String>)> =
        serde_json::from_slice(&out.stdout).expect("read_all.py prints JSON");
    rows.into_iter().map(|(_, _, value, _)| value).collect()
}

async fn wait_for<F: std::future::Future<Output = Result<(), String>>>(what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match check().await {
            Ok(()) => return,
            Err(missing) if Instant::now() >= deadline => panic!("after 120 s, {what}: {missing}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Kills `spindle run` (which stops its workers) when the test fails before stopping it.
struct KillOnPanic(u32);

impl Drop for KillOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(pid) = rustix::process::Pid::from_raw(self.0 as i32)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

/// `spindle run module.yaml --workers 2` with the shopping cart (Python SDK 3.3.0) on `flavor`:
/// restocks, then adds (cart → stock → reply to the cart, across workers), then checkouts;
/// the receipts a `read_committed` reader sees are exactly the expected ones, each once, read
/// without deduplication — also after the run stopped (nothing written twice on the way out).
async fn shopping_cart_runs_unchanged(flavor: Flavor, test: &str) {
    init_logs();
    let Some(broker) = Kafka::start(flavor, test).await else {
        return;
    };
    for topic in ["restock-items", "add-to-cart", "checkout", "receipts"] {
        broker.create_topic(topic, CART_PARTITIONS).await;
    }
    let dir = TempDir::new("statefun-shopping-cart");
    let local = LocalProcess {
        command: vec![
            python_venv().join("bin/python").display().to_string(),
            workspace_root()
                .join("e2e/python/shopping_cart.py")
                .display()
                .to_string(),
        ],
        env: Default::default(),
        working_dir: None,
        startup_timeout: HumanDuration::from_secs(60),
    };
    let function = FunctionProcess::start("com.example/*", &local, dir.path())
        .await
        .expect("shopping cart functions start");
    eprintln!(
        "started: {:?} broker at {}, shopping cart functions (StateFun Python SDK 3.3.0) on 127.0.0.1:{}",
        broker.flavor, broker.addr, function.port
    );
    std::fs::write(
        dir.path().join("module.yaml"),
        shopping_cart_module(function.port, &broker.addr),
    )
    .unwrap();

    let mut run = Command::new(SPINDLE)
        .current_dir(dir.path())
        .args(["run", "module.yaml", "--workers", "2"])
        .args(["--ingress-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    eprintln!("started: spindle run module.yaml --workers 2 (pid {})", run.id());
    let _reap = KillOnPanic(run.id());
    // The workers' admin addresses from `spindle run`'s lines, then its readiness line.
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = run.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[spindle run] {line}");
            if let Some(rest) = line.split(", admin http://").nth(1) {
                let _ = tx.send(Some(rest.split([',', ' ']).next().unwrap_or_default().to_string()));
            } else if line.contains("workers ready") {
                let _ = tx.send(None);
            }
        }
    });
    let mut admin: Vec<SocketAddr> = Vec::new();
    while let Some(a) = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("spindle run did not report 2 ready workers within 120 s")
    {
        admin.push(a.parse().unwrap());
    }
    assert_eq!(admin.len(), 2, "two workers: {admin:?}");

    let client = broker.client().await;
    let json = |v: serde_json::Value| v.to_string();
    let produce = |topic: &'static str, records: Vec<(String, String)>| {
        let (broker, client) = (&broker, &client);
        async move {
            for (i, (key, value)) in records.into_iter().enumerate() {
                let r = TestRecord::new(Some(&key), value.as_bytes());
                broker.produce(client, topic, i as i32 % CART_PARTITIONS, vec![r]).await;
            }
        }
    };
    let stock_of = |item: &'static str| {
        let admin = admin.clone();
        async move { support::procs::state(&admin, &format!("/com.example/stock/{item}"), "stock").await }
    };
    let stock_of = &stock_of;

    // 1. Restocks, until every item's stock shows them.
    produce(
        "restock-items",
        ITEMS
            .iter()
            .map(|(item, q)| {
                (
                    item.to_string(),
                    json(serde_json::json!({"itemId": item, "quantity": q})),
                )
            })
            .collect(),
    )
    .await;
    wait_for("restocks applied", || async move {
        for (item, q) in ITEMS {
            let got = stock_of(item).await;
            if got != Some(q) {
                return Err(format!("stock of {item} is {got:?}, want {q}"));
            }
        }
        Ok(())
    })
    .await;

    // 2. Adds: the expected baskets (everything in stock but the second `rare`).
    let mut baskets: Vec<BTreeMap<&str, i64>> = vec![BTreeMap::new(); USERS];
    let mut remaining: BTreeMap<&str, i64> = ITEMS.into_iter().collect();
    let mut adds = Vec::new();
    for (u, basket) in baskets.iter_mut().enumerate() {
        for (item, q) in adds_of(u) {
            adds.push((
                format!("u{u}"),
                json(serde_json::json!({"userId": format!("u{u}"), "itemId": item, "quantity": q})),
            ));
            if remaining[item] >= q {
                *remaining.get_mut(item).unwrap() -= q;
                *basket.entry(item).or_default() += q;
            }
        }
    }
    produce("add-to-cart", adds).await;
    let (baskets_ref, admin_ref, remaining_ref) = (&baskets, &admin, &remaining);
    wait_for("adds applied to stocks and baskets", || async move {
        for (item, q) in remaining_ref {
            let got = stock_of(item).await;
            if got != Some(*q) {
                return Err(format!("stock of {item} is {got:?}, want {q}"));
            }
        }
        for (u, want) in baskets_ref.iter().enumerate() {
            let mut got = None;
            for a in admin_ref {
                let (code, body) = get(*a, &format!("/state/com.example/user-shopping-cart/u{u}")).await;
                if code == 200 {
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                    if !v["basket"]["value"].is_null() {
                        got = Some(v["basket"]["value"].clone());
                    }
                }
            }
            if got.as_ref() != Some(&serde_json::json!(want)) {
                return Err(format!("basket of u{u} is {got:?}, want {want:?}"));
            }
        }
        Ok(())
    })
    .await;

    // 3. Checkouts: one receipt per user, exactly once, through the transactional egress.
    produce(
        "checkout",
        (0..USERS)
            .map(|u| (format!("u{u}"), json(serde_json::json!({"userId": format!("u{u}")}))))
            .collect(),
    )
    .await;
    let mut want: Vec<String> = baskets
        .iter()
        .enumerate()
        .map(|(u, basket)| json(serde_json::json!({"userId": format!("u{u}"), "details": basket})))
        .collect();
    want.sort();
    let receipts = |broker: &Kafka| {
        let mut got: Vec<String> = read_committed(broker, "receipts", CART_PARTITIONS)
            .iter()
            .map(|r| json(serde_json::from_str(r).unwrap_or_else(|e| panic!("receipt {r} is not JSON: {e}"))))
            .collect();
        got.sort();
        got
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut got = receipts(&broker);
    while got.len() < USERS {
        assert!(
            Instant::now() < deadline,
            "after 120 s, {} of {USERS} receipts: {got:?}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        got = receipts(&broker);
    }
    assert_eq!(got, want, "every receipt once, as expected, read without deduplication");
    // Nothing set aside: e.g. the cart's batch for an OUT_OF_STOCK answer has no effects, which
    // the Python SDK sends as an empty FromFunction.
    for a in &admin {
        assert_eq!(get(*a, "/dead-letters").await.1, "[]", "dead letters at {a}");
    }

    let pid = rustix::process::Pid::from_raw(run.id() as i32).unwrap();
    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    let status = run.wait().unwrap();
    function.stop().await;
    assert_eq!(receipts(&broker), want, "still exactly once after the run stopped");
    assert!(status.success(), "spindle run exited with {status} after SIGTERM");
    eprintln!(
        "shopping cart on {:?}: {} restocks, {} adds, {USERS} checkouts over 2 workers; {} receipts for a read_committed reader, each once and as expected (guarantee: exactly-once egress in a run without failures)",
        broker.flavor,
        ITEMS.len(),
        (0..USERS).map(|u| adds_of(u).len()).sum::<usize>(),
        want.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shopping_cart_module_with_exactly_once_kafka_runs_on_two_workers_tansu() {
    shopping_cart_runs_unchanged(
        Flavor::Tansu,
        "a_shopping_cart_module_with_exactly_once_kafka_runs_on_two_workers",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shopping_cart_module_with_exactly_once_kafka_runs_on_two_workers_apache_kafka() {
    shopping_cart_runs_unchanged(
        Flavor::Apache,
        "a_shopping_cart_module_with_exactly_once_kafka_runs_on_two_workers",
    )
    .await;
}
