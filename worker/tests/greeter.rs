//! The greeter example (written with the Rust SDK) through a worker: person -> greeter ->
//! egress, and the cycle greeter -> person back.

mod support;

use std::sync::Arc;
use std::time::Duration;

use spindle_sdk::Type;
use spindle_spec::TypeName;
use spindle_worker::Address;
use spindle_worker::local::{InputRecord, send_input};
use support::*;
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greeter_example_greets_and_closes_the_cycle() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let function_addr = listener.local_addr().unwrap();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let functions = Arc::new(spindle_example_greeter::functions());
    let server = tokio::spawn(spindle_sdk::serve(listener, functions, async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    eprintln!("started: greeter functions (Rust SDK) on {function_addr}");

    let dir = TempDir::new("greeter");
    let app = std::fs::read_to_string(workspace_root().join("examples/greeter/app.yaml"))
        .unwrap()
        .replace(
            "http://greeter-functions:8000/statefun",
            &format!("http://{function_addr}/statefun"),
        );
    let worker = start_worker(&app, dir.path()).await;
    let visits = ["ada", "grace", "ada", "ada"].map(|name| InputRecord {
        target: format!("example/person/{name}"),
        typename: "example/Visit".into(),
        value: serde_json::json!({}),
    });
    send_input(worker.ingress_addr.unwrap(), &visits).await.unwrap();
    worker.wait_idle(Duration::from_secs(30)).await.unwrap();

    let out = egress_lines(&dir.path().join(".spindle/greets.jsonl"));
    let mut greetings: Vec<String> = out
        .iter()
        .map(|l| l["value"]["greeting"].as_str().unwrap().to_string())
        .collect();
    greetings.sort();
    assert_eq!(
        greetings,
        [
            "Hello ada! Welcome!",
            "Hello ada, this is visit #3.",
            "Hello again ada!",
            "Hello grace! Welcome!"
        ]
    );
    assert!(out.iter().all(|l| l["typename"] == "example/Greeting"));

    // The reply travelled back: person remembers the last greeting it was given.
    let person = |id: &str| Address::new(TypeName::parse("example/person").unwrap(), id);
    let state = worker.read_state(person("ada")).await.unwrap();
    let value_of = |name: &str| state.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).unwrap();
    assert_eq!(i64::decode(&value_of("visits").bytes).unwrap(), 3);
    assert_eq!(
        String::decode(&value_of("last_greeting").bytes).unwrap(),
        "Hello ada, this is visit #3."
    );
    assert!(worker.dead_letters.recent().is_empty());

    // The same, over the admin endpoints. person got 4 visits and 4 replies.
    let admin = worker.admin_addr;
    let (status, body) = get(admin, "/state/example/person/ada").await;
    assert_eq!(status, 200);
    let state: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        state["visits"],
        serde_json::json!({"typename": "io.statefun.types/long", "value": 3})
    );
    assert_eq!(state["last_greeting"]["value"], "Hello ada, this is visit #3.");
    assert_eq!(get(admin, "/healthz").await.0, 200);
    assert_eq!(get(admin, "/readyz").await.0, 200);
    let (_, status) = get(admin, "/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(
        (status["idle"].as_bool(), status["ingressAccepted"].as_u64()),
        (Some(true), Some(4))
    );
    let (_, metrics) = get(admin, "/metrics").await;
    assert!(
        metrics.contains("spindle_invocation_messages_total{function=\"example/person\"} 8"),
        "{metrics}"
    );
    assert!(
        metrics.contains("spindle_egress_records_total{egress=\"example/greets\",outcome=\"ok\"} 4"),
        "{metrics}"
    );
    assert_eq!(get(admin, "/dead-letters").await.1, "[]");

    worker.shutdown().await;
    stop_tx.send(true).unwrap();
    server.await.unwrap().unwrap();
}
