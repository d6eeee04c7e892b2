//! The floors beside both systems: what the same load generator gets on this machine from a
//! bare hyper echo server (the HTTP floor) and from calling the Rust-SDK function directly with
//! StateFun's protocol, state carried by the caller, without Spindle (the function floor). Each
//! operation makes as many exchanges as the workload has invocations (a chain: hops + 1 in
//! sequence), so a system's CPU per invocation divided by a floor's is its cost as a multiple
//! of what HTTP alone costs here.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use spindle_example_greeter::{Add, Hop, Total};
use spindle_protocol::Message as _;
use spindle_protocol::reqreply::{
    Address, FromFunction, ToFunction, TypedValue, from_function,
    to_function::{self, InvocationBatchRequest, PersistedValue},
};
use spindle_sdk::Type;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use super::{Side, SideKind};
use crate::harness::{Harness, free_addr};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Floor {
    /// A bare hyper HTTP/1.1 server answering every POST with its body.
    Http,
    /// The Rust-SDK function called directly with StateFun's protocol (no Spindle).
    Statefun,
}

impl Floor {
    pub fn label(self) -> &'static str {
        match self {
            Floor::Http => "floor: bare hyper echo server",
            Floor::Statefun => "floor: bare StateFun call to the Rust-SDK function",
        }
    }

    pub fn guarantee(self) -> &'static str {
        match self {
            Floor::Http => "none: the echoed body (one exchange per invocation)",
            Floor::Statefun => {
                "none: the function's answer, state kept in the load generator's memory (one exchange per invocation)"
            }
        }
    }
}

/// The echo server: this binary, `serve-echo`, in its own process so its CPU is its own.
pub(crate) struct EchoProcess {
    pub addr: SocketAddr,
    child: Child,
}

impl EchoProcess {
    pub async fn start() -> anyhow::Result<EchoProcess> {
        let addr = free_addr()?;
        let mut child = Command::new(std::env::current_exe()?)
            .arg("serve-echo")
            .env("PORT", addr.port().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting the echo server")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            if let Some(status) = child.try_wait()? {
                bail!("the echo server exited ({status}) before it listened on {addr}");
            }
            ensure!(
                Instant::now() < deadline,
                "the echo server is not listening on {addr} after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        println!(
            "started: {} — pid {}, on {addr}",
            Floor::Http.label(),
            child.id().unwrap_or(0)
        );
        Ok(EchoProcess { addr, child })
    }

    pub fn side(&self) -> Side {
        Side {
            label: Floor::Http.label().into(),
            kind: SideKind::Floor(Floor::Http),
            ingress: self.addr,
            admin: None,
            processes: vec![("echo server (hyper)", self.child.id().unwrap_or(0))],
            direct: None,
        }
    }
}

/// The function floor's side: the benchmark's Rust-SDK function process, called directly.
pub(crate) fn statefun_side(h: &Harness, keys: u64) -> Side {
    Side {
        label: Floor::Statefun.label().into(),
        kind: SideKind::Floor(Floor::Statefun),
        ingress: SocketAddr::from(([127, 0, 0, 1], h.function.port)),
        admin: None,
        processes: vec![("counter function (Rust SDK)", h.function.pid().unwrap_or(0))],
        direct: Some(std::sync::Arc::new(Direct::new(keys))),
    }
}

