//! The exporter task: collects ended spans, sends them in batches (`max_batch`, or what came
//! within `delay`) as one `ExportTraceServiceRequest` each, over OTLP/HTTP protobuf or
//! OTLP/gRPC. A failed export is logged and dropped: tracing never holds the data plane up.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use prost::Message;
use spindle_protocol::otlp::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use spindle_protocol::otlp::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use spindle_protocol::otlp::resource::v1::Resource;
use spindle_protocol::otlp::trace::v1::{ResourceSpans, ScopeSpans, Status, span, status};
use tokio::sync::{mpsc, oneshot};

use super::config::{Protocol, TraceConfig, TraceConfigError};
use super::{Attr, Span};
use crate::tls::client::{HttpClient, error_chain, http_client};

const GRPC_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Sends what is queued and stops the exporter; for the end of a process.
pub struct Flush {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Flush {
    /// Waits at most `timeout` for the last spans to leave.
    pub async fn flush(self, timeout: Duration) {
        let _ = self.stop.send(());
        if tokio::time::timeout(timeout, self.task).await.is_err() {
            tracing::warn!(?timeout, "tracing: the last spans were not sent in time");
        }
    }
}

enum Transport {
    Http(HttpClient),
    Grpc(tonic::client::Grpc<tonic::transport::Channel>),
}

pub(super) fn spawn(config: TraceConfig, rx: mpsc::Receiver<Span>) -> Result<Flush, TraceConfigError> {
    let var = "OTEL_EXPORTER_OTLP_ENDPOINT";
    let transport = match config.protocol {
        Protocol::HttpProtobuf => Transport::Http(
            http_client(None, std::path::Path::new("."), Duration::from_secs(60))
                .map_err(|e| TraceConfigError::new(var, format!("TLS: {e}")))?,
        ),
        Protocol::Grpc => {
            let endpoint = tonic::transport::Endpoint::from_shared(config.endpoint.clone())
                .map_err(|e| TraceConfigError::new(var, format!("`{}`: {e}", config.endpoint)))?
                .timeout(config.timeout);
            Transport::Grpc(tonic::client::Grpc::new(endpoint.connect_lazy()))
        }
    };
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(run(config, transport, rx, stopped));
    Ok(Flush { stop, task })
}

async fn run(
    config: TraceConfig,
    mut transport: Transport,
    mut rx: mpsc::Receiver<Span>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut batch: Vec<Span> = Vec::with_capacity(config.max_batch);
    let mut failures: u64 = 0;
    // A dropped `Flush` is no request to stop: the exporter then runs until every tracer is gone.
    let mut stop_gone = false;
    loop {
        let deadline = tokio::time::Instant::now() + config.delay;
        let mut last = false;
        while batch.len() < config.max_batch {
            tokio::select! {
                span = rx.recv() => match span {
                    Some(span) => batch.push(span),
                    None => { last = true; break; }
                },
                _ = tokio::time::sleep_until(deadline) => break,
                asked = &mut stop, if !stop_gone => {
                    if asked.is_err() {
                        stop_gone = true;
                        continue;
                    }
                    while let Ok(span) = rx.try_recv() {
                        batch.push(span);
                    }
                    last = true;
                    break;
                }
            }
        }
        for chunk in batch.chunks(config.max_batch) {
            let request = encode(&config, chunk);
            if let Err(e) = send(&config, &mut transport, request).await {
                failures += 1;
                if failures.is_power_of_two() {
                    tracing::warn!(endpoint = %config.endpoint, failures, error = %e, "tracing: exporting spans failed; they are dropped");
                }
            }
        }
        batch.clear();
        if last {
            return;
        }
    }
}

async fn send(
    config: &TraceConfig,
    transport: &mut Transport,
    request: ExportTraceServiceRequest,
) -> Result<(), String> {
    match transport {
        Transport::Http(client) => {
            let mut req = Request::post(&config.endpoint).header(http::header::CONTENT_TYPE, "application/x-protobuf");
            for (k, v) in &config.headers {
                req = req.header(k.as_str(), v.as_str());
            }
            let req = req
                .body(Full::new(Bytes::from(request.encode_to_vec())))
                .map_err(|e| e.to_string())?;
            let call = async {
                let resp = client.request(req).await.map_err(|e| error_chain(&e))?;
                let status = resp.status();
                let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
                if status.is_success() {
                    Ok(())
                } else {
                    Err(format!(
                        "HTTP {status}: {}",
                        String::from_utf8_lossy(&body[..body.len().min(200)])
                    ))
                }
            };
            tokio::time::timeout(config.timeout, call)
                .await
                .map_err(|_| format!("no answer within {:?}", config.timeout))?
        }
        Transport::Grpc(grpc) => {
            let mut req = tonic::Request::new(request);
            for (k, v) in &config.headers {
                let key = tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                    .map_err(|e| e.to_string())?;
                let value = v.parse().map_err(|_| format!("header {k}: not a valid value"))?;
                req.metadata_mut().insert(key, value);
            }
            grpc.ready().await.map_err(|e| error_chain(&e))?;
            let codec = tonic_prost::ProstCodec::<ExportTraceServiceRequest, ExportTraceServiceResponse>::default();
            grpc.unary(req, http::uri::PathAndQuery::from_static(GRPC_PATH), codec)
                .await
                .map(|_| ())
                .map_err(|s| format!("gRPC {:?}: {}", s.code(), s.message()))
        }
    }
}

fn kv(key: &str, value: &Attr) -> KeyValue {
    let value = match value {
        Attr::Str(s) => any_value::Value::StringValue(s.clone()),
        Attr::Int(i) => any_value::Value::IntValue(*i),
    };
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// One request for `spans`, under the process's resource. Pure.
pub(super) fn encode(config: &TraceConfig, spans: &[Span]) -> ExportTraceServiceRequest {
    let mut resource = vec![kv("service.name", &Attr::Str(config.service_name.clone()))];
    resource.extend(config.resource.iter().map(|(k, v)| kv(k, &Attr::Str(v.clone()))));
    let spans = spans
        .iter()
        .map(|s| spindle_protocol::otlp::trace::v1::Span {
            trace_id: Bytes::copy_from_slice(&s.ctx.trace_id),
            span_id: Bytes::copy_from_slice(&s.ctx.span_id),
            parent_span_id: s.parent.map_or_else(Bytes::new, |p| Bytes::copy_from_slice(&p.span_id)),
            // Sampled (W3C flags bit 0).
            flags: 1,
            name: s.name.to_string(),
            kind: s.kind as i32,
            start_time_unix_nano: s.start_ns,
            end_time_unix_nano: s.end_ns,
            attributes: s.attrs.iter().map(|(k, v)| kv(k, v)).collect(),
            links: s
                .links
                .iter()
                .map(|l| span::Link {
                    trace_id: Bytes::copy_from_slice(&l.trace_id),
                    span_id: Bytes::copy_from_slice(&l.span_id),
                    flags: 1,
                    ..Default::default()
                })
                .collect(),
            status: s.error.as_ref().map(|m| Status {
                message: m.clone(),
                code: status::StatusCode::Error as i32,
            }),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "spindle".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{Kind, SpanContext};

    #[test]
    fn spans_encode_with_parent_links_attributes_and_status() {
        let config = TraceConfig::from_vars(
            |k| (k == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "http://127.0.0.1:1".to_string()),
            "svc",
        )
        .unwrap()
        .unwrap();
        let parent = SpanContext {
            trace_id: [1; 16],
            span_id: [2; 8],
        };
        let link = SpanContext {
            trace_id: [3; 16],
            span_id: [4; 8],
        };
        let mut s = Span {
            ctx: SpanContext {
                trace_id: [1; 16],
                span_id: [5; 8],
            },
            parent: Some(parent),
            links: vec![link],
            name: "spindle.invoke",
            kind: Kind::Client,
            start_ns: 10,
            end_ns: 20,
            attrs: Vec::new(),
            error: Some("boom".into()),
        };
        s.str("statefun.function.type", "greeter/person")
            .int("spindle.batch.size", 2);
        let req = encode(&config, &[s]);
        let rs = &req.resource_spans[0];
        assert_eq!(rs.resource.as_ref().unwrap().attributes[0].key, "service.name");
        let p = &rs.scope_spans[0].spans[0];
        assert_eq!(&p.parent_span_id[..], &[2; 8]);
        assert_eq!(&p.links[0].span_id[..], &[4; 8]);
        assert_eq!(p.kind, 3);
        assert_eq!(p.attributes.len(), 2);
        assert_eq!(p.status.as_ref().unwrap().code, 2);
        // Round trip through the wire form a collector decodes.
        let back = ExportTraceServiceRequest::decode(req.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back, req);
    }
}
