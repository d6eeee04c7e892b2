//! The backlog gauge an autoscaler reads: `spindle_backlog_messages` = queued + in-flight
//! messages + ingress lag. A broker started here — nats-server with JetStream, or a Kafka
//! broker (tansu) — holds 2000 records before the worker starts; the function refuses (503,
//! retried) until the test lets it answer, so each record is unread or held by the reader
//! (lag: the consumer's pending count, the partition's stable end), queued or in flight — all
//! of it backlog, each record once. Then it answers, and the backlog drains to 0 with every
//! record invoked.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use spindle_protocol::reqreply::FromFunction;
use spindle_protocol::reqreply::from_function::{self, InvocationResponse};
use support::brokers::{Flavor, Kafka, Nats, TestRecord};
use support::function::{protobuf, serve};
use support::*;
use tokio::net::TcpListener;

const RECORDS: u64 = 2000;

/// A function that answers 503 until `open`, then counts the messages it is invoked with.
fn gated_function(
    listener: TcpListener,
    open: Arc<AtomicBool>,
    invoked: Arc<AtomicU64>,
) -> (std::net::SocketAddr, tokio::sync::watch::Sender<bool>) {
    serve(
        listener,
        Arc::new(move |batch| {
            if !open.load(Ordering::SeqCst) {
                return (StatusCode::SERVICE_UNAVAILABLE, "not yet").into_response();
            }
            invoked.fetch_add(batch.invocations.len() as u64, Ordering::SeqCst);
            protobuf(FromFunction {
                response: Some(from_function::Response::InvocationResult(InvocationResponse::default())),
            })
        }),
    )
}

fn app(fn_addr: std::net::SocketAddr, ingress: &str) -> String {
    format!(
        r#"apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {{name: backlog}}
spec:
  functions:
    - typename: t/*
      endpoint: http://{fn_addr}/
  ingresses:
    - name: adds
{ingress}
  maxBufferedMessages: 100
"#
    )
}

/// Starts the worker, checks the backlog while the function refuses and after it answers.
async fn check(dir: &std::path::Path, yaml: &str, source: &str, open: Arc<AtomicBool>, invoked: Arc<AtomicU64>) {
    let worker = start_worker(yaml, dir).await;
    let m = worker.metrics.clone();
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
    let series = format!(r#"spindle_ingress_lag_messages{{ingress="adds",source="{source}"}}"#);
    assert!(text.contains(&series), "{series} in {text}");

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_counts_unread_queued_and_in_flight_jetstream_records_and_drains() {
    let dir = TempDir::new("backlog-nats");
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
    let (open, invoked) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let (fn_addr, _stop) = gated_function(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        open.clone(),
        invoked.clone(),
    );
    eprintln!(
        "started: nats-server with {RECORDS} records in stream IN, a function on {fn_addr} that answers 503 until let through"
    );
    let ingress = format!(
        "      nats:\n        servers: [\"{}\"]\n        stream: IN\n        subjects: [{{subject: \"in.>\", valueType: t/Add, targets: [t/counter], valueFormat: json}}]",
        nats.url
    );
    check(dir.path(), &app(fn_addr, &ingress), "nats/adds", open, invoked).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_counts_unread_queued_and_in_flight_kafka_records_and_drains() {
    let dir = TempDir::new("backlog-kafka");
    let broker = Kafka::start(Flavor::Tansu, "backlog").await.expect("tansu always runs");
    broker.create_topic("adds", 1).await;
    let client = broker.client().await;
    for chunk in 0..(RECORDS / 500) {
        let records = (chunk * 500..(chunk + 1) * 500)
            .map(|i| TestRecord::new(Some(&format!("k{}", i % 10)), format!("{{\"n\": {i}}}").as_bytes()))
            .collect();
        broker.produce(&client, "adds", 0, records).await;
    }
    let (open, invoked) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let (fn_addr, _stop) = gated_function(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        open.clone(),
        invoked.clone(),
    );
    eprintln!(
        "started: a tansu Kafka broker ({}) with {RECORDS} records in topic adds, a function on {fn_addr} that answers 503 until let through",
        broker.addr
    );
    let ingress = format!(
        "      kafka:\n        brokers: [\"{}\"]\n        topics: [{{topic: adds, valueType: t/Add, targets: [t/counter], valueFormat: json}}]",
        broker.addr
    );
    check(dir.path(), &app(fn_addr, &ingress), "kafka/adds/adds/0", open, invoked).await;
}
