//! The example functions through `Functions::handle`, with hand-built requests.

use prost::Message as _;
use spindle_protocol::reqreply::from_function::persisted_value_mutation::MutationType;
use spindle_protocol::reqreply::from_function::{InvocationResponse, Response};
use spindle_protocol::reqreply::to_function::{Invocation, InvocationBatchRequest, PersistedValue, Request};
use spindle_protocol::reqreply::{Address, FromFunction, ToFunction, TypedValue};
use spindle_sdk::{JsonType, Type};

use super::*;

fn address(namespace_type: &str, id: &str) -> Address {
    let (namespace, ty) = namespace_type.split_once('/').unwrap();
    Address {
        namespace: namespace.into(),
        r#type: ty.into(),
        id: id.into(),
    }
}

fn typed<T: Type>(value: &T) -> TypedValue {
    TypedValue {
        typename: T::typename().into(),
        has_value: true,
        value: value.encode(),
    }
}

fn decode<T: Type>(value: Option<&TypedValue>) -> T {
    let value = value.expect("a value");
    assert_eq!(value.typename, T::typename());
    T::decode(&value.value).unwrap()
}

/// A state the runtime holds no value for.
fn empty<T: Type>(name: &str) -> PersistedValue {
    PersistedValue {
        state_name: name.into(),
        state_value: Some(TypedValue {
            typename: T::typename().into(),
            has_value: false,
            value: Default::default(),
        }),
    }
}

fn with<T: Type>(name: &str, value: &T) -> PersistedValue {
    PersistedValue {
        state_name: name.into(),
        state_value: Some(typed(value)),
    }
}

fn invoke(
    target: Address,
    state: Vec<PersistedValue>,
    caller: Option<Address>,
    argument: TypedValue,
) -> InvocationResponse {
    let request = ToFunction {
        request: Some(Request::Invocation(InvocationBatchRequest {
            target: Some(target),
            state,
            invocations: vec![Invocation {
                caller,
                argument: Some(argument),
            }],
        })),
    };
    let reply = functions().handle(&request.encode_to_vec()).unwrap();
    match FromFunction::decode(reply).unwrap().response {
        Some(Response::InvocationResult(r)) => r,
        other => panic!("expected an invocation result, got {other:?}"),
    }
}

#[test]
fn a_visit_counts_and_asks_the_greeter() {
    let state = vec![with("visits", &2i64), empty::<String>("last_greeting")];
    // An arbitrary JSON object is a visit.
    let visit = TypedValue {
        typename: Visit::TYPENAME.into(),
        has_value: true,
        value: br#"{"from":"web"}"#.as_slice().into(),
    };
    let r = invoke(address(PERSON, "alice"), state, None, visit);

    let [mutation] = &r.state_mutations[..] else {
        panic!("one mutation expected")
    };
    assert_eq!(mutation.state_name, "visits");
    assert_eq!(mutation.mutation_type, MutationType::Modify as i32);
    assert_eq!(decode::<i64>(mutation.state_value.as_ref()), 3);

    let [greet] = &r.outgoing_messages[..] else {
        panic!("one message expected")
    };
    assert_eq!(greet.target, Some(address(GREETER, "alice")));
    assert_eq!(
        decode::<Greet>(greet.argument.as_ref()),
        Greet {
            name: "alice".into(),
            visits: 3
        }
    );
    assert!(r.outgoing_egresses.is_empty());
}

