//! Request–reply over the HTTP ingress (`Spindle-Reply: wait`) with the official StateFun
//! Python SDK 3.3.0, unchanged: the function answers with `context.send(...)` to its caller,
//! and the HTTP response carries the reply once the checkpoint containing it has completed.
//!
//! - `python_function_replies_to_its_caller`: one worker; a direct reply, a reply from the
//!   second function of a chain, the decoded body and content type, a reply that comes after
//!   the request's timeout (504, then the retry with the same key gets it: the function ran
//!   once), bad requests.
//! - `kill_9_of_the_worker_holding_requests`: two `spindle worker` processes; requests wait at
//!   worker 1, which is killed with SIGKILL while they are in flight and started again; every
//!   request is retried with its key until answered. Proves exactly-once through the crash:
//!   every request's reply says `visit 1` and the function's own state (read from /state, no
//!   deduplication) counts one visit per address, and a retry of an answered request returns
//!   the same reply.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use spindle_spec::{HumanDuration, LocalProcess};
use spindle_worker::local::FunctionProcess;
use support::procs::{Procs, state, wait_running};
use support::*;

async fn python_functions(dir: &std::path::Path) -> FunctionProcess {
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
    let f = FunctionProcess::start("py/*", &local, dir)
        .await
        .expect("python functions start");
    eprintln!(
        "started: StateFun Python SDK 3.3.0 functions (aiohttp) on 127.0.0.1:{}",
        f.port
    );
    f
}

