//! What the three checkpoint measurements share: the egress webhook that timestamps every
//! `example/totals` record, closed-loop (or paced) clients sending `example/Add` through the
//! HTTP ingress, and reading histogram sums and counts from the Prometheus text.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use spindle_example_greeter::{Add, Total};
use spindle_sdk::JsonType;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Sequence numbers, unique over the whole run: a seq taken later was sent later.
static SEQ: AtomicU64 = AtomicU64::new(1);

pub(crate) fn next_seq_floor() -> u64 {
    SEQ.load(Ordering::SeqCst)
}

/// Egress records as they arrive: `(seq, arrival)`.
#[derive(Clone, Default)]
pub(crate) struct Sink {
    arrivals: Arc<Mutex<Vec<(u64, Instant)>>>,
}

impl Sink {
    /// Serves the webhook on loopback port 0 for the life of the process.
    pub async fn start() -> anyhow::Result<(Sink, SocketAddr)> {
        let sink = Sink::default();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let arrivals = sink.arrivals.clone();
        let app = axum::Router::new().fallback(move |body: Bytes| {
            let arrivals = arrivals.clone();
            async move {
                let now = Instant::now();
                match serde_json::from_slice::<Total>(&body) {
                    Ok(t) => {
                        arrivals.lock().unwrap().push((t.seq, now));
                        http::StatusCode::OK
                    }
                    Err(_) => http::StatusCode::BAD_REQUEST,
                }
            }
        });
        // Lives as long as the benchmark process (a dropped benchmark ends with it).
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok((sink, addr))
    }

    /// Everything received so far, emptying the list.
    pub fn take(&self) -> Vec<(u64, Instant)> {
        std::mem::take(&mut *self.arrivals.lock().unwrap())
    }

    pub fn len(&self) -> usize {
        self.arrivals.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The earliest arrival of a record whose seq is at least `floor` (sent after a moment).
    pub fn first_from(&self, floor: u64) -> Option<Instant> {
        self.arrivals
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _)| *s >= floor)
            .map(|(_, t)| *t)
            .min()
    }
}

/// Which counter each message goes to.
#[derive(Clone)]
pub(crate) enum Keys {
    /// `k{seq % n}`: a steady load over `n` counters.
    Cycle(u64),
    /// `k{i}` for every `i` below `end`, each once (preloading state), shared by the clients.
    Fill { next: Arc<AtomicU64>, end: u64 },
}

pub(crate) struct LoadSpec {
    pub clients: usize,
    pub ingresses: Vec<SocketAddr>,
    pub keys: Keys,
    /// Messages/s over all clients; `None`: each client sends as soon as its last is accepted.
    pub rate: Option<f64>,
}

/// Clients sending `Add {seq, value: 1}` and waiting for the ingress's `202 Accepted` (the
/// admission limit of the worker is the backpressure). A refused or failed request is retried
/// at the next ingress after 20 ms.
pub(crate) struct Load {
    stop: watch::Sender<bool>,
    clients: JoinSet<anyhow::Result<Vec<(u64, Instant)>>>,
    pub errors: Arc<AtomicU64>,
}

pub(crate) type HttpClient = Client<HttpConnector, Full<Bytes>>;

impl Load {
    pub fn start(spec: LoadSpec) -> Load {
        let (stop, stop_rx) = watch::channel(false);
        let errors = Arc::new(AtomicU64::new(0));
        let http: HttpClient = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(spec.clients)
            .build_http();
        let ingresses = Arc::new(spec.ingresses);
        let mut clients = JoinSet::new();
        for c in 0..spec.clients {
            let (http, ingresses, keys, stop, errors) = (
                http.clone(),
                ingresses.clone(),
                spec.keys.clone(),
                stop_rx.clone(),
                errors.clone(),
            );
            let period = spec
                .rate
                .map(|r| Duration::from_secs_f64(spec.clients as f64 / r.max(0.001)));
            clients.spawn(client(c, http, ingresses, keys, period, stop, errors));
        }
        Load { stop, clients, errors }
    }

