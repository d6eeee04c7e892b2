//! The operator's /healthz, /readyz and /metrics, served on a loopback port.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use spindle_operator::metrics::Metrics;
use spindle_operator::server::{Health, ServerState, serve};
use tokio::sync::oneshot;

async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let code = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, out)
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let health = Arc::new(Health::default());
    let metrics = Arc::new(Metrics::default());
    metrics.reconciled(std::time::Duration::from_millis(3), Some("kube"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        ServerState {
            health: health.clone(),
            metrics,
        },
        async {
            let _ = stopped.await;
        },
    ));
    assert_eq!(get(addr, "/healthz").await.0, 200);
    assert_eq!(
        get(addr, "/readyz").await.0,
        503,
        "not ready before the API server answered"
    );
    health.api_reachable.store(true, Ordering::Release);
    let (code, body) = get(addr, "/readyz").await;
    assert_eq!(code, 200);
    assert!(body.contains("standby"), "{body}");
    health.leading.store(true, Ordering::Release);
    assert!(get(addr, "/readyz").await.1.contains("leading"));
    let (code, body) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    for want in [
        "spindle_operator_reconciliations_total{outcome=\"error\"} 1",
        "spindle_operator_reconcile_errors_total{kind=\"kube\"} 1",
        "spindle_operator_reconcile_duration_seconds_count 1",
        "spindle_operator_leader 0",
    ] {
        assert!(body.contains(want), "{want} in\n{body}");
    }
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
