//! `example/fetch`: an async handler. It fetches a URL over HTTP (a stand-in for the database
//! or API a function calls), counts its fetches in state, and replies with what it got to its
//! caller — a function, or an HTTP request made with `Spindle-Reply: wait`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use spindle_sdk::{Context, Functions, HandlerError, Message, ValueSpec};

use crate::{FETCH_TYPE, Fetch, Fetched};

const FETCHES: ValueSpec<i64> = ValueSpec::new("fetches");

/// Longest a fetch may take; past it the batch fails and the runtime retries it.
const TIMEOUT: Duration = Duration::from_secs(10);

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

pub(crate) fn register(functions: &mut Functions) {
    // One pooled client for every invocation: connections are reused across batches.
    let client: Arc<HttpClient> = Arc::new(Client::builder(TokioExecutor::new()).build_http());
    functions.register_async(FETCH_TYPE.clone(), vec![FETCHES.decl()], move |ctx, msg| {
        Box::pin(fetch(client.clone(), ctx, msg))
    });
}

async fn fetch(client: Arc<HttpClient>, ctx: &mut Context<'_>, msg: Message) -> Result<(), HandlerError> {
    let Fetch { url } = msg.get::<Fetch>()?;
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| HandlerError::msg(format!("example/fetch: `{url}` is not a URL: {e}")))?;
    let response = tokio::time::timeout(TIMEOUT, async {
        let response = client.get(uri).await.map_err(HandlerError::new)?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(HandlerError::new)?
            .to_bytes();
        Ok::<_, HandlerError>((status, body))
    })
    .await
    .map_err(|_| HandlerError::msg(format!("example/fetch: no answer from {url} within {TIMEOUT:?}")))??;
    let fetches = ctx.get(&FETCHES)?.unwrap_or(0).saturating_add(1);
    ctx.set(&FETCHES, &fetches);
    let (status, body) = response;
    if ctx.caller().is_some() {
        ctx.reply(&Fetched {
            url,
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
            fetches,
        })?;
    }
    Ok(())
}
