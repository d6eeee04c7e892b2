//! Bad input and faults: malformed replies, wrong content types, a function that is down and
//! comes back, unknown targets, ingress refusals, back-pressure. Nothing accepted is lost:
//! every message is either delivered or kept as a dead letter with its reason.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use support::function::{self, echo_to_egress};
use support::*;
use tokio::net::TcpListener;

const IDLE: Duration = Duration::from_secs(30);

async fn listener() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_reply_and_wrong_content_type_become_dead_letters_and_the_worker_keeps_serving() {
    // t/garbage answers bytes that are not a FromFunction, t/text answers text/plain,
    // t/good works.
    let (addr, _stop) = function::serve(
        listener().await,
        Arc::new(
            |batch: spindle_protocol::reqreply::to_function::InvocationBatchRequest| match batch
                .target
                .as_ref()
                .unwrap()
                .r#type
                .as_str()
            {
                "garbage" => (
                    [(header::CONTENT_TYPE, "application/octet-stream")],
                    vec![0xff, 0xff, 0xff],
                )
                    .into_response(),
                "text" => ([(header::CONTENT_TYPE, "text/plain")], "hello").into_response(),
                _ => echo_to_egress(batch),
            },
        ),
    );
    let dir = TempDir::new("malformed");
    let worker = start_worker(&test_app(&format!("http://{addr}/{{function.name}}"), ""), dir.path()).await;
    let ingress = worker.ingress_addr.unwrap();
    send_text(ingress, "garbage", "1", "a").await;
    send_text(ingress, "text", "1", "b").await;
    send_text(ingress, "good", "1", "c").await;
    worker.wait_idle(IDLE).await.unwrap();

    assert_eq!(egress_values(&dir.path().join("out.jsonl")), ["c"]);
    let dead = worker.dead_letters.recent();
    assert_eq!(dead.len(), 2, "{dead:?}");
    let garbage = dead.iter().find(|d| d.messages[0].target == "t/garbage/1").unwrap();
    assert_eq!(garbage.kind, "invocation_failed");
    assert!(garbage.reason.contains("malformed FromFunction"), "{}", garbage.reason);
    let text = dead.iter().find(|d| d.messages[0].target == "t/text/1").unwrap();
    assert!(text.reason.contains("content type `text/plain`"), "{}", text.reason);
    // The dead letter keeps the message itself.
    assert_eq!(text.messages[0].value_base64, "Yg==");
    // And it is on disk, one JSON line each.
    let on_disk = std::fs::read_to_string(dir.path().join("data/dead-letters.jsonl")).unwrap();
    assert_eq!(on_disk.lines().count(), 2);
    let metrics = worker.metrics.encode();
    assert!(
        metrics.contains("spindle_dead_letters_total{kind=\"invocation_failed\"} 2"),
        "{metrics}"
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_that_is_down_then_back_gets_every_message() {
    let port = free_port();
    let dir = TempDir::new("down");
    let worker = start_worker(&test_app(&format!("http://127.0.0.1:{port}/fn"), ""), dir.path()).await;
    let ingress = worker.ingress_addr.unwrap();
    for i in 0..20 {
        send_text(ingress, "f", &format!("k{}", i % 5), &format!("m{i}")).await;
    }
    // Wait until the worker has seen the function down (retries counted), then start it.
    let metrics = worker.metrics.clone();
    wait_until("a retried invocation", IDLE, || {
        metrics
            .encode()
            .contains("spindle_invocation_retries_total{function=\"t/f\"}")
    })
    .await;
    assert!(!worker.metrics.is_idle());
    let (_addr, _stop) = function::serve(
        TcpListener::bind(("127.0.0.1", port)).await.unwrap(),
        Arc::new(echo_to_egress),
    );
    worker.wait_idle(IDLE).await.unwrap();

    let mut got = egress_values(&dir.path().join("out.jsonl"));
    got.sort_by_key(|s| s[1..].parse::<u32>().unwrap());
    let want: Vec<String> = (0..20).map(|i| format!("m{i}")).collect();
    assert_eq!(got, want);
    assert!(worker.dead_letters.recent().is_empty());
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_statuses_are_retried_and_others_are_not() {
    // The first two calls answer 503, later ones succeed; t/bad always answers 400.
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let (addr, _stop) = function::serve(
        listener().await,
        Arc::new(
            move |batch: spindle_protocol::reqreply::to_function::InvocationBatchRequest| {
                if batch.target.as_ref().unwrap().r#type == "bad" {
                    return (StatusCode::BAD_REQUEST, "no such thing").into_response();
                }
                if c.fetch_add(1, Ordering::SeqCst) < 2 {
                    return (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response();
                }
                echo_to_egress(batch)
            },
        ),
    );
    let dir = TempDir::new("status");
    let worker = start_worker(&test_app(&format!("http://{addr}/x"), ""), dir.path()).await;
    let ingress = worker.ingress_addr.unwrap();
    send_text(ingress, "ok", "1", "retried").await;
    worker.wait_idle(IDLE).await.unwrap();
    send_text(ingress, "bad", "1", "refused").await;
    worker.wait_idle(IDLE).await.unwrap();
    assert_eq!(egress_values(&dir.path().join("out.jsonl")), ["retried"]);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let dead = worker.dead_letters.recent();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0].reason.contains("400 Bad Request: no such thing"),
        "{}",
        dead[0].reason
    );
    assert!(dead[0].reason.contains("1 attempts"), "{}", dead[0].reason);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_targets_of_outgoing_messages_and_egresses_become_dead_letters() {
    let (addr, _stop) = function::serve(listener().await, Arc::new(echo_to_egress));
    let dir = TempDir::new("unknown");
    let worker = start_worker(&test_app(&format!("http://{addr}/x"), ""), dir.path()).await;
    let ingress = worker.ingress_addr.unwrap();
    send_text(ingress, "f", "1", "to:nowhere/fn/7:lost").await;
    send_text(ingress, "f", "1", "to:t/g/8:found").await; // a known type: delivered, echoed
    worker.wait_idle(IDLE).await.unwrap();
    let dead = worker.dead_letters.recent();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].kind, "unknown_function");
    assert_eq!(dead[0].reason, "no function serves type `nowhere/fn`");
    assert_eq!(dead[0].messages[0].target, "nowhere/fn/7");
    assert_eq!(dead[0].messages[0].caller.as_deref(), Some("t/f/1"));
    assert_eq!(egress_values(&dir.path().join("out.jsonl")), ["found"]);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wildcard_entry_with_types_serves_no_invented_type() {
    let (addr, _stop) = function::serve(listener().await, Arc::new(echo_to_egress));
    let dir = TempDir::new("types");
    let yaml = test_app(&format!("http://{addr}/x"), "").replace(
        "      callTimeout: 20s\n",
        "      callTimeout: 20s\n      types: [f, g]\n",
    );
    let worker = start_worker(&yaml, dir.path()).await;
    let ingress = worker.ingress_addr.unwrap();
    // From a caller: refused at the door.
    let (status, body) = post(ingress, "/t/invented/1", "application/vnd.t/text", b"x".to_vec()).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no function serves type `t/invented`"), "{body}");
    // From a function: a dead letter; listed types work.
    send_text(ingress, "f", "1", "to:t/invented/7:lost").await;
    send_text(ingress, "f", "2", "to:t/g/8:found").await;
    worker.wait_idle(IDLE).await.unwrap();
    let dead = worker.dead_letters.recent();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].reason, "no function serves type `t/invented`");
    assert_eq!(egress_values(&dir.path().join("out.jsonl")), ["found"]);
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingress_refuses_bad_requests_clearly() {
    let (addr, _stop) = function::serve(listener().await, Arc::new(echo_to_egress));
    let dir = TempDir::new("ingress");
    let worker = start_worker(&test_app(&format!("http://{addr}/x"), ""), dir.path()).await;
    let ingress = worker.ingress_addr.unwrap();

    let (status, body) = post(ingress, "/other/fn/1", "application/vnd.t/Text", b"x".to_vec()).await;
    assert_eq!((status, body.trim()), (404, "no function serves type `other/fn`"));
    let (status, body) = post(ingress, "/t/fn/1", "application/json", b"{}".to_vec()).await;
    assert_eq!(status, 415);
    assert!(body.contains("expected `application/vnd.<namespace>/<type>`"), "{body}");
    let (status, body) = post(ingress, "/t/fn/1", "application/vnd.NoSlash", b"x".to_vec()).await;
    assert_eq!(status, 400);
    assert!(body.contains("`NoSlash` is not a typename"), "{body}");
    let (status, body) = post(ingress, "/t/fn/1", "application/vnd.t/Text", vec![b'x'; 1025]).await;
    assert_eq!((status, body.trim()), (413, "the body exceeds the limit of 1024 bytes"));
    let (status, _) = post(ingress, "/t/fn/1", "application/vnd.t/Text", vec![b'x'; 1024]).await;
    assert_eq!(status, 202);
    worker.wait_idle(IDLE).await.unwrap();
    assert_eq!(egress_values(&dir.path().join("out.jsonl")).len(), 1);
    let metrics = worker.metrics.encode();
    for kind in ["unknown_function", "bad_content_type", "bad_typename", "too_large"] {
        assert!(
            metrics.contains(&format!("spindle_ingress_rejected_total{{kind=\"{kind}\"}} 1")),
            "{kind}: {metrics}"
        );
    }
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_function_back_pressures_the_ingress_without_loss() {
    // The function holds every call until the gate opens.
    let (gate_tx, gate) = tokio::sync::watch::channel(false);
    let arrived = Arc::new(AtomicUsize::new(0));
    let a = arrived.clone();
    let listener = listener().await;
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let mut gate = gate.clone();
        let a = a.clone();
        async move {
            use prost::Message;
            let req = spindle_protocol::reqreply::ToFunction::decode(body).unwrap();
            let Some(spindle_protocol::reqreply::to_function::Request::Invocation(batch)) = req.request else {
                unreachable!()
            };
            a.fetch_add(batch.invocations.len(), Ordering::SeqCst);
            let _ = gate.wait_for(|open| *open).await;
            echo_to_egress(batch)
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = TempDir::new("backpressure");
    let yaml = test_app(&format!("http://{addr}/x"), "  maxBufferedMessages: 3");
    let worker = start_worker(&yaml, dir.path()).await;
    let ingress = worker.ingress_addr.unwrap();
    for i in 0..3 {
        send_text(ingress, "f", &format!("k{i}"), &format!("m{i}")).await;
    }
    // Three accepted and held by the function: the budget is spent.
    wait_until("three messages at the function", IDLE, || {
        arrived.load(Ordering::SeqCst) == 3
    })
    .await;
    let fourth = tokio::spawn(async move { post(ingress, "/t/f/k3", "application/vnd.t/Text", b"m3".to_vec()).await });
    // The fourth request is held while the budget is spent. (A bounded look: it must still be
    // pending after the worker had ample time to answer it.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!fourth.is_finished(), "the ingress answered past its admission bound");
    assert_eq!(worker.metrics.ingress_in_process.get(), 3);
    gate_tx.send(true).unwrap();
    let (status, _) = fourth.await.unwrap();
    assert_eq!(status, 202);
    worker.wait_idle(IDLE).await.unwrap();
    let mut got = egress_values(&dir.path().join("out.jsonl"));
    got.sort();
    assert_eq!(got, ["m0", "m1", "m2", "m3"]);
    worker.shutdown().await;
}
