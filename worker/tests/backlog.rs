//! The backlog gauge an autoscaler reads: `spindle_backlog_messages` = queued + in-flight
//! messages + ingress lag. A nats-server with JetStream (started here) holds 2000 records
//! before the worker starts; the function refuses (503, retried) until the test lets it
//! answer, so the records are either unread (lag: the consumer's pending count), queued or in
//! flight — all of them backlog. Then it answers, and the backlog drains to 0 with every
//! record invoked.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use spindle_protocol::reqreply::FromFunction;
use spindle_protocol::reqreply::from_function::{self, InvocationResponse};
use support::brokers::Nats;
use support::function::{protobuf, serve};
use support::*;
use tokio::net::TcpListener;

const RECORDS: u64 = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_counts_unread_queued_and_in_flight_messages_and_drains() {
    let dir = TempDir::new("backlog");
    let nats = Nats::start(dir.path(), "");
    let js = nats.jetstream(None).await;
    Nats::create_stream(&js, "IN", &["in.>"]).await;
    for i in 0..RECORDS {
        js.publish(format!("in.k{}", i % 10), format!("{{\"n\": {i}}}").into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let open = Arc::new(AtomicBool::new(false));
    let invoked = Arc::new(AtomicU64::new(0));
    let (gate, count) = (open.clone(), invoked.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (fn_addr, _stop) = serve(
        listener,
        Arc::new(move |batch| {
            if !gate.load(Ordering::SeqCst) {
                return (StatusCode::SERVICE_UNAVAILABLE, "not yet").into_response();
            }
            count.fetch_add(batch.invocations.len() as u64, Ordering::SeqCst);
            protobuf(FromFunction {
                response: Some(from_function::Response::InvocationResult(InvocationResponse::default())),
            })
        }),
    );
    eprintln!(
        "started: nats-server with {RECORDS} records in stream IN, a function on {fn_addr} that answers 503 until let through"
    );
    let yaml = format!(
        r#"apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {{name: backlog}}
spec:
  functions:
    - typename: t/*
      endpoint: http://{fn_addr}/
  ingresses:
    - name: adds
      nats:
        servers: ["{}"]
        stream: IN
        subjects: [{{subject: "in.>", valueType: t/Add, targets: [t/counter], valueFormat: json}}]
  maxBufferedMessages: 100
"#,
        nats.url
    );
    let worker = start_worker(&yaml, dir.path()).await;
    let m = worker.metrics.clone();

    // Blocked: the reader holds 100 admitted messages (queued or in flight) and the rest is
    // the stream's lag.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lag: i64 = m.lag_by_ingress().values().sum();
        let (queued, in_flight) = (m.messages_queued.get(), m.messages_in_flight.get());
        // Every record is counted once: unread, held by the reader, queued or in flight.
        if lag > 0 && in_flight > 0 && m.backlog() == RECORDS as i64 {
            assert_eq!(m.backlog(), queued + in_flight + lag);
            eprintln!(
                "blocked: backlog {} = queued {queued} + in flight {in_flight} + lag {lag}",
                m.backlog()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the backlog is not {RECORDS} after 60 s: queued {queued}, in flight {in_flight}, lag {lag}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        invoked.load(Ordering::SeqCst),
        0,
        "the function refused everything so far"
    );
    let (_, text) = get(worker.admin_addr, "/metrics").await;
    let line = text
        .lines()
        .find(|l| l.starts_with("spindle_backlog_messages "))
        .expect("the gauge is exported");
    let exported: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(exported, RECORDS as i64, "{line}");
    assert!(
        text.contains(r#"spindle_ingress_lag_messages{ingress="adds",source="nats/adds"}"#),
        "{text}"
    );

    // Let it through: everything is invoked and the backlog drains to 0.
    open.store(true, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !(m.backlog() == 0 && invoked.load(Ordering::SeqCst) >= RECORDS) {
        assert!(
            Instant::now() < deadline,
            "not drained after 120 s: backlog {}, invoked {}",
            m.backlog(),
            invoked.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        invoked.load(Ordering::SeqCst),
        RECORDS,
        "each record invoked once (no rollback happened)"
    );
    let (_, text) = get(worker.admin_addr, "/metrics").await;
    assert!(text.contains("spindle_backlog_messages 0"), "{text}");
    worker.shutdown().await;
}
