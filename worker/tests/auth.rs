//! Bearer tokens on what users and admins call: the HTTP ingress refuses requests without an
//! accepted token (401 without one, 403 with a wrong one, both with `WWW-Authenticate`) and
//! lets the others in; the admin endpoints that expose data (`/state`, `/dead-letters`) need
//! the admin token while `/healthz`, `/readyz`, `/metrics` and `/status` stay open. A worker on
//! loopback, real HTTP.

mod support;

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use support::function::{self, echo_to_egress};
use support::*;
use tokio::net::TcpListener;

async fn get_with(addr: std::net::SocketAddr, path: &str, auth: Option<&str>) -> (u16, http::HeaderMap, String) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let mut req = http::Request::get(format!("http://{addr}{path}"));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = client.request(req.body(Default::default()).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ingress_and_the_data_admin_endpoints_need_their_tokens() {
    let (addr, _stop) = function::serve(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        Arc::new(echo_to_egress),
    );
    let dir = TempDir::new("auth");
    std::fs::write(dir.path().join("ingress-tokens"), "# clients\nclient-a\nclient-b\n").unwrap();
    std::fs::write(dir.path().join("admin-tokens"), "ops-token\n").unwrap();
    let yaml = test_app(
        &format!("http://{addr}/x"),
        "  admin:\n    auth: {tokensFile: admin-tokens}",
    )
    .replace(
        "http: {maxBodyBytes: 1024}",
        "http: {maxBodyBytes: 1024, auth: {tokensFile: ingress-tokens}}",
    );
    let worker = start_worker(&yaml, dir.path()).await;
    let ingress = worker.ingress_addr.unwrap();
    let admin = worker.admin_addr;
    eprintln!("started: worker with ingress {ingress} (bearer tokens), admin {admin}");

    let send = |auth: Option<&'static str>| async move {
        let mut headers = Vec::new();
        if let Some(a) = auth {
            headers.push(("authorization", a));
        }
        post_with(
            ingress,
            "/t/f/alice",
            "application/vnd.t/Text",
            b"hello".to_vec(),
            &headers,
        )
        .await
        .expect("the ingress answers")
    };
    let (status, headers, body) = send(None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"spindle-ingress\"");
    assert!(body.contains("needs `Authorization: Bearer <token>`"), "{body}");
    let (status, headers, body) = send(Some("Bearer client-c")).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        headers["www-authenticate"],
        "Bearer realm=\"spindle-ingress\", error=\"invalid_token\""
    );
    assert!(
        body.contains("not one this endpoint accepts") && !body.contains("client-a"),
        "{body}"
    );
    let (status, _, body) = send(Some("Basic Y2xpZW50LWE6")).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("not `Bearer <token>`"), "{body}");
    let (status, _, body) = send(Some("Bearer client-b")).await;
    assert_eq!(status, 202, "{body}");
    worker.wait_idle(Duration::from_secs(30)).await.unwrap();
    assert_eq!(
        egress_values(&dir.path().join("out.jsonl")),
        ["hello"],
        "only the authenticated record went in"
    );

    for open in ["/healthz", "/readyz", "/metrics", "/status"] {
        let (status, _, body) = get_with(admin, open, None).await;
        assert_eq!(status, 200, "{open}: {body}");
    }
    let metrics = get_with(admin, "/metrics", None).await.2;
    assert!(
        metrics.contains("kind=\"unauthenticated\"") && metrics.contains("kind=\"forbidden\""),
        "refusals are counted"
    );
    for data in ["/state/t/f/alice", "/dead-letters"] {
        let (status, headers, _) = get_with(admin, data, None).await;
        assert_eq!(status, 401, "{data}");
        assert_eq!(headers["www-authenticate"], "Bearer realm=\"spindle-admin\"");
        let (status, _, _) = get_with(admin, data, Some("Bearer client-a")).await;
        assert_eq!(status, 403, "{data}: an ingress token is not an admin token");
        let (status, _, body) = get_with(admin, data, Some("Bearer ops-token")).await;
        assert_eq!(status, 200, "{data}: {body}");
    }
    worker.shutdown().await;
}
