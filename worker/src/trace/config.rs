//! The OpenTelemetry SDK environment variables that apply to trace export, read by a pure
//! function of a variable lookup (the binaries pass the process environment, tests a map).
//! A variable with a value Spindle cannot honour is an error naming it, not ignored.

use std::time::Duration;

/// How spans travel to the collector.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Protocol {
    /// `http/protobuf` (the OTLP default): POST of an `ExportTraceServiceRequest`.
    HttpProtobuf,
    /// `grpc`: `TraceService/Export` over HTTP/2.
    Grpc,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::HttpProtobuf => "http/protobuf",
            Protocol::Grpc => "grpc",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct TraceConfig {
    /// The full URL spans are sent to (for HTTP, with `/v1/traces`).
    pub endpoint: String,
    pub protocol: Protocol,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub service_name: String,
    /// `OTEL_RESOURCE_ATTRIBUTES`, `service.name` taken out.
    pub resource: Vec<(String, String)>,
    /// How long spans wait to be sent together (`OTEL_BSP_SCHEDULE_DELAY`).
    pub delay: Duration,
    pub max_batch: usize,
    /// Fraction of new traces kept (1: all).
    pub ratio: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {message}")]
pub struct TraceConfigError {
    pub var: &'static str,
    pub message: String,
}

impl TraceConfigError {
    pub fn new(var: &'static str, message: String) -> TraceConfigError {
        TraceConfigError { var, message }
    }
}

impl TraceConfig {
    /// `None`: tracing is off (no endpoint, `OTEL_SDK_DISABLED=true` or
    /// `OTEL_TRACES_EXPORTER=none`).
    pub fn from_vars(
        var: impl Fn(&str) -> Option<String>,
        default_service: &str,
    ) -> Result<Option<TraceConfig>, TraceConfigError> {
        let get = |k: &str| var(k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        if get("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        match get("OTEL_TRACES_EXPORTER").as_deref() {
            None | Some("otlp") => {}
            Some("none") => return Ok(None),
            Some(other) => {
                return Err(TraceConfigError::new(
                    "OTEL_TRACES_EXPORTER",
                    format!("`{other}` is not supported (otlp or none)"),
                ));
            }
        }
        let (protocol_var, protocol) = match get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") {
            Some(p) => ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", Some(p)),
            None => ("OTEL_EXPORTER_OTLP_PROTOCOL", get("OTEL_EXPORTER_OTLP_PROTOCOL")),
        };
        let protocol = match protocol.as_deref() {
            None | Some("http/protobuf") => Protocol::HttpProtobuf,
            Some("grpc") => Protocol::Grpc,
            Some(other) => {
                return Err(TraceConfigError::new(
                    protocol_var,
                    format!("`{other}` is not supported (http/protobuf or grpc)"),
                ));
            }
        };
        let endpoint = match (
            get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(e), _) => check_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", e, protocol)?,
            (None, Some(base)) => {
                let base = check_url("OTEL_EXPORTER_OTLP_ENDPOINT", base, protocol)?;
                match protocol {
                    // The signal's path is appended to the base URL (OTLP exporter spec).
                    Protocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
                    Protocol::Grpc => base,
                }
            }
            (None, None) => return Ok(None),
        };
        let mut headers = parse_pairs("OTEL_EXPORTER_OTLP_HEADERS", get("OTEL_EXPORTER_OTLP_HEADERS"))?;
        for (k, v) in parse_pairs(
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            get("OTEL_EXPORTER_OTLP_TRACES_HEADERS"),
        )? {
            headers.retain(|(old, _)| !old.eq_ignore_ascii_case(&k));
            headers.push((k, v));
        }
        for (name, value) in &headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() || http::HeaderValue::from_str(value).is_err() {
                return Err(TraceConfigError::new(
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    format!("`{name}` is not a valid header name and value"),
                ));
            }
        }
        for var in [
            "OTEL_EXPORTER_OTLP_COMPRESSION",
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
        ] {
            if let Some(c) = get(var).filter(|c| c != "none") {
                return Err(TraceConfigError::new(
                    var,
                    format!("`{c}` is not supported (spans are sent uncompressed: none)"),
                ));
            }
        }
        let timeout = match get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") {
            Some(t) => millis("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", &t)?,
            None => match get("OTEL_EXPORTER_OTLP_TIMEOUT") {
                Some(t) => millis("OTEL_EXPORTER_OTLP_TIMEOUT", &t)?,
                None => Duration::from_secs(10),
            },
        };
        let mut resource = parse_pairs("OTEL_RESOURCE_ATTRIBUTES", get("OTEL_RESOURCE_ATTRIBUTES"))?;
        let from_resource = resource
            .iter()
            .position(|(k, _)| k == "service.name")
            .map(|i| resource.remove(i).1);
        let service_name = get("OTEL_SERVICE_NAME")
            .or(from_resource)
            .unwrap_or_else(|| default_service.to_string());
        let delay = match get("OTEL_BSP_SCHEDULE_DELAY") {
            Some(d) => millis("OTEL_BSP_SCHEDULE_DELAY", &d)?,
            None => Duration::from_secs(5),
        };
        let max_batch = match get("OTEL_BSP_MAX_EXPORT_BATCH_SIZE") {
            Some(n) => n.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                TraceConfigError::new(
                    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
                    format!("`{n}` is not a positive number"),
                )
            })?,
            None => 512,
        };
        let ratio = sampler(get("OTEL_TRACES_SAMPLER"), get("OTEL_TRACES_SAMPLER_ARG"))?;
        Ok(Some(TraceConfig {
            endpoint,
            protocol,
            headers,
            timeout,
            service_name,
            resource,
            delay,
            max_batch,
            ratio,
        }))
    }
}

