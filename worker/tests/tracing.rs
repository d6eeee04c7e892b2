//! Opt-in tracing: spans of ingress records, invocation batches and checkpoints reach an OTLP
//! receiver started by the test itself (OTLP/HTTP protobuf, and OTLP/gRPC), with the StateFun
//! addresses as attributes, and they link: an invocation is the child of the span of the
//! message that caused it — its ingress record's, on another worker too (the trace context
//! travels in the peer envelope), or the invocation that sent it.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use prost::Message;
use spindle_protocol::otlp::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use spindle_protocol::otlp::common::v1::any_value;
use spindle_worker::trace::{TraceConfig, Tracer};
use support::*;
use tokio::net::TcpListener;

/// A received span: its resource's `service.instance.id` and the span.
type Received = Arc<Mutex<Vec<(String, spindle_protocol::otlp::trace::v1::Span)>>>;

fn keep(received: &Received, req: ExportTraceServiceRequest) {
    let mut got = received.lock().unwrap();
    for rs in req.resource_spans {
        let instance = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.instance.id")
            .and_then(|kv| string(kv.value.as_ref()?))
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for span in ss.spans {
                got.push((instance.clone(), span));
            }
        }
    }
}

fn string(v: &spindle_protocol::otlp::common::v1::AnyValue) -> Option<String> {
    match v.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

fn attr(span: &spindle_protocol::otlp::trace::v1::Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| string(kv.value.as_ref()?))
}

/// An OTLP/HTTP receiver: `POST /v1/traces` with a protobuf `ExportTraceServiceRequest`.
async fn http_receiver() -> (SocketAddr, Received) {
    let received: Received = Default::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let keep_in = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |headers: http::HeaderMap, body: Bytes| {
            let received = keep_in.clone();
            async move {
                assert_eq!(headers["content-type"], "application/x-protobuf");
                assert_eq!(headers["x-test-tenant"], "t 1", "OTEL_EXPORTER_OTLP_HEADERS are sent");
                keep(
                    &received,
                    ExportTraceServiceRequest::decode(body).expect("a valid export request"),
                );
                ExportTraceServiceResponse::default().encode_to_vec()
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, received)
}

/// An OTLP/gRPC receiver: HTTP/2 `TraceService/Export`, one length-prefixed message each way
/// and `grpc-status` in the trailers.
async fn grpc_receiver() -> (SocketAddr, Received) {
    use http_body_util::BodyExt;
    let received: Received = Default::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let keep_in = received.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let received = keep_in.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let received = received.clone();
                    async move {
                        assert_eq!(
                            req.uri().path(),
                            "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
                        );
                        assert_eq!(req.headers()["x-test-tenant"], "t 1", "headers travel as gRPC metadata");
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        assert_eq!(body[0], 0, "uncompressed");
                        let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
                        keep(&received, ExportTraceServiceRequest::decode(&body[5..5 + len]).unwrap());
                        let reply = ExportTraceServiceResponse::default().encode_to_vec();
                        let mut frame = vec![0u8];
                        frame.extend_from_slice(&(reply.len() as u32).to_be_bytes());
                        frame.extend_from_slice(&reply);
                        let mut trailers = http::HeaderMap::new();
                        trailers.insert("grpc-status", "0".parse().unwrap());
                        let frames: Vec<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>> = vec![
                            Ok(hyper::body::Frame::data(Bytes::from(frame))),
                            Ok(hyper::body::Frame::trailers(trailers)),
                        ];
                        let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
                        Ok::<_, std::convert::Infallible>(
                            http::Response::builder()
                                .header("content-type", "application/grpc")
                                .body(body)
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, received)
}

fn config(endpoint: String, protocol: &str, instance: usize) -> TraceConfig {
    let vars: HashMap<&str, String> = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_string()),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-test-tenant=t%201".to_string()),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            format!("service.instance.id=worker-{instance}"),
        ),
        ("OTEL_BSP_SCHEDULE_DELAY", "50".to_string()),
    ]
    .into_iter()
    .collect();
    TraceConfig::from_vars(|k| vars.get(k).cloned(), "tracing-test")
        .expect("valid")
        .expect("on")
}

