//! Mailbox semantics: one batch per address in flight, messages that arrive meanwhile form the
//! next batch (up to `maxBatchSize`, in arrival order), and at most `maxInFlight` batches per
//! function at once.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use spindle_protocol::reqreply::{ToFunction, to_function};
use support::function::echo_to_egress;
use support::*;
use tokio::net::TcpListener;
use tokio::sync::watch;

const IDLE: Duration = Duration::from_secs(30);

/// What the gated function saw: (address id, message values) per call, and the most calls in
/// progress at once.
#[derive(Default)]
struct Seen {
    calls: Vec<(String, Vec<String>)>,
    current: usize,
    most: usize,
}

/// A function that records each call and holds it until the gate opens.
async fn gated_function(gate: watch::Receiver<bool>) -> (std::net::SocketAddr, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let s = seen.clone();
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let (mut gate, seen) = (gate.clone(), s.clone());
        async move {
            let Some(to_function::Request::Invocation(batch)) = ToFunction::decode(body).unwrap().request else {
                unreachable!()
            };
            {
                let mut s = seen.lock().unwrap();
                let values = batch
                    .invocations
                    .iter()
                    .map(|i| String::from_utf8_lossy(&i.argument.as_ref().unwrap().value).to_string())
                    .collect();
                s.calls.push((batch.target.as_ref().unwrap().id.clone(), values));
                s.current += 1;
                s.most = s.most.max(s.current);
            }
            let _ = gate.wait_for(|open| *open).await;
            seen.lock().unwrap().current -= 1;
            echo_to_egress(batch)
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, seen)
}

fn app(endpoint: std::net::SocketAddr, batch: u32, in_flight: u32) -> String {
    test_app(&format!("http://{endpoint}/x"), "").replace(
        "      callTimeout: 20s",
        &format!("      callTimeout: 20s\n      maxBatchSize: {batch}\n      maxInFlight: {in_flight}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_arriving_during_an_invocation_form_the_next_batches_in_order() {
    let (gate_tx, gate) = watch::channel(false);
    let (endpoint, seen) = gated_function(gate).await;
    let dir = TempDir::new("batches");
    let worker = start_worker(&app(endpoint, 3, 8), dir.path()).await;
    let ingress = worker.ingress_addr.unwrap();

    send_text(ingress, "f", "a", "m0").await;
    wait_until("the first call", IDLE, || seen.lock().unwrap().calls.len() == 1).await;
    for i in 1..=5 {
        send_text(ingress, "f", "a", &format!("m{i}")).await;
    }
    wait_until("five queued", IDLE, || worker.metrics.messages_queued.get() == 5).await;
    assert_eq!(seen.lock().unwrap().calls.len(), 1, "one batch per address in flight");
    gate_tx.send(true).unwrap();
    worker.wait_idle(IDLE).await.unwrap();

    let batches: Vec<Vec<String>> = seen.lock().unwrap().calls.iter().map(|(_, v)| v.clone()).collect();
    assert_eq!(batches, [vec!["m0"], vec!["m1", "m2", "m3"], vec!["m4", "m5"]]);
    assert_eq!(
        egress_values(&dir.path().join("out.jsonl")),
        ["m0", "m1", "m2", "m3", "m4", "m5"]
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_batches_per_function_are_bounded() {
    let (gate_tx, gate) = watch::channel(false);
    let (endpoint, seen) = gated_function(gate).await;
    let dir = TempDir::new("inflight");
    let worker = start_worker(&app(endpoint, 10, 2), dir.path()).await;
    let ingress = worker.ingress_addr.unwrap();
    for i in 0..6 {
        send_text(ingress, "f", &format!("k{i}"), &format!("m{i}")).await;
    }
    wait_until("two calls", IDLE, || seen.lock().unwrap().current == 2).await;
    // A 202 means accepted, not yet queued in the partition: wait for the last four to land.
    wait_until("the others waiting in their mailboxes", IDLE, || {
        worker.metrics.messages_queued.get() == 4
    })
    .await;
    assert_eq!(worker.metrics.batches_in_flight.get(), 2);
    assert_eq!(seen.lock().unwrap().current, 2, "no third call while two are in flight");
    gate_tx.send(true).unwrap();
    worker.wait_idle(IDLE).await.unwrap();
    let (most, order) = {
        let s = seen.lock().unwrap();
        (s.most, s.calls.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>())
    };
    assert_eq!(most, 2);
    // The first two addresses got the slots; every address was called once. (Calls started
    // together race to the function, so the order among later ones is not observable here.)
    let mut first: Vec<&str> = order[..2].iter().map(String::as_str).collect();
    first.sort();
    assert_eq!(first, ["k0", "k1"]);
    let mut all = order.clone();
    all.sort();
    assert_eq!(all, ["k0", "k1", "k2", "k3", "k4", "k5"]);
    worker.shutdown().await;
}