    /// Stops the clients (each finishes its current request) and returns every accepted
    /// `(seq, sent at)`.
    pub async fn stop(mut self) -> anyhow::Result<Vec<(u64, Instant)>> {
        let _ = self.stop.send(true);
        let mut sent = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while let Some(r) = tokio::time::timeout_at(deadline, self.clients.join_next())
            .await
            .context("load clients did not stop within 60 s")?
        {
            sent.extend(r??);
        }
        Ok(sent)
    }

    /// Waits until a `Fill` load has sent everything (or `timeout` passes).
    pub async fn wait_finished(&mut self, timeout: Duration) -> anyhow::Result<Vec<(u64, Instant)>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut sent = Vec::new();
        while let Some(r) = tokio::time::timeout_at(deadline, self.clients.join_next())
            .await
            .with_context(|| format!("preloading did not finish within {timeout:?}"))?
        {
            sent.extend(r??);
        }
        Ok(sent)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.clients.abort_all();
    }
}

async fn client(
    c: usize,
    http: HttpClient,
    ingresses: Arc<Vec<SocketAddr>>,
    keys: Keys,
    period: Option<Duration>,
    stop: watch::Receiver<bool>,
    errors: Arc<AtomicU64>,
) -> anyhow::Result<Vec<(u64, Instant)>> {
    let mut sent = Vec::new();
    let mut next_at = tokio::time::Instant::now();
    let mut attempt = c;
    'messages: loop {
        if *stop.borrow() {
            break;
        }
        if let Some(p) = period {
            next_at += p;
            tokio::time::sleep_until(next_at).await;
        }
        // Taken right before sending: a seq above a moment's floor was sent after it.
        let seq = SEQ.fetch_add(1, Ordering::SeqCst);
        let key = match &keys {
            Keys::Cycle(n) => seq % n,
            Keys::Fill { next, end } => {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= *end {
                    break;
                }
                i
            }
        };
        let body = Bytes::from(serde_json::to_vec(&Add { seq, value: 1 })?);
        let at = Instant::now();
        loop {
            let ingress = ingresses[attempt % ingresses.len()];
            let req = Request::post(format!("http://{ingress}/example/counter/k{key}"))
                .header(header::CONTENT_TYPE, format!("application/vnd.{}", Add::TYPENAME))
                .body(Full::new(body.clone()))?;
            match tokio::time::timeout(Duration::from_secs(10), http.request(req)).await {
                Ok(Ok(resp)) if resp.status() == 202 => break,
                _ => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    attempt += 1;
                    if *stop.borrow() {
                        break 'messages;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
        sent.push((seq, at));
    }
    Ok(sent)
}

/// GET `http://{addr}{path}` with a 2 s deadline: status and body, or `None`.
pub(crate) async fn get(addr: SocketAddr, path: &str) -> Option<(u16, Bytes)> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let uri = format!("http://{addr}{path}").parse().ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(2), client.get(uri))
        .await
        .ok()?
        .ok()?;
    let status = resp.status().as_u16();
    let body = tokio::time::timeout(Duration::from_secs(2), resp.into_body().collect())
        .await
        .ok()?
        .ok()?;
    Some((status, body.to_bytes()))
}

/// Unlabelled samples of a Prometheus text exposition, by name (`_sum`, `_count`, gauges,
/// `_total` counters); bucket lines and labelled series are skipped.
pub(crate) fn scrape(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.contains('{'))
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// One histogram's running `(sum, count)` in a scrape.
pub(crate) fn histogram(m: &HashMap<String, f64>, name: &str) -> (f64, u64) {
    let sum = m.get(&format!("{name}_sum")).copied().unwrap_or(0.0);
    let count = m.get(&format!("{name}_count")).copied().unwrap_or(0.0) as u64;
    (sum, count)
}