fn app(fn_addr: SocketAddr, dir: &std::path::Path, workers: usize) -> String {
    format!(
        r#"apiVersion: spindle.dev/v1alpha1
kind: StatefulApplication
metadata: {{name: traced}}
spec:
  functions:
    - typename: example/*
      endpoint: http://{fn_addr}/statefun
  ingresses:
    - name: web
      http: {{}}
  egresses:
    - typename: example/greets
      file: {{path: greets.jsonl}}
  workers: {workers}
  checkpoint:
    interval: 100ms
    storage: {}
"#,
        dir.join("checkpoints").display()
    )
}

/// Waits until `check` finds what it looks for in the spans received, or fails printing what
/// was received.
async fn wait_spans(
    received: &Received,
    what: &str,
    check: impl Fn(&[(String, spindle_protocol::otlp::trace::v1::Span)]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        {
            let got = received.lock().unwrap();
            if check(&got) {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                let names: Vec<String> = got
                    .iter()
                    .filter(|(_, s)| s.name != "spindle.checkpoint")
                    .take(60)
                    .map(|(i, s)| {
                        format!(
                            "{i}:{}:{:?}",
                            s.name,
                            attr(s, "statefun.target.id").or(attr(s, "statefun.function.id"))
                        )
                    })
                    .collect();
                panic!(
                    "missing after 30 s: {what}; received {} spans, of which (checkpoints left out): {names:?}",
                    got.len()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_of_records_invocations_and_checkpoints_arrive_over_otlp_http_and_link_across_workers() {
    let dir = TempDir::new("tracing-http");
    let (collector, received) = http_receiver().await;
    let (fn_addr, _stop) = example_functions().await;
    eprintln!(
        "started: an OTLP/HTTP receiver on {collector}, the example functions on {fn_addr}, two workers in this process"
    );
    let mut flushes = Vec::new();
    let tracers: Vec<Tracer> = (0..2)
        .map(|i| {
            let (t, f) = Tracer::start(config(format!("http://{collector}"), "http/protobuf", i)).unwrap();
            flushes.push(f);
            t
        })
        .collect();
    let workers = start_cluster_with(&app(fn_addr, dir.path(), 2), dir.path(), 2, |i, o| {
        o.tracer = tracers[i].clone();
    })
    .await;
    let ingress = workers[0].ingress_addr.unwrap();
    let names: Vec<String> = (0..8).map(|i| format!("p{i}")).collect();
    for name in &names {
        let (status, body) = post(
            ingress,
            &format!("/example/person/{name}"),
            "application/vnd.example/Visit",
            b"{}".to_vec(),
        )
        .await;
        assert_eq!(status, 202, "{body}");
    }
    // A caller's trace context: the record's span is its child.
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let (status, _, body) = post_with(
        ingress,
        "/example/person/withparent",
        "application/vnd.example/Visit",
        b"{}".to_vec(),
        &[("traceparent", &format!("00-{caller_trace}-{caller_span}-01"))],
    )
    .await
    .unwrap();
    assert_eq!(status, 202, "{body}");

    wait_spans(
        &received,
        "ingress, invocation and checkpoint spans of every record",
        |got| {
            let ingress = got.iter().filter(|(_, s)| s.name == "spindle.ingress").count();
            let invoked_persons = got
                .iter()
                .filter(|(_, s)| {
                    s.name == "spindle.invoke"
                        && attr(s, "statefun.function.type").as_deref() == Some("example/person")
                        && attr(s, "spindle.outcome").as_deref() == Some("ok")
                })
                .count();
            let checkpoints = got.iter().any(|(_, s)| s.name == "spindle.checkpoint");
            // Each person is invoked twice: the visit, then the greeter's answer (only calls
            // that succeeded count: a call answered `incomplete_context` has a span of its own).
            ingress >= 9 && invoked_persons >= 18 && checkpoints
        },
    )
    .await;

    let got = received.lock().unwrap().clone();
    let by_id: HashMap<Vec<u8>, &(String, spindle_protocol::otlp::trace::v1::Span)> =
        got.iter().map(|e| (e.1.span_id.to_vec(), e)).collect();
    let mut crossed = 0;
    for name in &names {
        let (instance, record) = got
            .iter()
            .find(|(_, s)| {
                s.name == "spindle.ingress" && attr(s, "statefun.target.id").as_deref() == Some(name.as_str())
            })
            .unwrap_or_else(|| panic!("no ingress span for {name}"));
        assert_eq!(instance, "worker-0", "the records entered at worker 0");
        assert_eq!(attr(record, "statefun.target.type").as_deref(), Some("example/person"));
        assert_eq!(
            attr(record, "statefun.message.typename").as_deref(),
            Some("example/Visit")
        );
        assert_eq!(attr(record, "spindle.ingress").as_deref(), Some("http"));
        assert!(
            record.parent_span_id.is_empty(),
            "a record without traceparent starts a trace"
        );
        // The visit's invocation: child of the record's span, on the worker owning the person
        // (the first call of a type may answer `incomplete_context` and be sent again: a span
        // per call, both children of the record's).
        let (owner, first) = got
            .iter()
            .find(|(_, s)| {
                s.name == "spindle.invoke"
                    && s.parent_span_id == record.span_id
                    && attr(s, "spindle.outcome").as_deref() == Some("ok")
            })
            .unwrap_or_else(|| panic!("no invocation span with the record of {name} as parent"));
        assert_eq!(first.trace_id, record.trace_id);
        assert_eq!(attr(first, "statefun.function.type").as_deref(), Some("example/person"));
        assert_eq!(attr(first, "statefun.function.id").as_deref(), Some(name.as_str()));
        assert!(first.end_time_unix_nano >= first.start_time_unix_nano);
        if owner != instance {
            crossed += 1;
        }
        // The greeter's invocation is the child of the person's, and the person's second
        // invocation (the greeter's answer) the child of the greeter's: one trace.
        let (_, greeter) = got
            .iter()
            .find(|(_, s)| {
                s.name == "spindle.invoke"
                    && s.parent_span_id == first.span_id
                    && attr(s, "spindle.outcome").as_deref() == Some("ok")
            })
            .unwrap_or_else(|| panic!("no invocation caused by {name}'s first invocation"));
        assert_eq!(
            attr(greeter, "statefun.function.type").as_deref(),
            Some("example/greeter")
        );
        assert_eq!(greeter.trace_id, record.trace_id);
        let answered = got
            .iter()
            .any(|(_, s)| s.name == "spindle.invoke" && s.parent_span_id == greeter.span_id);
        assert!(answered, "the greeter's answer to {name} continues the trace");
    }
    assert!(
        crossed > 0,
        "of 8 people at least one lives on worker 1, so its invocation's parent is a span of worker 0"
    );
    // Every parent named is a span received (or the caller's, outside).
    for (_, s) in &got {
        if !s.parent_span_id.is_empty() && s.parent_span_id.as_ref() != hex(caller_span).as_slice() {
            assert!(
                by_id.contains_key(s.parent_span_id.as_ref()),
                "span {} names a parent never sent",
                s.name
            );
        }
    }
    let (_, with_parent) = got
        .iter()
        .find(|(_, s)| s.name == "spindle.ingress" && attr(s, "statefun.target.id").as_deref() == Some("withparent"))
        .expect("the record with a traceparent has a span");
    assert_eq!(with_parent.trace_id.as_ref(), hex(caller_trace).as_slice());
    assert_eq!(with_parent.parent_span_id.as_ref(), hex(caller_span).as_slice());
    let (instance, checkpoint) = got.iter().find(|(_, s)| s.name == "spindle.checkpoint").unwrap();
    assert_eq!(instance, "worker-0", "the coordinator records the checkpoint");
    assert!(attr(checkpoint, "spindle.checkpoint.id").is_some_and(|id| id.parse::<u64>().unwrap() > 0));
    assert!(attr(checkpoint, "spindle.checkpoint.bytes").is_some());
    eprintln!(
        "received {} spans; {crossed} of 8 records were invoked on the other worker than their ingress",
        got.len()
    );
    for w in workers {
        w.shutdown().await;
    }
    for f in flushes {
        f.flush(Duration::from_secs(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_arrive_over_otlp_grpc() {
    let dir = TempDir::new("tracing-grpc");
    let (collector, received) = grpc_receiver().await;
    let (fn_addr, _stop) = example_functions().await;
    eprintln!(
        "started: an OTLP/gRPC receiver on {collector}, the example functions on {fn_addr}, one worker in this process"
    );
    let (tracer, flush) = Tracer::start(config(format!("http://{collector}"), "grpc", 0)).unwrap();
    let workers = start_cluster_with(&app(fn_addr, dir.path(), 1), dir.path(), 1, |_, o| {
        o.tracer = tracer.clone();
    })
    .await;
    let (status, body) = post(
        workers[0].ingress_addr.unwrap(),
        "/example/person/ada",
        "application/vnd.example/Visit",
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    wait_spans(&received, "the record's span and its invocation's", |got| {
        got.iter().any(|(_, r)| {
            r.name == "spindle.ingress"
                && got.iter().any(|(_, s)| {
                    s.name == "spindle.invoke"
                        && s.parent_span_id == r.span_id
                        && attr(s, "statefun.function.id").as_deref() == Some("ada")
                })
        })
    })
    .await;
    for w in workers {
        w.shutdown().await;
    }
    flush.flush(Duration::from_secs(5)).await;
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