#[test]
fn the_greeter_publishes_and_replies_to_its_caller() {
    let state = vec![empty::<i64>("greetings_sent")];
    let greet = typed(&Greet {
        name: "bob".into(),
        visits: 2,
    });
    let r = invoke(address(GREETER, "bob"), state, Some(address(PERSON, "bob")), greet);

    let [egress] = &r.outgoing_egresses[..] else {
        panic!("one egress message expected")
    };
    assert_eq!(
        (egress.egress_namespace.as_str(), egress.egress_type.as_str()),
        ("example", "greets")
    );
    assert_eq!(
        decode::<Greeting>(egress.argument.as_ref()),
        Greeting {
            name: "bob".into(),
            visits: 2,
            greeting: "Hello again bob!".into()
        }
    );

    let [reply] = &r.outgoing_messages[..] else {
        panic!("one reply expected")
    };
    assert_eq!(reply.target, Some(address(PERSON, "bob")));
    assert_eq!(decode::<Greeted>(reply.argument.as_ref()).greeting, "Hello again bob!");

    let [mutation] = &r.state_mutations[..] else {
        panic!("one mutation expected")
    };
    assert_eq!(mutation.state_name, "greetings_sent");
    assert_eq!(decode::<i64>(mutation.state_value.as_ref()), 1);
}

#[test]
fn greetings_by_visit_count() {
    assert_eq!(greeter::greeting("ann", 1), "Hello ann! Welcome!");
    assert_eq!(greeter::greeting("ann", 2), "Hello again ann!");
    assert_eq!(greeter::greeting("ann", 7), "Hello ann, this is visit #7.");
}

#[test]
fn the_reply_is_remembered_by_the_person() {
    let state = vec![with("visits", &1i64), empty::<String>("last_greeting")];
    let greeted = typed(&Greeted {
        greeting: "Hello alice! Welcome!".into(),
    });
    let r = invoke(
        address(PERSON, "alice"),
        state,
        Some(address(GREETER, "alice")),
        greeted,
    );
    let [mutation] = &r.state_mutations[..] else {
        panic!("one mutation expected")
    };
    assert_eq!(mutation.state_name, "last_greeting");
    assert_eq!(decode::<String>(mutation.state_value.as_ref()), "Hello alice! Welcome!");
    assert!(r.outgoing_messages.is_empty());
}

#[test]
fn the_counter_sums_and_reports() {
    let state = vec![with("total", &40i64)];
    let add = typed(&Add { seq: 9, value: 2 });
    let r = invoke(address(COUNTER, "k1"), state, None, add);
    let [egress] = &r.outgoing_egresses[..] else {
        panic!("one egress message expected")
    };
    assert_eq!(
        (egress.egress_namespace.as_str(), egress.egress_type.as_str()),
        ("example", "totals")
    );
    assert_eq!(
        decode::<Total>(egress.argument.as_ref()),
        Total {
            seq: 9,
            key: "k1".into(),
            total: 42
        }
    );
    assert_eq!(decode::<i64>(r.state_mutations[0].state_value.as_ref()), 42);
}

#[test]
fn a_first_call_asks_for_the_person_state() {
    let request = ToFunction {
        request: Some(Request::Invocation(InvocationBatchRequest {
            target: Some(address(PERSON, "alice")),
            state: vec![],
            invocations: vec![Invocation {
                caller: None,
                argument: Some(typed(&Visit {})),
            }],
        })),
    };
    let reply = functions().handle(&request.encode_to_vec()).unwrap();
    let Some(Response::IncompleteInvocationContext(incomplete)) = FromFunction::decode(reply).unwrap().response else {
        panic!("expected an incomplete invocation context");
    };
    let names: Vec<_> = incomplete
        .missing_values
        .iter()
        .map(|s| s.state_name.as_str())
        .collect();
    assert_eq!(names, ["visits", "last_greeting"]);
}

