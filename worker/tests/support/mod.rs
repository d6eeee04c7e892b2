//! Shared helpers of the worker's end-to-end tests: temporary directories, starting a worker
//! on loopback port 0, reading egress files, waiting on conditions with deadlines.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use spindle_worker::{AppConfig, Listeners, Worker, WorkerOptions};
use tokio::net::TcpListener;

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "spindle-test-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // `SPINDLE_KEEP_TEST_DIRS=1` keeps them (worker logs) for a look after a failure.
        if std::env::var_os("SPINDLE_KEEP_TEST_DIRS").is_some() {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Logs of the code under test, shown for failing tests; `RUST_LOG` picks what (default: warn).
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Starts a worker for `yaml`, with ingress and admin on loopback port 0.
pub async fn start_worker(yaml: &str, dir: &Path) -> Worker {
    init_logs();
    let app = spindle_spec::from_yaml_str(yaml, "test app").expect("test app is valid");
    let config = AppConfig::resolve(&app, dir);
    let listeners = Listeners {
        ingress: Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
        admin: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        peer: None,
    };
    let options = WorkerOptions {
        data_dir: Some(dir.join("data")),
        ..WorkerOptions::default()
    };
    Worker::start(config, options, listeners).await.expect("worker starts")
}

/// The complete JSON lines of an egress file (none if it does not exist yet). A last line
/// without its newline is one the sink is still writing (a big record takes more than one
/// write), so it is left for the next read; a torn line before the last still fails.
pub fn egress_lines(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    complete
        .lines()
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("line {} of {} is not JSON: {e}", i + 1, path.display()))
        })
        .collect()
}

/// The values of an egress file's records, as strings (JSON strings unquoted, raw bytes as
/// UTF-8).
pub fn egress_values(path: &Path) -> Vec<String> {
    egress_lines(path)
        .into_iter()
        .map(|v| match (&v["value"], &v["valueBase64"]) {
            (serde_json::Value::String(s), _) => s.clone(),
            (serde_json::Value::Null, serde_json::Value::String(b)) => {
                use base64::Engine;
                let raw = base64::engine::general_purpose::STANDARD.decode(b).unwrap();
                String::from_utf8(raw).unwrap()
            }
            (other, _) => other.to_string(),
        })
        .collect()
}

/// Polls `cond` every 10 ms until it holds; panics with `what` after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `n` distinct free loopback ports: all bound at once, then released (ports taken one by one
/// can repeat: the kernel hands a port just released out again, and Apache Kafka then refused
/// the same port for two listeners).
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter().map(|l| l.local_addr().unwrap().port()).collect()
}

/// A free loopback port (bound to port 0, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The workspace root (tests run in the crate directory).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

pub mod brokers;
pub mod function;
pub mod moto;
pub mod procs;
pub mod proxy;
pub mod sdk;

