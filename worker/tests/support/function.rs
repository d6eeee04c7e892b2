//! A scriptable remote function speaking the raw protocol, for fault tests: each test decides
//! what a request gets back (a proper reply, a malformed one, an error status…).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use prost::Message;
use spindle_protocol::reqreply::{
    Address, FromFunction, ToFunction, TypedValue,
    from_function::{self, EgressMessage, InvocationResponse},
    to_function,
};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub type Behaviour = Arc<dyn Fn(to_function::InvocationBatchRequest) -> Response + Send + Sync>;

/// Serves `behaviour` on `listener` until the returned sender is dropped or set.
pub fn serve(listener: TcpListener, behaviour: Behaviour) -> (SocketAddr, watch::Sender<bool>) {
    let addr = listener.local_addr().unwrap();
    let (stop, mut stopped) = watch::channel(false);
    let app = axum::Router::new().fallback(move |body: Bytes| {
        let behaviour = behaviour.clone();
        async move {
            let req = ToFunction::decode(body).expect("the worker sends valid ToFunction");
            match req.request {
                Some(to_function::Request::Invocation(batch)) => behaviour(batch),
                None => (StatusCode::BAD_REQUEST, "empty ToFunction").into_response(),
            }
        }
    });
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await
            .unwrap();
    });
    (addr, stop)
}

pub fn protobuf(reply: FromFunction) -> Response {
    (
        [(header::CONTENT_TYPE, "application/octet-stream")],
        reply.encode_to_vec(),
    )
        .into_response()
}

/// Emits every message's value to egress `t/out`; a value `to:<ns>/<type>/<id>:<rest>` is
/// instead forwarded to that address, with value `<rest>`.
pub fn echo_to_egress(batch: to_function::InvocationBatchRequest) -> Response {
    let mut r = InvocationResponse::default();
    for inv in batch.invocations {
        let arg = inv.argument.unwrap();
        let text = String::from_utf8_lossy(&arg.value).to_string();
        if let Some(forward) = text.strip_prefix("to:") {
            let (target, rest) = forward.split_once(':').unwrap();
            let mut parts = target.splitn(3, '/');
            let (ns, ty, id) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap());
            r.outgoing_messages.push(from_function::Invocation {
                target: Some(Address {
                    namespace: ns.into(),
                    r#type: ty.into(),
                    id: id.into(),
                }),
                argument: Some(TypedValue {
                    value: rest.to_string().into(),
                    ..arg
                }),
            });
        } else {
            r.outgoing_egresses.push(EgressMessage {
                egress_namespace: "t".into(),
                egress_type: "out".into(),
                argument: Some(TypedValue {
                    typename: arg.typename,
                    has_value: true,
                    value: arg.value,
                }),
            });
        }
    }
    protobuf(FromFunction {
        response: Some(from_function::Response::InvocationResult(r)),
    })
}
