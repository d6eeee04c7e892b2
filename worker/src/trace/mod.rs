//! Opt-in tracing: OpenTelemetry spans per ingress record, per invocation batch and per
//! checkpoint, exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-only
//! variable) is set. Off by default: a [`Tracer`] that is off is a `None`, and every hook
//! checks it before building anything.
//!
//! The trace context travels with the message ([`crate::message::Envelope::trace`], field 8 of
//! the wire and checkpoint envelope), so an invocation on another worker is the child of the
//! ingress record's span, and a message a function sends carries its invocation's span on.
//!
//! - `config`: the `OTEL_*` variables (pure)
//! - `export`: the batching exporter task, OTLP/HTTP protobuf or OTLP/gRPC

pub mod config;
mod export;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

pub use config::{Protocol, TraceConfig, TraceConfigError};
pub use export::Flush;

/// Spans waiting for the exporter; more are dropped (and counted) rather than slowing the
/// data plane down when the collector is slow or away.
const QUEUE: usize = 8192;

/// A span's identity as another span's parent or link: W3C trace id and span id.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct SpanContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

impl SpanContext {
    /// As field 8 of the envelope: trace id then span id (24 bytes).
    pub fn to_bytes(self) -> [u8; 24] {
        let mut b = [0; 24];
        b[..16].copy_from_slice(&self.trace_id);
        b[16..].copy_from_slice(&self.span_id);
        b
    }

    /// `None` for anything but 24 bytes (an empty field: no trace).
    pub fn from_bytes(b: &[u8]) -> Option<SpanContext> {
        if b.len() != 24 {
            return None;
        }
        Some(SpanContext {
            trace_id: b[..16].try_into().ok()?,
            span_id: b[16..].try_into().ok()?,
        })
    }

    /// A W3C `traceparent` header (`00-{trace}-{span}-{flags}`); only sampled ones are taken.
    pub fn from_traceparent(header: &str) -> Option<SpanContext> {
        let parts: Vec<&str> = header.trim().split('-').collect();
        let [version, trace, span, flags] = parts[..] else {
            return None;
        };
        if version.len() != 2 || version == "ff" || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return None;
        }
        let flags = u8::from_str_radix(flags, 16).ok()?;
        let ctx = SpanContext {
            trace_id: hex_array(trace)?,
            span_id: hex_array(span)?,
        };
        let valid = ctx.trace_id != [0; 16] && ctx.span_id != [0; 8];
        (valid && flags & 1 == 1).then_some(ctx)
    }
}

fn hex_array<const N: usize>(s: &str) -> Option<[u8; N]> {
    let mut out = [0; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Span kinds, as OTLP numbers them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Internal = 1,
    Server = 2,
    Client = 3,
    Consumer = 5,
}

/// An attribute value.
#[derive(Clone, PartialEq, Debug)]
pub enum Attr {
    Str(String),
    Int(i64),
}

/// A span being recorded: started by [`Tracer::start`], sent by [`Tracer::end`].
#[derive(Debug)]
pub struct Span {
    pub ctx: SpanContext,
    pub parent: Option<SpanContext>,
    pub links: Vec<SpanContext>,
    pub name: &'static str,
    pub kind: Kind,
    pub start_ns: u64,
    pub end_ns: u64,
    pub attrs: Vec<(&'static str, Attr)>,
    /// An error status with its message (`None`: unset, i.e. fine).
    pub error: Option<String>,
}

impl Span {
    pub fn str(&mut self, key: &'static str, value: impl Into<String>) -> &mut Span {
        self.attrs.push((key, Attr::Str(value.into())));
        self
    }

    pub fn int(&mut self, key: &'static str, value: i64) -> &mut Span {
        self.attrs.push((key, Attr::Int(value)));
        self
    }
}

/// Nanoseconds since the Unix epoch, as OTLP wants span times.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

struct Inner {
    spans: mpsc::Sender<Span>,
    /// Ids: a SplitMix64 sequence seeded from the system's random source (ids need to be
    /// unique, not secret; a syscall per span would cost more than the span).
    seq: AtomicU64,
    /// Fraction of new traces kept (`OTEL_TRACES_SAMPLER=traceidratio`), as a threshold on the
    /// trace id's low 8 bytes; `u64::MAX`: all.
    keep_below: u64,
    dropped: AtomicU64,
}

/// The handle every hook holds; cheap to clone. The default is off.
#[derive(Clone, Default)]
pub struct Tracer(Option<Arc<Inner>>);

impl std::fmt::Debug for Tracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_on() { "Tracer(on)" } else { "Tracer(off)" })
    }
}

impl Tracer {
    /// No spans, no cost.
    pub fn off() -> Tracer {
        Tracer(None)
    }