/// `serve-echo`: answers every request on 127.0.0.1:$PORT with 200 and the request's body,
/// over HTTP/1.1 with keep-alive, one task per connection.
pub async fn serve_echo() -> anyhow::Result<()> {
    let port: u16 = std::env::var("PORT").context("PORT is not set")?.parse()?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                let body = req.into_body().collect().await?.to_bytes();
                Ok::<_, hyper::Error>(Response::new(Full::new(body)))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// State of the function floor, per key, held by the load generator the way a runtime would:
/// one invocation per address at a time, the state sent along and the mutation kept.
pub(crate) struct Direct {
    counters: Vec<Mutex<i64>>,
    hops: Vec<Mutex<i64>>,
}

impl Direct {
    pub fn new(keys: u64) -> Direct {
        Direct {
            counters: (0..keys).map(|_| Mutex::new(0)).collect(),
            hops: (0..keys).map(|_| Mutex::new(0)).collect(),
        }
    }

    /// Sums of the counters and of the hop counts, for the final check.
    pub async fn sums(&self) -> (u64, u64) {
        let mut sums = (0i64, 0i64);
        for c in &self.counters {
            sums.0 += *c.lock().await;
        }
        for h in &self.hops {
            sums.1 += *h.lock().await;
        }
        (sums.0.max(0) as u64, sums.1.max(0) as u64)
    }

    /// One add to `example/counter/k{key}`; with `reply`, made with a caller (the function
    /// answers it) as a request-reply invocation is, else without (the function emits an
    /// egress record). The answer must carry this add's total.
    pub async fn add(
        &self,
        client: &Client<HttpConnector, Full<Bytes>>,
        function: SocketAddr,
        seq: u64,
        key: u64,
        reply: bool,
    ) -> anyhow::Result<()> {
        let id = format!("k{key}");
        let mut state = self.counters[key as usize].lock().await;
        let argument = typed(&Add { seq, value: 1 });
        let caller = reply.then(|| address("spindle", "ingress", "floor"));
        let r = call(client, function, "counter", &id, "total", *state, caller, argument).await?;
        let out = match (reply, r.outgoing_messages.first(), r.outgoing_egresses.first()) {
            (true, Some(m), _) => m.argument.as_ref(),
            (false, _, Some(e)) => e.argument.as_ref(),
            _ => None,
        };
        let total: Total = out
            .context("the function answered without a total")
            .and_then(|v| Ok(serde_json::from_slice(&v.value)?))?;
        ensure!(
            total.seq == seq && total.total == *state + 1,
            "the answer to add {seq} on {id} is {total:?} (state was {})",
            *state
        );
        *state = mutated(&r, "total")?;
        Ok(())
    }

    /// A chain from `example/hop/h{key}`: each answer's outgoing message is the next call,
    /// until the last hop's egress record.
    pub async fn chain(
        &self,
        client: &Client<HttpConnector, Full<Bytes>>,
        function: SocketAddr,
        seq: u64,
        key: u64,
        hops: u32,
        spread: u64,
    ) -> anyhow::Result<()> {
        let mut id = format!("h{key}");
        let mut argument = typed(&Hop {
            seq,
            remaining: hops,
            spread: spread as u32,
        });
        for _ in 0..=hops {
            let index: usize = id
                .strip_prefix('h')
                .and_then(|n| n.parse().ok())
                .filter(|&n: &usize| n < self.hops.len())
                .with_context(|| format!("the chain of {seq} went to hop {id}, outside the keys"))?;
            let mut state = self.hops[index].lock().await;
            let r = call(client, function, "hop", &id, "hops", *state, None, argument).await?;
            *state = mutated(&r, "hops")?;
            drop(state);
            if let Some(m) = r.outgoing_messages.into_iter().next() {
                id = m.target.map(|t| t.id).unwrap_or_default();
                argument = m.argument.context("a hop without an argument")?;
            } else {
                ensure!(
                    !r.outgoing_egresses.is_empty(),
                    "hop {id} of chain {seq} answered neither a next hop nor a report"
                );
                return Ok(());
            }
        }
        bail!("the chain of {seq} did not end after {hops} hops")
    }
}

fn address(namespace: &str, ty: &str, id: &str) -> Address {
    Address {
        namespace: namespace.into(),
        r#type: ty.into(),
        id: id.into(),
    }
}

fn typed<T: Type>(v: &T) -> TypedValue {
    TypedValue {
        typename: T::typename().into(),
        has_value: true,
        value: v.encode(),
    }
}

/// One `ToFunction` to `example/{ty}/{id}` with integer state `name` = `state`.
#[allow(clippy::too_many_arguments)]
async fn call(
    client: &Client<HttpConnector, Full<Bytes>>,
    function: SocketAddr,
    ty: &str,
    id: &str,
    name: &str,
    state: i64,
    caller: Option<Address>,
    argument: TypedValue,
) -> anyhow::Result<from_function::InvocationResponse> {
    let request = ToFunction {
        request: Some(to_function::Request::Invocation(InvocationBatchRequest {
            target: Some(address("example", ty, id)),
            state: vec![PersistedValue {
                state_name: name.into(),
                state_value: Some(typed(&state)),
            }],
            invocations: vec![to_function::Invocation {
                caller,
                argument: Some(argument),
            }],
        })),
    };
    let req = Request::post(format!("http://{function}/statefun"))
        .header(header::CONTENT_TYPE, spindle_protocol::CONTENT_TYPE)
        .body(Full::new(Bytes::from(request.encode_to_vec())))?;
    let resp = client.request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    ensure!(
        status == StatusCode::OK,
        "the function answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    match FromFunction::decode(body)?.response {
        Some(from_function::Response::InvocationResult(r)) => Ok(r),
        other => bail!("the function answered {other:?}, not an invocation result"),
    }
}

/// The new value of integer state `name` in `r`.
fn mutated(r: &from_function::InvocationResponse, name: &str) -> anyhow::Result<i64> {
    let m = r
        .state_mutations
        .iter()
        .find(|m| m.state_name == name)
        .with_context(|| format!("the function did not set `{name}`"))?;
    let v = m.state_value.as_ref().context("a mutation without a value")?;
    Ok(<i64 as Type>::decode(&v.value)?)
}

#[cfg(test)]
mod tests {
    use hyper_util::rt::TokioExecutor;

    use super::*;

    /// The function floor against the example functions served in this process: adds carry
    /// their totals, chains end after their hops, and the kept state sums to what was sent.
    #[tokio::test]
    async fn the_function_floor_keeps_and_checks_state_like_a_runtime() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let function = listener.local_addr().unwrap();
        let functions = std::sync::Arc::new(spindle_example_greeter::functions());
        tokio::spawn(spindle_sdk::serve(listener, functions, std::future::pending()));
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let direct = Direct::new(3);
        for seq in 0..10 {
            direct.add(&client, function, seq, seq % 3, seq % 2 == 0).await.unwrap();
        }
        for seq in 0..4 {
            direct.chain(&client, function, seq, seq % 3, 5, 3).await.unwrap();
        }
        assert_eq!(direct.sums().await, (10, 4 * 6));
    }
}
