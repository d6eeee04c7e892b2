//! Serving functions over HTTP/1.1, the transport StateFun's runtime (and Spindle's worker) use
//! to call remote functions.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt as _;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Functions;

/// Serves `functions` on `listener` until `shutdown` completes, then stops accepting, lets every
/// connection finish the request it is processing, and returns once all are closed.
///
/// Any `POST` path is answered (the function is chosen by the request's target address, not the
/// URL): 200 with the `FromFunction`, 400 when the request is not a valid invocation of a
/// function served here, 500 when a handler fails (StateFun's runtime retries 5xx).
pub async fn serve(
    listener: TcpListener,
    functions: Arc<Functions>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    // Connections hold a receiver; dropping `drain` makes every `changed()` resolve, which tells
    // them to shut down gracefully. Nothing is ever sent on it.
    let (drain, draining) = watch::channel(());
    // Every connection task lives in this set, so none outlives `serve`.
    let mut connections = JoinSet::new();
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    connections.spawn(connection(stream, functions.clone(), draining.clone()));
                }
                Err(e) => accept_failed(e).await,
            },
            // Reap finished connections as they close, so the set only holds live ones.
            Some(joined) = connections.join_next(), if !connections.is_empty() => log_join(joined),
        }
    }
    drop(listener);
    drop(drain);
    while let Some(joined) = connections.join_next().await {
        log_join(joined);
    }
    Ok(())
}

/// Accept errors are about one connection (reset before accept) or temporary exhaustion (too
/// many open files); neither should stop the server. Back off on the latter so a full file
/// table does not become a busy loop — hyper's old `AddrIncoming` did the same.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if matches!(e.kind(), ConnectionAborted | ConnectionReset | ConnectionRefused) {
        tracing::debug!(error = %e, "connection failed before it was accepted");
    } else {
        tracing::warn!(error = %e, "cannot accept connections; retrying shortly");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn log_join(joined: Result<(), tokio::task::JoinError>) {
    if let Err(e) = joined {
        tracing::error!(error = %e, "connection task failed");
    }
}

async fn connection(stream: TcpStream, functions: Arc<Functions>, mut draining: watch::Receiver<()>) {
    // Requests and replies are small; don't let Nagle's algorithm hold them back.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let service = service_fn(move |request| {
        let functions = functions.clone();
        async move { Ok::<_, Infallible>(respond(&functions, request).await) }
    });
    let mut conn = pin!(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = draining.changed() => {
            // Finish the request in flight (if any), then close instead of keeping alive.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection closed with an error");
    }
}

async fn respond(functions: &Functions, request: Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::POST {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only POST is supported".into());
        response.headers_mut().insert(ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => {
            return text(StatusCode::BAD_REQUEST, format!("cannot read the body: {e}"));
        }
    };
    // A panicking handler fails its request with a 500, like a handler error, instead of
    // tearing down the connection. `handle_async` only reads `functions`, so nothing is left
    // half-updated by the unwind.
    let handled = AssertUnwindSafe(functions.handle_async(&body)).catch_unwind().await;
    match handled {
        Ok(Ok(reply)) => {
            let mut response = Response::new(Full::new(reply));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(spindle_protocol::CONTENT_TYPE));
            response
        }
        Ok(Err(e)) if e.is_bad_request() => {
            tracing::warn!(error = %e, "rejected a request");
            text(StatusCode::BAD_REQUEST, e.to_string())
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "invocation failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "a function handler panicked".into()),
    }
}

fn text(status: StatusCode, message: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(message)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{batch, invocation, long_value, state};
    use crate::{HandlerError, TypeName, ValueSpec};
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use prost::Message as _;
    use spindle_protocol::reqreply::FromFunction;

    const SEEN: ValueSpec<i64> = ValueSpec::new("seen");

    #[tokio::test]
    async fn serves_invocations_over_http() {
        let mut functions = Functions::new();
        functions.register(TypeName::parse("test/fn").unwrap(), vec![SEEN.decl()], |ctx, _| {
            ctx.set(&SEEN, &1i64);
            Ok::<_, HandlerError>(())
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/any/path", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, Arc::new(functions), async {
            let _ = stopped.await;
        }));

        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        let post = |body: Vec<u8>| {
            let request = Request::post(url.as_str())
                .header(CONTENT_TYPE, spindle_protocol::CONTENT_TYPE)
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            client.request(request)
        };

        let request = batch(
            "test/fn",
            "a",
            vec![state("seen", None)],
            vec![invocation(long_value(1))],
        );
        let response = post(request.encode_to_vec()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[CONTENT_TYPE], spindle_protocol::CONTENT_TYPE);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(FromFunction::decode(body).unwrap().response.is_some());

        // Same keep-alive connection, now garbage: a 400 saying what is wrong.
        let response = post(b"garbage".to_vec()).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("not a ToFunction"));

        // Shutdown closes the idle keep-alive connection (still held by the client) and `serve`
        // returns.
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("serve returns after shutdown")
            .unwrap()
            .unwrap();
    }
}
