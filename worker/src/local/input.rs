//! Sample input: JSON lines `{"target": "ns/type/id", "typename": "ns/Type", "value": …}`,
//! sent through the HTTP ingress like any client would. Values of StateFun primitive
//! typenames are encoded as their wrappers; any other value is sent as JSON.

use std::net::SocketAddr;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use spindle_protocol::{Primitive, typenames};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputRecord {
    /// `namespace/type/id`
    pub target: String,
    pub typename: String,
    pub value: serde_json::Value,
}

impl InputRecord {
    pub fn body(&self) -> anyhow::Result<Bytes> {
        let v = &self.value;
        let p = match self.typename.as_str() {
            typenames::STRING => v.as_str().map(|s| Primitive::String(s.to_string())),
            typenames::LONG => v.as_i64().map(Primitive::Long),
            typenames::INT => v.as_i64().and_then(|n| i32::try_from(n).ok()).map(Primitive::Int),
            typenames::BOOL => v.as_bool().map(Primitive::Bool),
            typenames::DOUBLE => v.as_f64().map(Primitive::Double),
            typenames::FLOAT => v.as_f64().map(|f| Primitive::Float(f as f32)),
            _ => return Ok(Bytes::from(serde_json::to_vec(v)?)),
        };
        match p {
            Some(p) => Ok(p.encode()),
            None => bail!("value {v} does not fit type {}", self.typename),
        }
    }
}

/// Parses the input; blank lines and lines starting with `#` are skipped.
pub fn parse_input(text: &str) -> anyhow::Result<Vec<InputRecord>> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let r: InputRecord =
            serde_json::from_str(line).with_context(|| format!("line {}: not an input record", i + 1))?;
        if r.target.split('/').count() < 3 {
            bail!("line {}: target `{}` is not `namespace/type/id`", i + 1, r.target);
        }
        out.push(r);
    }
    Ok(out)
}

/// POSTs every record in order, one at a time; fails on the first one the ingress refuses.
pub async fn send_input(ingress: SocketAddr, records: &[InputRecord]) -> anyhow::Result<usize> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    for (i, r) in records.iter().enumerate() {
        let req = Request::post(format!("http://{ingress}/{}", r.target))
            .header(header::CONTENT_TYPE, format!("application/vnd.{}", r.typename))
            .body(Full::new(r.body()?))?;
        let resp = client
            .request(req)
            .await
            .with_context(|| format!("sending record {}", i + 1))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.into_body().collect().await?.to_bytes();
            bail!(
                "record {} ({}): the ingress answered {status}: {}",
                i + 1,
                r.target,
                String::from_utf8_lossy(&body).trim()
            );
        }
    }
    Ok(records.len())
}