#[test]
fn a_hop_forwards_until_the_last_which_reports() {
    let hop = Hop {
        seq: 5,
        remaining: 2,
        spread: 10,
    };
    let r = invoke(address(HOP, "h0"), vec![with("hops", &0i64)], None, typed(&hop));
    let [out] = &r.outgoing_messages[..] else {
        panic!("one message expected")
    };
    let target = out.target.as_ref().unwrap();
    assert_eq!(
        (target.r#type.as_str(), target.id.as_str()),
        ("hop", hop.next_id().as_str())
    );
    assert_eq!(decode::<Hop>(out.argument.as_ref()), Hop { remaining: 1, ..hop });
    assert!(r.outgoing_egresses.is_empty());

    let last = Hop { remaining: 0, ..hop };
    let r = invoke(address(HOP, "h3"), vec![with("hops", &6i64)], None, typed(&last));
    assert!(r.outgoing_messages.is_empty());
    assert_eq!(
        decode::<Total>(r.outgoing_egresses[0].argument.as_ref()),
        Total {
            seq: 5,
            key: "h3".into(),
            total: 7
        }
    );
}

#[test]
fn the_counter_replies_to_a_waiting_caller_instead_of_the_egress() {
    let state = vec![with("total", &40i64)];
    let add = typed(&Add { seq: 3, value: 2 });
    let waiting = address("spindle.reply/0", "r7");
    let r = invoke(address(COUNTER, "k1"), state, Some(waiting.clone()), add);
    assert!(r.outgoing_egresses.is_empty());
    let [reply] = &r.outgoing_messages[..] else {
        panic!("one reply expected")
    };
    assert_eq!(reply.target, Some(waiting));
    assert_eq!(
        decode::<Total>(reply.argument.as_ref()),
        Total {
            seq: 3,
            key: "k1".into(),
            total: 42
        }
    );
}

/// A one-shot HTTP server on a free loopback port answering every request with `body`.
async fn http_api(body: &'static str) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            // Read up to the end of the headers (a GET has no body).
            while !request.ends_with(b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let response = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        }
    });
    addr
}

fn fetch_request(id: &str, fetches: Option<i64>, caller: Option<Address>, url: &str) -> ToFunction {
    let state = match fetches {
        Some(n) => with("fetches", &n),
        None => empty::<i64>("fetches"),
    };
    ToFunction {
        request: Some(Request::Invocation(InvocationBatchRequest {
            target: Some(address(FETCH, id)),
            state: vec![state],
            invocations: vec![Invocation {
                caller,
                argument: Some(typed(&Fetch { url: url.into() })),
            }],
        })),
    }
}

async fn fetch_result(request: ToFunction) -> Result<InvocationResponse, spindle_sdk::SdkError> {
    let reply = functions().handle_async(&request.encode_to_vec()).await?;
    match FromFunction::decode(reply).unwrap().response {
        Some(Response::InvocationResult(r)) => Ok(r),
        other => panic!("expected an invocation result, got {other:?}"),
    }
}

#[tokio::test]
async fn fetch_awaits_an_http_api_and_replies_with_its_answer() {
    let api = http_api("sunny").await;
    let url = format!("http://{api}/weather");
    let waiting = address("spindle.reply/0", "r1");
    let r = fetch_result(fetch_request("f1", Some(4), Some(waiting.clone()), &url))
        .await
        .unwrap();
    let [reply] = &r.outgoing_messages[..] else {
        panic!("one reply expected")
    };
    assert_eq!(reply.target, Some(waiting));
    assert_eq!(
        decode::<Fetched>(reply.argument.as_ref()),
        Fetched {
            url: url.clone(),
            status: 200,
            body: "sunny".into(),
            fetches: 5
        }
    );
    assert_eq!(decode::<i64>(r.state_mutations[0].state_value.as_ref()), 5);

    // No caller: counted, nothing sent.
    let r = fetch_result(fetch_request("f1", None, None, &url)).await.unwrap();
    assert!(r.outgoing_messages.is_empty());
    assert_eq!(decode::<i64>(r.state_mutations[0].state_value.as_ref()), 1);
}

#[tokio::test]
async fn a_failed_fetch_fails_the_batch_so_the_runtime_retries() {
    // A port nothing listens on (bound, then released).
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = fetch_result(fetch_request("f2", None, None, &format!("http://{closed}/")))
        .await
        .unwrap_err();
    assert!(!err.is_bad_request(), "{err}");
    assert!(err.to_string().contains("example/fetch"), "{err}");
    let err = fetch_result(fetch_request("f2", None, None, "not a url"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("`not a url` is not a URL"), "{err}");
}