fn app(name: &str, port: u16, extra: &str) -> String {
    format!(
        r#"
apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {{name: {name}}}
spec:
  functions:
    - typename: py/*
      endpoint: http://127.0.0.1:{port}/statefun
  ingresses:
    - name: web
      http: {{replyTimeout: 20s}}
  checkpoint: {{interval: 1s, minPause: 5ms}}
{extra}
"#
    )
}

/// POSTs a `py/Greet` to `py/greeter/{id}` asking for the reply: `None` when the connection
/// failed (no answer at all).
async fn greet(
    ingress: SocketAddr,
    id: &str,
    body: &str,
    extra: &[(&str, &str)],
) -> Option<(u16, http::HeaderMap, String)> {
    let mut headers = vec![("spindle-reply", "wait")];
    headers.extend_from_slice(extra);
    post_with(
        ingress,
        &format!("/py/greeter/{id}"),
        "application/vnd.py/Greet",
        body.as_bytes().to_vec(),
        &headers,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_function_replies_to_its_caller() {
    let dir = TempDir::new("reply-python");
    let function = python_functions(dir.path()).await;
    let worker = start_worker(&app("reply", function.port, ""), dir.path()).await;
    let ingress = worker.ingress_addr.unwrap();
    eprintln!("started: Spindle worker, ingress {ingress}");

    let started = Instant::now();
    let (status, headers, body) = greet(ingress, "ada", r#"{"name": "Ada"}"#, &[]).await.unwrap();
    assert_eq!((status, body.as_str()), (200, "Hello Ada, visit 1"));
    assert_eq!(
        headers["content-type"], "application/vnd.io.statefun.types/string",
        "the reply's typename, its value decoded"
    );
    let checkpoint: u64 = headers["spindle-checkpoint"].to_str().unwrap().parse().unwrap();
    assert!(checkpoint >= 1, "released by a completed checkpoint");
    assert!(worker.progress().completed >= checkpoint);
    eprintln!("first reply after {:?} (checkpoint {checkpoint})", started.elapsed());
    let (_, _, body) = greet(ingress, "ada", r#"{"name": "Ada"}"#, &[]).await.unwrap();
    assert_eq!(body, "Hello Ada, visit 2", "state kept between requests");

    // The second function of a chain replies: the reply address travelled in the message.
    let (status, _, body) = greet(ingress, "bob", r#"{"name": "Bob", "via": true}"#, &[])
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "Hello Bob, visit 1 (via responder)"));

    // The reply comes 2 s later, after the request's 500 ms: 504, the message still processed;
    // a retry with the same key gets the reply once it exists, and the function ran once.
    let slow = [("idempotency-key", "slow-1"), ("spindle-reply-timeout", "500ms")];
    let (status, _, body) = greet(ingress, "carol", r#"{"name": "Carol", "later": true}"#, &slow)
        .await
        .unwrap();
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("no reply within"), "{body}");
    let retry = [("idempotency-key", "slow-1"), ("spindle-reply-timeout", "10s")];
    let (status, _, body) = greet(ingress, "carol", r#"{"name": "Carol", "later": true}"#, &retry)
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (200, "Hello Carol, visit 1"));
    let (status, _, body) = greet(ingress, "carol", r#"{"name": "Carol", "later": true}"#, &retry)
        .await
        .unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "Hello Carol, visit 1"),
        "the same reply again"
    );
    let visits = worker
        .read_state(spindle_worker::Address::new(
            spindle_spec::TypeName::parse("py/greeter").unwrap(),
            "carol",
        ))
        .await
        .unwrap();
    assert_eq!(
        visits,
        [("visits".to_string(), support::sdk::int(1))],
        "the function ran once"
    );

    // Bad requests keep their 4xx.
    let bad = |h: &'static str, v: &'static str| async move {
        post_with(
            ingress,
            "/py/greeter/x",
            "application/vnd.py/Greet",
            br#"{"name": "X"}"#.to_vec(),
            &[(h, v)],
        )
        .await
        .unwrap()
    };
    let (status, _, body) = bad("spindle-reply", "maybe").await;
    assert_eq!(status, 400, "{body}");
    let (status, _, body) = bad("spindle-reply-timeout", "forever").await;
    assert_eq!(status, 202, "no reply asked, the timeout header is not read: {body}");
    let (status, _, _) = post_with(
        ingress,
        "/other/f/x",
        "application/vnd.py/Greet",
        b"{}".to_vec(),
        &[("spindle-reply", "wait")],
    )
    .await
    .unwrap();
    assert_eq!(status, 404);
    worker.shutdown().await;
    function.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_worker_holding_requests() {
    const REQUESTS: usize = 40;
    let dir = TempDir::new("reply-kill");
    let function = python_functions(dir.path()).await;
    let yaml = app("reply-kill", function.port, "  workers: 2\n  keyGroups: 16\n");
    let file = dir.path().join("app.yaml");
    std::fs::write(&file, yaml).unwrap();
    let mut procs = Procs::new(dir.path(), file, 2, Vec::new());
    procs.spawn_all();
    let generation = wait_running(&procs.admin, 0, Duration::from_secs(120)).await;
    eprintln!(
        "started: 2 spindle worker processes (generation {generation}); logs in {}",
        dir.path().display()
    );
    let holder = procs.ingress[1];

    // Every request waits at worker 1; its key is its id, each address gets one request.
    let answers: Arc<std::sync::Mutex<BTreeMap<usize, String>>> = Default::default();
    let mut first = tokio::task::JoinSet::new();
    for i in 0..REQUESTS {
        let answers = answers.clone();
        first.spawn(async move {
            let id = format!("u{i}");
            let body = format!(r#"{{"name": "{id}"}}"#);
            let got = greet(holder, &id, &body, &[("idempotency-key", &id)]).await;
            if let Some((200, _, reply)) = got {
                answers.lock().unwrap().insert(i, reply);
            }
        });
    }
    // Kill the holder while requests wait (some answered, most in flight or queued).
    let deadline = Instant::now() + Duration::from_secs(60);
    while answers.lock().unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "no request answered before the kill");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    procs.kill9(1);
    let before = answers.lock().unwrap().clone();
    eprintln!(
        "killed worker 1 (SIGKILL) with {} of {REQUESTS} requests answered",
        before.len()
    );
    while first.join_next().await.is_some() {}
    procs.spawn(1);
    let generation = wait_running(&procs.admin, generation, Duration::from_secs(120)).await;
    eprintln!("worker 1 restarted; generation {generation}");

    // Retry every request with its key until answered, alternating the workers — and the
    // answered ones once more: the same reply.
    let mut replies = BTreeMap::new();
    for i in 0..REQUESTS {
        let id = format!("u{i}");
        let body = format!(r#"{{"name": "{id}"}}"#);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut attempt = 0;
        let reply = loop {
            let at = procs.ingress[attempt % 2];
            attempt += 1;
            match greet(at, &id, &body, &[("idempotency-key", &id)]).await {
                Some((200, _, reply)) => break reply,
                other => {
                    assert!(Instant::now() < deadline, "request {i} never answered: {other:?}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        assert_eq!(reply, format!("Hello {id}, visit 1"), "request {i}");
        if let Some(earlier) = before.get(&i) {
            assert_eq!(&reply, earlier, "request {i}: a retry gets the reply the first got");
        }
        replies.insert(i, reply);
    }
    // The function's own state, read without deduplication: one visit per address.
    let mut visits = Vec::new();
    for i in 0..REQUESTS {
        visits.push(state(&procs.admin, &format!("/py/greeter/u{i}"), "visits").await);
    }
    assert!(
        visits.iter().all(|v| *v == Some(1)),
        "every address visited once: {visits:?}"
    );
    eprintln!(
        "exactly once: {REQUESTS} requests, {} answered before the kill, all answered with visit 1 after retries",
        before.len()
    );
    drop(procs);
    function.stop().await;
}
