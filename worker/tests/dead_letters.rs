//! Dead letters inside the exactly-once path, through the real `spindle dead-letters` command:
//! a batch the function refuses becomes a dead letter the worker keeps (and checkpoints), it is
//! listed from the worker's admin endpoint and from the newest checkpoint in storage, and a
//! replay — once the function is fixed — delivers it exactly once (the egress file, read
//! without deduplication, holds it once; a second replay finds nothing).

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use support::function::{self, echo_to_egress};
use support::*;

const SPINDLE: &str = env!("CARGO_BIN_EXE_spindle");
const IDLE: Duration = Duration::from_secs(30);

fn spindle(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(SPINDLE).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_listed_and_replayed_exactly_once() {
    let broken = Arc::new(AtomicBool::new(true));
    let b = broken.clone();
    let (addr, _stop) = function::serve(
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        Arc::new(
            move |batch: spindle_protocol::reqreply::to_function::InvocationBatchRequest| {
                if b.load(Ordering::SeqCst) {
                    return (StatusCode::BAD_REQUEST, "not today").into_response();
                }
                echo_to_egress(batch)
            },
        ),
    );
    let dir = TempDir::new("dead-letters");
    let worker = start_worker(&test_app(&format!("http://{addr}/x"), ""), dir.path()).await;
    send_text(worker.ingress_addr.unwrap(), "fn", "1", "precious").await;
    worker.wait_idle(IDLE).await.unwrap();
    let admin = format!("http://{}", worker.admin_addr);

    let (ok, listed, err) = spindle(&["dead-letters", "list", "--admin", &admin]);
    assert!(ok, "{err}");
    let letters: Vec<serde_json::Value> = listed.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(letters.len(), 1, "{listed}");
    let letter = &letters[0];
    assert_eq!(letter["kind"], "invocation_failed");
    assert!(
        letter["reason"]
            .as_str()
            .unwrap()
            .contains("400 Bad Request: not today"),
        "{letter}"
    );
    assert_eq!(letter["messages"][0]["target"], "t/fn/1");
    // Not JSON nor a StateFun primitive: shown in base64 ("precious").
    assert_eq!(letter["messages"][0]["valueBase64"], "cHJlY2lvdXM=");
    let id = letter["id"].as_str().unwrap().to_string();

    // Kept in checkpoints: the newest one lists it too (offline, from storage).
    let done = worker.progress().completed;
    wait_until("a checkpoint after the dead letter", IDLE, || {
        worker.progress().completed > done
    })
    .await;
    let storage = dir.path().join(".spindle/checkpoints");
    let (ok, offline, err) = spindle(&[
        "dead-letters",
        "list",
        "--storage",
        storage.to_str().unwrap(),
        "--application",
        "test",
    ]);
    assert!(ok, "{err}");
    assert!(offline.contains(&id), "{offline}\n{err}");

    broken.store(false, Ordering::SeqCst);
    let (ok, out, err) = spindle(&["dead-letters", "replay", &id, "--admin", &admin]);
    assert!(ok, "{err}");
    assert!(out.contains("replayed"), "{out}");
    worker.wait_idle(IDLE).await.unwrap();
    assert_eq!(egress_values(&dir.path().join("out.jsonl")), ["precious"]);
    let (ok, _, err) = spindle(&["dead-letters", "replay", &id, "--admin", &admin]);
    assert!(
        !ok && err.contains("no worker keeps dead letter"),
        "a second replay: {err}"
    );
    let (_, listed, _) = spindle(&["dead-letters", "list", "--admin", &admin]);
    assert!(listed.trim().is_empty(), "{listed}");
    worker.wait_idle(IDLE).await.unwrap();
    assert_eq!(
        egress_values(&dir.path().join("out.jsonl")),
        ["precious"],
        "delivered once"
    );

    // Drop: a refused record is dropped, not replayed.
    broken.store(true, Ordering::SeqCst);
    send_text(worker.ingress_addr.unwrap(), "fn", "2", "unwanted").await;
    worker.wait_idle(IDLE).await.unwrap();
    let (_, listed, _) = spindle(&["dead-letters", "list", "--admin", &admin]);
    let id: String = serde_json::from_str::<serde_json::Value>(listed.trim()).unwrap()["id"]
        .as_str()
        .unwrap()
        .into();
    let (ok, out, err) = spindle(&["dead-letters", "drop", &id, "--admin", &admin]);
    assert!(ok && out.contains("dropped"), "{out}{err}");
    let (_, listed, _) = spindle(&["dead-letters", "list", "--admin", &admin]);
    assert!(listed.trim().is_empty(), "{listed}");
    worker.shutdown().await;
}
