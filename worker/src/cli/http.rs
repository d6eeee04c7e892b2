//! Calls to a worker's admin endpoint from the command line, with the bearer token
//! `spec.admin.auth` asks for.

use anyhow::Context as _;
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub async fn call(method: Method, url: &str, token: Option<&str>) -> anyhow::Result<(StatusCode, Bytes)> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut req = Request::builder().method(method).uri(url);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
        .body(Empty::new())
        .with_context(|| format!("`{url}` is not a URL"))?;
    let resp = client
        .request(req)
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// The body as JSON when the status is 200, otherwise an error naming the endpoint.
pub async fn get_json(url: &str, token: Option<&str>) -> anyhow::Result<serde_json::Value> {
    let (status, body) = call(Method::GET, url, token).await?;
    if status != StatusCode::OK {
        anyhow::bail!("{url}: {status}: {}", String::from_utf8_lossy(&body).trim());
    }
    serde_json::from_slice(&body).with_context(|| format!("{url}: not JSON"))
}
