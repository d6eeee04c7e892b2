//! Bounds and validation at the door: an id with a control character is refused with the
//! byte it is at; messages of 1 MiB cross between workers in batches below the frame limit
//! (five of them together for one peer used to wedge the link); a reply larger than the
//! function's `maxReplyBytes` is a dead letter — 8 MiB over a configured 4 MiB, and 64 MiB
//! over the default 16 MiB — and the worker keeps serving. (Byte bounds on the queues under a
//! flood: `tests/memory_bounds.rs`.)

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::response::IntoResponse;
use spindle_protocol::reqreply::{FromFunction, TypedValue, from_function};
use support::function::{self, echo_to_egress, protobuf};
use support::*;

const IDLE: Duration = Duration::from_secs(60);

fn app(endpoint: &str) -> String {
    format!(
        r#"
apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {{name: bounds}}
spec:
  functions:
    - typename: t/*
      endpoint: {endpoint}
      maxReplyBytes: 4194304
  ingresses:
    - name: web
      http: {{maxBodyBytes: 2097152}}
  egresses:
    - typename: t/out
      file: {{path: out.jsonl}}
  checkpoint:
    interval: 0s
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_with_control_characters_are_refused_with_the_byte() {
    let (addr, _stop) = function::serve(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        Arc::new(echo_to_egress),
    );
    let dir = TempDir::new("bad-ids");
    let worker = start_worker(&app(&format!("http://{addr}/x")), dir.path()).await;
    let ingress = worker.ingress_addr.unwrap();
    let (status, body) = post(ingress, "/t/fn/a%0Ab", "application/vnd.t/Text", b"x".to_vec()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("control character at byte 1"), "{body}");
    let (status, _) = post(ingress, "/t/fn/ok", "application/vnd.t/Text", b"x".to_vec()).await;
    assert_eq!(status, 202);
    worker.wait_idle(IDLE).await.unwrap();
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_messages_cross_workers_and_an_oversized_reply_is_a_dead_letter() {
    // 8 MiB of egress value from `huge`: over the function's maxReplyBytes of 4 MiB.
    let (addr, _stop) = huge_reply_function(8 << 20).await;
    let dir = TempDir::new("big-messages");
    let workers = start_cluster(&app(&format!("http://{addr}/x")), dir.path(), 2).await;
    let layout = spindle_worker::keygroup::Layout {
        worker: 0,
        workers: 2,
        key_groups: 128,
    };
    let ids: Vec<String> = (0..1000)
        .map(|i| format!("big{i}"))
        .filter(|id| {
            layout.owner(&spindle_worker::Address::new(
                spindle_spec::TypeName::parse("t/fn").unwrap(),
                id.as_str(),
            )) == 1
        })
        .take(5)
        .collect();
    let ingress = workers[0].ingress_addr.unwrap();
    let megabyte = vec![b'm'; 1 << 20];
    for id in &ids {
        let (status, body) = post(
            ingress,
            &format!("/t/fn/{id}"),
            "application/vnd.t/Text",
            megabyte.clone(),
        )
        .await;
        assert_eq!(status, 202, "{body}");
    }
    eprintln!("sent: 5 messages of 1 MiB to addresses worker 1 owns, through worker 0");
    wait_cluster_idle(&workers, IDLE).await;
    let out = std::fs::read_to_string(dir.path().join("w1/out.jsonl")).unwrap_or_default();
    assert_eq!(
        out.lines().count(),
        5,
        "every 1 MiB message crossed to worker 1 and came out"
    );
    let (status, _) = post(
        workers[1].ingress_addr.unwrap(),
        "/t/huge/1",
        "application/vnd.t/Text",
        b"go".to_vec(),
    )
    .await;
    assert_eq!(status, 202);
    wait_cluster_idle(&workers, IDLE).await;
    let dead: Vec<_> = workers.iter().flat_map(|w| w.dead_letters.recent()).collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].reason.contains("maxReplyBytes"), "{}", dead[0].reason);
    // The worker keeps serving.
    let (status, _) = post(ingress, "/t/fn/after", "application/vnd.t/Text", b"fine".to_vec()).await;
    assert_eq!(status, 202);
    wait_cluster_idle(&workers, IDLE).await;
    for w in workers {
        w.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_reply_is_a_dead_letter_under_the_default_limit() {
    // 64 MiB of egress value from `huge`: four times the default maxReplyBytes (16 MiB).
    let (addr, _stop) = huge_reply_function(64 << 20).await;
    let dir = TempDir::new("huge-reply");
    // The same application without `maxReplyBytes`: the default bound applies.
    let yaml = app(&format!("http://{addr}/x")).replace("      maxReplyBytes: 4194304\n", "");
    assert!(!yaml.contains("maxReplyBytes"));
    let worker = start_worker(&yaml, dir.path()).await;
    let ingress = worker.ingress_addr.unwrap();
    let (status, _) = post(ingress, "/t/huge/1", "application/vnd.t/Text", b"go".to_vec()).await;
    assert_eq!(status, 202);
    worker.wait_idle(IDLE).await.unwrap();
    let dead = worker.dead_letters.recent();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(
        dead[0].reason.contains("maxReplyBytes") && dead[0].reason.contains("16777216"),
        "{}",
        dead[0].reason
    );
    eprintln!("64 MiB reply: dead letter, {}", dead[0].reason);
    let (status, _) = post(ingress, "/t/fn/after", "application/vnd.t/Text", b"fine".to_vec()).await;
    assert_eq!(status, 202);
    worker.wait_idle(IDLE).await.unwrap();
    let out = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap_or_default();
    assert_eq!(out.lines().count(), 1, "the worker kept serving: {out}");
    worker.shutdown().await;
}

/// A function that answers the address type `huge` with one egress record of `bytes` bytes
/// and echoes everything else to the egress.
async fn huge_reply_function(bytes: usize) -> (std::net::SocketAddr, tokio::sync::watch::Sender<bool>) {
    function::serve(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        Arc::new(
            move |batch: spindle_protocol::reqreply::to_function::InvocationBatchRequest| {
                if batch.target.as_ref().unwrap().r#type == "huge" {
                    let mut r = from_function::InvocationResponse::default();
                    r.outgoing_egresses.push(from_function::EgressMessage {
                        egress_namespace: "t".into(),
                        egress_type: "out".into(),
                        argument: Some(TypedValue {
                            typename: "t/Text".into(),
                            has_value: true,
                            value: vec![b'h'; bytes].into(),
                        }),
                    });
                    return protobuf(FromFunction {
                        response: Some(from_function::Response::InvocationResult(r)),
                    })
                    .into_response();
                }
                echo_to_egress(batch)
            },
        ),
    )
}