fn check_url(var: &'static str, url: String, protocol: Protocol) -> Result<String, TraceConfigError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| TraceConfigError::new(var, format!("`{url}` is not a URL: {e}")))?;
    match (uri.scheme_str(), protocol) {
        (Some("http"), _) | (Some("https"), Protocol::HttpProtobuf) => {}
        (Some("https"), Protocol::Grpc) => {
            return Err(TraceConfigError::new(
                var,
                format!(
                    "`{url}`: gRPC over TLS is not supported; use OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf for https"
                ),
            ));
        }
        _ => {
            return Err(TraceConfigError::new(
                var,
                format!("`{url}` is not an http:// or https:// URL"),
            ));
        }
    }
    if uri.authority().is_none() {
        return Err(TraceConfigError::new(var, format!("`{url}` has no host")));
    }
    Ok(url)
}

fn millis(var: &'static str, v: &str) -> Result<Duration, TraceConfigError> {
    v.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| TraceConfigError::new(var, format!("`{v}` is not a number of milliseconds")))
}

/// `key=value,key2=value2` with percent-encoded values (W3C baggage form, as the spec says).
fn parse_pairs(var: &'static str, v: Option<String>) -> Result<Vec<(String, String)>, TraceConfigError> {
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    v.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|pair| {
            let (k, val) = pair
                .split_once('=')
                .ok_or_else(|| TraceConfigError::new(var, format!("`{}` is not key=value", pair.trim())))?;
            let k = k.trim();
            if k.is_empty() {
                return Err(TraceConfigError::new(
                    var,
                    format!("`{}` has an empty key", pair.trim()),
                ));
            }
            let val = percent_decode(val.trim()).ok_or_else(|| {
                TraceConfigError::new(var, format!("the value of `{k}` is not valid percent-encoding"))
            })?;
            Ok((k.to_string(), val))
        })
        .collect()
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn sampler(name: Option<String>, arg: Option<String>) -> Result<f64, TraceConfigError> {
    let ratio = || match &arg {
        None => Ok(1.0),
        Some(a) => a
            .parse::<f64>()
            .ok()
            .filter(|r| (0.0..=1.0).contains(r))
            .ok_or_else(|| {
                TraceConfigError::new("OTEL_TRACES_SAMPLER_ARG", format!("`{a}` is not a ratio from 0 to 1"))
            }),
    };
    match name.as_deref() {
        None | Some("always_on") | Some("parentbased_always_on") => Ok(1.0),
        Some("always_off") | Some("parentbased_always_off") => Ok(0.0),
        Some("traceidratio") | Some("parentbased_traceidratio") => ratio(),
        Some(other) => Err(TraceConfigError::new(
            "OTEL_TRACES_SAMPLER",
            format!("`{other}` is not supported (always_on, always_off, traceidratio and their parentbased_ forms)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Option<TraceConfig>, TraceConfigError> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        TraceConfig::from_vars(|k| map.get(k).cloned(), "spindle-greeter")
    }

    #[test]
    fn off_without_an_endpoint_or_when_disabled() {
        assert_eq!(config(&[]), Ok(None));
        assert_eq!(config(&[("OTEL_SERVICE_NAME", "x")]), Ok(None));
        let e = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        assert_eq!(config(&[e, ("OTEL_SDK_DISABLED", "true")]), Ok(None));
        assert_eq!(config(&[e, ("OTEL_TRACES_EXPORTER", "none")]), Ok(None));
    }

    #[test]
    fn the_usual_variables_are_read() {
        let c = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "authorization=Bearer%20abc, x-tenant = t1",
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "X-Tenant=t2"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=from-res,deployment.environment=dev",
            ),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(c.endpoint, "http://127.0.0.1:4318/v1/traces");
        assert_eq!(c.protocol, Protocol::HttpProtobuf);
        assert_eq!(
            c.headers,
            vec![
                ("authorization".to_string(), "Bearer abc".to_string()),
                ("X-Tenant".to_string(), "t2".to_string())
            ]
        );
        assert_eq!(c.service_name, "from-res");
        assert_eq!(
            c.resource,
            vec![("deployment.environment".to_string(), "dev".to_string())]
        );
        assert_eq!(c.delay, Duration::from_millis(100));
        assert_eq!(c.ratio, 0.25);
        assert_eq!(c.timeout, Duration::from_secs(10));

        let g = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SERVICE_NAME", "mine"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (g.endpoint.as_str(), g.protocol),
            ("http://127.0.0.1:4317", Protocol::Grpc)
        );
        assert_eq!(g.service_name, "mine");
        let t = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:1"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://c.example/custom"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            t.endpoint, "https://c.example/custom",
            "the traces endpoint is used as is"
        );
        assert_eq!(t.service_name, "spindle-greeter");
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        let err = |vars: &[(&str, &str)]| config(vars).unwrap_err().to_string();
        assert_eq!(
            err(&[e, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]),
            "OTEL_EXPORTER_OTLP_PROTOCOL: `http/json` is not supported (http/protobuf or grpc)"
        );
        assert_eq!(
            err(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]),
            "OTEL_EXPORTER_OTLP_ENDPOINT: `collector:4318` is not an http:// or https:// URL"
        );
        assert_eq!(
            err(&[e, ("OTEL_EXPORTER_OTLP_HEADERS", "novalue")]),
            "OTEL_EXPORTER_OTLP_HEADERS: `novalue` is not key=value"
        );
        assert_eq!(
            err(&[e, ("OTEL_BSP_SCHEDULE_DELAY", "5s")]),
            "OTEL_BSP_SCHEDULE_DELAY: `5s` is not a number of milliseconds"
        );
        assert!(
            err(&[e, ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")]).starts_with("OTEL_EXPORTER_OTLP_COMPRESSION: `gzip`")
        );
        assert!(
            err(&[
                e,
                ("OTEL_TRACES_SAMPLER_ARG", "2"),
                ("OTEL_TRACES_SAMPLER", "traceidratio")
            ])
            .starts_with("OTEL_TRACES_SAMPLER_ARG")
        );
        assert!(err(&[e, ("OTEL_TRACES_EXPORTER", "zipkin")]).starts_with("OTEL_TRACES_EXPORTER"));
    }
}