/// An application with one function type namespace `t/*` at `endpoint`, an HTTP ingress and a
/// file egress `t/out` at `out.jsonl`; `extra` is appended to `spec:`.
pub fn test_app(endpoint: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {{name: test}}
spec:
  functions:
    - typename: t/*
      endpoint: {endpoint}
      callTimeout: 20s
  ingresses:
    - name: web
      http: {{maxBodyBytes: 1024}}
  egresses:
    - typename: t/out
      file: {{path: out.jsonl}}
{extra}
"#
    )
}

/// POSTs `body` to the ingress with content type `application/vnd.{typename}`; the status.
pub async fn post(ingress: std::net::SocketAddr, path: &str, content_type: &str, body: Vec<u8>) -> (u16, String) {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let req = http::Request::post(format!("http://{ingress}{path}"))
        .header("content-type", content_type)
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let resp = client.request(req).await.expect("ingress answers");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).to_string())
}

/// Sends a text message to `t/<ty>/<id>` with typename `t/Text`; panics unless accepted.
pub async fn send_text(ingress: std::net::SocketAddr, ty: &str, id: &str, text: &str) {
    let (status, body) = post(
        ingress,
        &format!("/t/{ty}/{id}"),
        "application/vnd.t/Text",
        text.as_bytes().to_vec(),
    )
    .await;
    assert_eq!(status, 202, "{body}");
}

/// POSTs with extra headers: (status, headers, body). A connection failure is `None`.
pub async fn post_with(
    ingress: std::net::SocketAddr,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> Option<(u16, http::HeaderMap, String)> {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<bytes::Bytes>>();
    let mut req = http::Request::post(format!("http://{ingress}{path}")).header("content-type", content_type);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(http_body_util::Full::new(bytes::Bytes::from(body))).unwrap())
        .await
        .ok()?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some((status, headers, String::from_utf8_lossy(&body).to_string()))
}

/// GETs `path` from `addr`: (status, body).
pub async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let resp = client
        .get(format!("http://{addr}{path}").parse().unwrap())
        .await
        .expect("server answers");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).to_string())
}

/// Starts `n` workers of `yaml` connected as one cluster over loopback gRPC; worker `i` keeps
/// its files (egress, dead letters) in `dir/w{i}`.
pub async fn start_cluster(yaml: &str, dir: &Path, n: usize) -> Vec<Worker> {
    start_cluster_with(yaml, dir, n, |_, _| {}).await
}

/// [`start_cluster`], with `adjust(i, options)` called on worker `i`'s options first.
pub async fn start_cluster_with(
    yaml: &str,
    dir: &Path,
    n: usize,
    adjust: impl Fn(usize, &mut WorkerOptions),
) -> Vec<Worker> {
    init_logs();
    let peers: Vec<TcpListener> = futures_bind(n).await;
    let addrs: Vec<String> = peers.iter().map(|l| l.local_addr().unwrap().to_string()).collect();
    let app = spindle_spec::from_yaml_str(yaml, "test app").expect("test app is valid");
    let mut workers = Vec::new();
    for (i, peer) in peers.into_iter().enumerate() {
        let wdir = dir.join(format!("w{i}"));
        let listeners = Listeners {
            ingress: Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
            admin: TcpListener::bind("127.0.0.1:0").await.unwrap(),
            peer: Some(peer),
        };
        let mut options = WorkerOptions {
            data_dir: Some(wdir.join("data")),
            cluster: spindle_worker::peer::Cluster {
                index: i as u32,
                peers: addrs.clone(),
            },
            ..WorkerOptions::default()
        };
        adjust(i, &mut options);
        let mut config = AppConfig::resolve(&app, &wdir);
        // One store for all, as in a real deployment (the default is per base directory).
        if config.checkpoint.storage.is_none() {
            config.checkpoint.storage = Some(dir.join("checkpoints").display().to_string());
        }
        workers.push(Worker::start(config, options, listeners).await.expect("worker starts"));
    }
    workers
}

async fn futures_bind(n: usize) -> Vec<TcpListener> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    v
}

/// Waits until every worker of a cluster is idle at once.
pub async fn wait_cluster_idle(workers: &[Worker], timeout: Duration) {
    let deadline = tokio::time::Instant::now() + timeout;
    // Idle twice in a row, 20 ms apart: a message between two workers is always counted on one
    // side (peer_pending until acknowledged), but the reads of three workers are not atomic.
    let mut streak = 0;
    while streak < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "cluster not idle after {timeout:?}"
        );
        streak = if workers.iter().all(|w| w.metrics.is_idle()) {
            streak + 1
        } else {
            0
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The Python venv with the official StateFun SDK (created on first use by
/// `e2e/python/setup-venv.sh`, in `$SPINDLE_PY_VENV`, default `target/py-venv`).
pub fn python_venv() -> PathBuf {
    let venv = std::env::var_os("SPINDLE_PY_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/py-venv"));
    let script = workspace_root().join("e2e/python/setup-venv.sh");
    let status = std::process::Command::new("bash")
        .arg(&script)
        .arg(&venv)
        .status()
        .expect("running setup-venv.sh");
    assert!(
        status.success(),
        "{} failed: cannot create the Python venv",
        script.display()
    );
    venv
}

/// An application running `e2e/python/functions.py` as `py/*` from `local.command`, with an
/// HTTP ingress and the `py/out` egress in `out/py.jsonl`; `extra` goes under `spec:`.
pub fn python_local_app(name: &str, extra: &str) -> String {
    let venv = python_venv();
    format!(
        r#"
apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {{name: {name}}}
spec:
{extra}
  functions:
    - typename: py/*
      endpoint: http://py-functions:8000/statefun
      local:
        command: ["{python}", "{functions}"]
  ingresses:
    - name: web
      http: {{}}
  egresses:
    - typename: py/out
      file: {{path: out/py.jsonl}}
"#,
        python = venv.join("bin/python").display(),
        functions = workspace_root().join("e2e/python/functions.py").display()
    )
}

/// The example functions (Rust SDK) served in this process on a loopback port, until the
/// returned sender is dropped or set.
pub async fn example_functions() -> (std::net::SocketAddr, tokio::sync::watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, mut stop_rx) = tokio::sync::watch::channel(false);
    let functions = std::sync::Arc::new(spindle_example_greeter::functions());
    tokio::spawn(spindle_sdk::serve(listener, functions, async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    (addr, stop)
}
