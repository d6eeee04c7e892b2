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

/// A plain HTTP API on a free loopback port (the "remote service" `example/fetch` calls),
/// answering every GET with `body`.
async fn http_api(body: &'static str) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut request, mut buf) = (Vec::new(), [0u8; 1024]);
                while !request.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

/// The Rust SDK's `ctx.reply` and an async handler through a worker, with `Spindle-Reply:
/// wait`: the counter answers with its new total, `example/fetch` awaits an HTTP API and
/// answers with what it got — in the HTTP response, once the checkpoint holding it completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_replies_and_async_handlers_answer_http_callers() {
    let (function_addr, stop_functions) = example_functions().await;
    let api = http_api("sunny, 21 C").await;
    eprintln!("started: example functions (Rust SDK) on {function_addr}, an HTTP API on {api}");
    let dir = TempDir::new("greeter-reply");
    let app = std::fs::read_to_string(workspace_root().join("examples/greeter/app.yaml"))
        .unwrap()
        .replace(
            "http://greeter-functions:8000/statefun",
            &format!("http://{function_addr}/statefun"),
        );
    let worker = start_worker(&app, dir.path()).await;
    let ingress = worker.ingress_addr.unwrap();
    let call = |path: &'static str, ty: &'static str, body: serde_json::Value| async move {
        post_with(
            ingress,
            path,
            &format!("application/vnd.{ty}"),
            body.to_string().into_bytes(),
            &[("spindle-reply", "wait")],
        )
        .await
        .expect("the ingress answers")
    };

    for (seq, want) in [(1, 5), (2, 12)] {
        let (status, headers, body) = call(
            "/example/counter/k1",
            "example/Add",
            serde_json::json!({"seq": seq, "value": want - if seq == 1 { 0 } else { 5 }}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(headers["content-type"], "application/vnd.example/Total");
        let total: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(total, serde_json::json!({"seq": seq, "key": "k1", "total": want}));
    }

    let url = format!("http://{api}/weather");
    let (status, headers, body) = call("/example/fetch/f1", "example/Fetch", serde_json::json!({"url": url})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "application/vnd.example/Fetched");
    let fetched: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        fetched,
        serde_json::json!({"url": url, "status": 200, "body": "sunny, 21 C", "fetches": 1})
    );
    assert!(worker.dead_letters.recent().is_empty());

    worker.shutdown().await;
    let _ = stop_functions.send(true);
}