    /// Starts the exporter task for `config` (on the current Tokio runtime). The returned
    /// [`Flush`] sends what is queued when the process stops.
    pub fn start(config: TraceConfig) -> Result<(Tracer, Flush), TraceConfigError> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut seed = [0u8; 8];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
            .map_err(|_| TraceConfigError::new("tracing", "the system's random source failed".into()))?;
        let keep_below = match config.ratio {
            r if r >= 1.0 => u64::MAX,
            r => (r.max(0.0) * u64::MAX as f64) as u64,
        };
        let flush = export::spawn(config, rx)?;
        let inner = Inner {
            spans: tx,
            seq: AtomicU64::new(u64::from_le_bytes(seed)),
            keep_below,
            dropped: AtomicU64::new(0),
        };
        Ok((Tracer(Some(Arc::new(inner))), flush))
    }

    /// From the process's `OTEL_*` variables: off when no endpoint is set (or
    /// `OTEL_SDK_DISABLED=true`, `OTEL_TRACES_EXPORTER=none`). `resource`: attributes of this
    /// process added unless `OTEL_RESOURCE_ATTRIBUTES` names them.
    pub fn from_env(
        default_service: &str,
        resource: &[(&str, String)],
    ) -> Result<(Tracer, Option<Flush>), TraceConfigError> {
        match TraceConfig::from_vars(|k| std::env::var(k).ok(), default_service)? {
            None => Ok((Tracer::off(), None)),
            Some(mut config) => {
                for (k, v) in resource {
                    if !config.resource.iter().any(|(have, _)| have == k) {
                        config.resource.push((k.to_string(), v.clone()));
                    }
                }
                tracing::info!(
                    endpoint = %config.endpoint,
                    protocol = config.protocol.as_str(),
                    service = %config.service_name,
                    "tracing: exporting spans over OTLP"
                );
                let (tracer, flush) = Tracer::start(config)?;
                Ok((tracer, Some(flush)))
            }
        }
    }

    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    fn next_u64(inner: &Inner) -> u64 {
        let mut z = inner.seq.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Starts a span: the child of `parent`, or the root of a new trace (subject to the
    /// sampler). `None` when tracing is off or the new trace is not sampled.
    pub fn start_span(&self, name: &'static str, kind: Kind, parent: Option<SpanContext>) -> Option<Span> {
        let inner = self.0.as_ref()?;
        let trace_id = match parent {
            Some(p) => p.trace_id,
            None => {
                let low = Tracer::next_u64(inner);
                if low > inner.keep_below {
                    return None;
                }
                let mut id = [0; 16];
                id[..8].copy_from_slice(&Tracer::next_u64(inner).to_be_bytes());
                id[8..].copy_from_slice(&low.to_be_bytes());
                id
            }
        };
        let span_id = Tracer::next_u64(inner).max(1).to_be_bytes();
        Some(Span {
            ctx: SpanContext { trace_id, span_id },
            parent,
            links: Vec::new(),
            name,
            kind,
            start_ns: now_ns(),
            end_ns: 0,
            attrs: Vec::new(),
            error: None,
        })
    }

    /// Ends `span` now (unless an end was set) and queues it for export.
    pub fn end(&self, mut span: Span) {
        let Some(inner) = self.0.as_ref() else {
            return;
        };
        if span.end_ns == 0 {
            span.end_ns = now_ns().max(span.start_ns);
        }
        if inner.spans.try_send(span).is_err() {
            let n = inner.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "tracing: the span queue is full; spans dropped");
            }
        }
    }
}

/// The coordinator's checkpoint spans: started at the trigger, ended at completion or failure.
#[derive(Default)]
pub struct CheckpointSpans {
    tracer: Tracer,
    open: std::sync::Mutex<std::collections::BTreeMap<u64, Span>>,
}

impl CheckpointSpans {
    pub fn new(tracer: Tracer) -> CheckpointSpans {
        CheckpointSpans {
            tracer,
            open: Default::default(),
        }
    }

    pub fn triggered(&self, generation: u64, checkpoint: u64) {
        let Some(mut span) = self.tracer.start_span("spindle.checkpoint", Kind::Internal, None) else {
            return;
        };
        span.int("spindle.checkpoint.id", checkpoint as i64)
            .int("spindle.generation", generation as i64);
        let mut open = self.open.lock().expect("checkpoint spans lock");
        // A rollback abandons checkpoints that never end: keep only the last few.
        while open.len() >= 16 {
            open.pop_first();
        }
        open.insert(checkpoint, span);
    }

    pub fn ended(&self, checkpoint: u64, result: Result<u64, &str>) {
        let Some(mut span) = self.open.lock().expect("checkpoint spans lock").remove(&checkpoint) else {
            return;
        };
        match result {
            Ok(bytes) => {
                span.int("spindle.checkpoint.bytes", bytes as i64);
            }
            Err(reason) => span.error = Some(reason.to_string()),
        }
        self.tracer.end(span);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_contexts_round_trip_and_traceparent_is_parsed() {
        let ctx = SpanContext {
            trace_id: [7; 16],
            span_id: [9; 8],
        };
        assert_eq!(SpanContext::from_bytes(&ctx.to_bytes()), Some(ctx));
        assert_eq!(SpanContext::from_bytes(b""), None);
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let parsed = SpanContext::from_traceparent(tp).unwrap();
        assert_eq!(parsed.trace_id[0], 0x4b);
        assert_eq!(parsed.span_id[7], 0xb7);
        // Not sampled, all-zero ids, wrong lengths: no parent.
        assert_eq!(SpanContext::from_traceparent(&tp.replace("-01", "-00")), None);
        assert_eq!(
            SpanContext::from_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            None
        );
        assert_eq!(SpanContext::from_traceparent("00-4bf9-00f067aa0ba902b7-01"), None);
    }

    #[test]
    fn an_off_tracer_starts_nothing() {
        let t = Tracer::off();
        assert!(t.start_span("x", Kind::Internal, None).is_none());
        assert!(!t.is_on());
    }
}
