//! `Functions::handle` end to end: hand-built `ToFunction` bytes in, decoded `FromFunction` out.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use prost::Message as _;
use spindle_protocol::reqreply::from_function::expiration_spec::ExpireMode;
use spindle_protocol::reqreply::from_function::persisted_value_mutation::MutationType;
use spindle_protocol::reqreply::from_function::{InvocationResponse, PersistedValueSpec, Response};
use spindle_protocol::reqreply::to_function::{Invocation, InvocationBatchRequest, PersistedValue, Request};
use spindle_protocol::reqreply::{self as pb, FromFunction, ToFunction, TypedValue};

use crate::{Address, DecodeError, Functions, HandlerError, JsonType, SdkError, Type, TypeName, UsageError, ValueSpec};

// ---- request builders, shared with the server test --------------------------------------------

pub(crate) fn pb_address(typename: &str, id: &str) -> pb::Address {
    let t = TypeName::parse(typename).unwrap();
    pb::Address {
        namespace: t.namespace().into(),
        r#type: t.name().into(),
        id: id.into(),
    }
}

pub(crate) fn batch(target: &str, id: &str, state: Vec<PersistedValue>, invocations: Vec<Invocation>) -> ToFunction {
    ToFunction {
        request: Some(Request::Invocation(InvocationBatchRequest {
            target: Some(pb_address(target, id)),
            state,
            invocations,
        })),
    }
}

pub(crate) fn state(name: &str, value: Option<TypedValue>) -> PersistedValue {
    PersistedValue {
        state_name: name.into(),
        // The runtime sends an empty state as `has_value = false` with the declared typename.
        state_value: Some(value.unwrap_or(TypedValue {
            typename: i64::typename().into(),
            has_value: false,
            value: Bytes::new(),
        })),
    }
}

pub(crate) fn invocation(argument: TypedValue) -> Invocation {
    Invocation {
        caller: None,
        argument: Some(argument),
    }
}

pub(crate) fn typed<T: Type>(value: &T) -> TypedValue {
    TypedValue {
        typename: T::typename().into(),
        has_value: true,
        value: value.encode(),
    }
}

pub(crate) fn long_value(v: i64) -> TypedValue {
    typed(&v)
}

fn result(functions: &Functions, request: ToFunction) -> InvocationResponse {
    let reply = functions.handle(&request.encode_to_vec()).unwrap();
    match FromFunction::decode(reply).unwrap().response {
        Some(Response::InvocationResult(r)) => r,
        other => panic!("expected an invocation result, got {other:?}"),
    }
}

// ---- a function exercising the context --------------------------------------------------------

const COUNT: ValueSpec<i64> = ValueSpec::new("count");
const NOTE: ValueSpec<String> = ValueSpec::new("note").expire_after_write(Duration::from_secs(60));
const SEEN: ValueSpec<bool> = ValueSpec::new("seen").expire_after_invoke(Duration::from_millis(1500));

#[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
struct Cmd {
    op: String,
}

impl JsonType for Cmd {
    const TYPENAME: &'static str = "test/Cmd";
}

fn cmd(op: &str) -> TypedValue {
    typed(&Cmd { op: op.into() })
}

fn tn(s: &str) -> TypeName {
    TypeName::parse(s).unwrap()
}

/// `test/fn`, with three states; `calls` counts handler runs.
fn functions(calls: Arc<AtomicUsize>) -> Functions {
    let mut functions = Functions::new();
    functions.register(
        tn("test/fn"),
        vec![COUNT.decl(), NOTE.decl(), (&SEEN).into()],
        move |ctx, msg| {
            calls.fetch_add(1, Ordering::Relaxed);
            if msg.is::<i64>() {
                let count = ctx.get(&COUNT)?.unwrap_or(0) + msg.get::<i64>()?;
                ctx.set(&COUNT, &count);
                return Ok(());
            }
            let friend = Address::new(tn("test/friend"), "f1");
            match msg.get::<Cmd>()?.op.as_str() {
                "remove" => ctx.remove(&NOTE),
                "send" => ctx.send(&friend, &"hi".to_string()),
                "later" => ctx.send_after(Duration::from_millis(2500), &friend, &7i32, Some("tok")),
                "later-untokened" => ctx.send_after(Duration::from_secs(1), &friend, &true, None),
                "cancel" => ctx.cancel_delayed("tok"),
                "egress" => ctx.send_egress(&tn("test/out"), &Cmd { op: "out".into() }),
                "caller" => {
                    let caller = ctx.caller().map(|c| c.to_string()).unwrap_or_default();
                    ctx.set(&NOTE, &caller);
                }
                "read-note" => {
                    ctx.get(&NOTE)?;
                }
                "undeclared" => ctx.set(&ValueSpec::<i64>::new("nope"), &1),
                "fail" => return Err(HandlerError::msg("boom")),
                other => return Err(format!("unknown op {other}").into()),
            }
            Ok(())
        },
    );
    functions
}

fn all_states() -> Vec<PersistedValue> {
    vec![state("count", None), state("note", None), state("seen", None)]
}

// ---- tests --------------------------------------------------------------------------------------

#[test]
fn missing_state_yields_incomplete_context_listing_every_missing_spec() {
    let calls = Arc::new(AtomicUsize::new(0));
    let functions = functions(calls.clone());
    let request = batch(
        "test/fn",
        "a",
        vec![state("count", None)],
        vec![invocation(long_value(1))],
    );
    let reply = FromFunction::decode(functions.handle(&request.encode_to_vec()).unwrap()).unwrap();
    let Some(Response::IncompleteInvocationContext(incomplete)) = reply.response else {
        panic!("expected an incomplete invocation context, got {reply:?}");
    };
    let spec = |name: &str, typename: &str, mode: ExpireMode, millis: i64| PersistedValueSpec {
        state_name: name.into(),
        type_typename: typename.into(),
        expiration_spec: Some(pb::from_function::ExpirationSpec {
            mode: mode as i32,
            expire_after_millis: millis,
        }),
    };
    assert_eq!(
        incomplete.missing_values,
        vec![
            spec("note", "io.statefun.types/string", ExpireMode::AfterWrite, 60_000),
            spec("seen", "io.statefun.types/bool", ExpireMode::AfterInvoke, 1_500),
        ]
    );
    assert_eq!(calls.load(Ordering::Relaxed), 0, "the handler must not run");

    // No state at all: all three, the first without expiration.
    let request = batch("test/fn", "a", vec![], vec![invocation(long_value(1))]);
    let reply = FromFunction::decode(functions.handle(&request.encode_to_vec()).unwrap()).unwrap();
    let Some(Response::IncompleteInvocationContext(incomplete)) = reply.response else {
        panic!("expected an incomplete invocation context");
    };
    assert_eq!(incomplete.missing_values.len(), 3);
    assert_eq!(
        incomplete.missing_values[0],
        spec("count", "io.statefun.types/long", ExpireMode::None, 0)
    );
}

#[test]
fn batch_runs_in_order_and_yields_one_final_mutation() {
    let calls = Arc::new(AtomicUsize::new(0));
    let functions = functions(calls.clone());
    let mut states = all_states();
    states[0] = state("count", Some(long_value(10)));
    let invocations = [1, 2, 3].map(|v| invocation(long_value(v))).to_vec();
    let r = result(&functions, batch("test/fn", "a", states, invocations));
    assert_eq!(calls.load(Ordering::Relaxed), 3);
    assert_eq!(r.state_mutations.len(), 1);
    let m = &r.state_mutations[0];
    assert_eq!(m.mutation_type, MutationType::Modify as i32);
    assert_eq!(m.state_name, "count");
    assert_eq!(m.state_value, Some(long_value(16)));
    assert!(r.outgoing_messages.is_empty() && r.delayed_invocations.is_empty());
}

#[test]
fn remove_yields_delete() {
    let functions = functions(Arc::default());
    let mut states = all_states();
    states[1] = state("note", Some(typed(&"old".to_string())));
    let r = result(
        &functions,
        batch("test/fn", "a", states, vec![invocation(cmd("remove"))]),
    );
    assert_eq!(r.state_mutations.len(), 1);
    let m = &r.state_mutations[0];
    assert_eq!(
        (m.mutation_type, m.state_name.as_str()),
        (MutationType::Delete as i32, "note")
    );
    assert_eq!(m.state_value, None);
}

#[test]
fn sends_delays_cancellations_and_egress_have_the_wire_shape() {
    let functions = functions(Arc::default());
    let ops = ["send", "later", "later-untokened", "cancel", "egress"];
    let invocations = ops.iter().map(|op| invocation(cmd(op))).collect();
    let r = result(&functions, batch("test/fn", "a", all_states(), invocations));

    assert_eq!(r.outgoing_messages.len(), 1);
    let sent = &r.outgoing_messages[0];
    assert_eq!(sent.target, Some(pb_address("test/friend", "f1")));
    assert_eq!(sent.argument, Some(typed(&"hi".to_string())));

    let [later, untokened, cancel] = &r.delayed_invocations[..] else {
        panic!("expected three delayed invocations, got {:?}", r.delayed_invocations);
    };
    assert_eq!(later.delay_in_ms, 2500);
    assert_eq!(later.cancellation_token, "tok");
    assert!(!later.is_cancellation_request);
    assert_eq!(later.target, Some(pb_address("test/friend", "f1")));
    assert_eq!(later.argument, Some(typed(&7i32)));
    assert_eq!(
        (untokened.delay_in_ms, untokened.cancellation_token.as_str()),
        (1000, "")
    );
    assert_eq!(
        *cancel,
        pb::from_function::DelayedInvocation {
            is_cancellation_request: true,
            cancellation_token: "tok".into(),
            ..Default::default()
        }
    );

    let [egress] = &r.outgoing_egresses[..] else {
        panic!("expected one egress message")
    };
    assert_eq!(
        (egress.egress_namespace.as_str(), egress.egress_type.as_str()),
        ("test", "out")
    );
    let argument = egress.argument.as_ref().unwrap();
    assert_eq!(argument.typename, "test/Cmd");
    assert_eq!(&argument.value[..], br#"{"op":"out"}"#);
    assert!(r.state_mutations.is_empty());
}

#[test]
fn caller_is_visible_per_invocation() {
    let functions = functions(Arc::default());
    let mut from_friend = invocation(cmd("caller"));
    from_friend.caller = Some(pb_address("test/friend", "f9"));
    let r = result(&functions, batch("test/fn", "a", all_states(), vec![from_friend]));
    assert_eq!(
        r.state_mutations[0].state_value,
        Some(typed(&"test/friend/f9".to_string()))
    );

    // From an ingress: no caller (an all-empty address counts as none).
    let mut from_ingress = invocation(cmd("caller"));
    from_ingress.caller = Some(pb::Address::default());
    let r = result(&functions, batch("test/fn", "a", all_states(), vec![from_ingress]));
    assert_eq!(r.state_mutations[0].state_value, Some(typed(&String::new())));
}

#[test]
fn state_of_another_type_is_a_decode_error() {
    let functions = functions(Arc::default());
    let mut states = all_states();
    states[1] = state("note", Some(long_value(3)));
    let request = batch("test/fn", "a", states, vec![invocation(cmd("read-note"))]);
    let err = functions.handle(&request.encode_to_vec()).unwrap_err();
    assert!(
        matches!(&err, SdkError::Handler { source: HandlerError::Decode(DecodeError::TypeMismatch { actual, .. }), .. } if actual == "io.statefun.types/long"),
        "{err:?}"
    );
    assert!(!err.is_bad_request());
}

#[test]
fn handler_failures_and_misuse_are_server_errors() {
    let functions = functions(Arc::default());
    let request = batch("test/fn", "a", all_states(), vec![invocation(cmd("fail"))]);
    let err = functions.handle(&request.encode_to_vec()).unwrap_err();
    assert!(matches!(err, SdkError::Handler { .. }) && !err.is_bad_request());
    assert!(err.to_string().contains("boom"), "{err}");

    let request = batch("test/fn", "a", all_states(), vec![invocation(cmd("undeclared"))]);
    let err = functions.handle(&request.encode_to_vec()).unwrap_err();
    assert!(
        matches!(&err, SdkError::Usage { source: UsageError::UndeclaredState(s), .. } if s == "nope"),
        "{err:?}"
    );
    assert!(!err.is_bad_request());
}

#[test]
fn bad_requests_are_rejected() {
    let functions = functions(Arc::default());
    let request = batch("test/unknown", "a", vec![], vec![invocation(long_value(1))]);
    let err = functions.handle(&request.encode_to_vec()).unwrap_err();
    assert!(
        matches!(&err, SdkError::UnknownFunction(t) if t == "test/unknown"),
        "{err:?}"
    );
    assert!(err.is_bad_request());

    let err = functions.handle(b"garbage").unwrap_err();
    assert!(matches!(err, SdkError::MalformedRequest(_)), "{err:?}");
    let err = functions.handle(&ToFunction::default().encode_to_vec()).unwrap_err();
    assert!(matches!(err, SdkError::MissingInvocation), "{err:?}");
    let mut no_target = batch("test/fn", "a", vec![], vec![]);
    if let Some(Request::Invocation(b)) = &mut no_target.request {
        b.target = None;
    }
    let err = functions.handle(&no_target.encode_to_vec()).unwrap_err();
    assert!(matches!(err, SdkError::MissingTarget), "{err:?}");
}

#[test]
fn empty_state_reads_as_none() {
    let mut functions = Functions::new();
    functions.register(tn("test/probe"), vec![COUNT.decl()], |ctx, _| {
        assert_eq!(ctx.get(&COUNT)?, None);
        assert_eq!(ctx.address(), &Address::new(tn("test/probe"), "p"));
        Ok(())
    });
    let request = batch(
        "test/probe",
        "p",
        vec![state("count", None)],
        vec![invocation(long_value(0))],
    );
    let r = result(&functions, request);
    assert!(r.state_mutations.is_empty());
}

// ---- reply --------------------------------------------------------------------------------------

/// `test/echo` replies with the message's string, uppercased.
fn echo() -> Functions {
    let mut functions = Functions::new();
    functions.register(tn("test/echo"), vec![], |ctx, msg| {
        let text: String = msg.get()?;
        ctx.reply(&text.to_uppercase())?;
        Ok(())
    });
    functions
}

#[test]
fn reply_sends_to_the_caller_of_each_invocation() {
    let mut first = invocation(typed(&"one".to_string()));
    first.caller = Some(pb_address("spindle.reply/0", "r1"));
    let mut second = invocation(typed(&"two".to_string()));
    second.caller = Some(pb_address("test/friend", "f2"));
    let r = result(&echo(), batch("test/echo", "e", vec![], vec![first, second]));
    let sent: Vec<_> = r
        .outgoing_messages
        .iter()
        .map(|m| (m.target.clone().unwrap(), m.argument.clone().unwrap()))
        .collect();
    assert_eq!(
        sent,
        [
            (pb_address("spindle.reply/0", "r1"), typed(&"ONE".to_string())),
            (pb_address("test/friend", "f2"), typed(&"TWO".to_string())),
        ]
    );
}

#[test]
fn reply_without_a_caller_fails_the_batch_naming_the_address() {
    let request = batch("test/echo", "e7", vec![], vec![invocation(typed(&"x".to_string()))]);
    let err = echo().handle(&request.encode_to_vec()).unwrap_err();
    assert!(
        matches!(&err, SdkError::Handler { source: HandlerError::Usage(UsageError::NoCaller(a)), .. } if a == "test/echo/e7"),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("no caller") && text.contains("Spindle-Reply: wait"),
        "{text}"
    );
    assert!(!err.is_bad_request());
}

#[test]
fn a_handler_may_recover_from_a_missing_caller() {
    let mut functions = Functions::new();
    functions.register(tn("test/polite"), vec![], |ctx, _| {
        if let Err(UsageError::NoCaller(_)) = ctx.reply(&1i64) {
            ctx.send_egress(&tn("test/out"), &2i64);
        }
        Ok(())
    });
    let r = result(
        &functions,
        batch("test/polite", "p", vec![], vec![invocation(long_value(0))]),
    );
    assert!(r.outgoing_messages.is_empty(), "nothing sent to a missing caller");
    assert_eq!(r.outgoing_egresses[0].argument, Some(long_value(2)));
}

// ---- async handlers -----------------------------------------------------------------------------

/// A stand-in for a remote store, answering after the handler has yielded to the runtime:
/// the value arrives from another task over a channel.
async fn lookup(key: i64) -> i64 {
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        tokio::task::yield_now().await;
        let _ = tx.send(key * 100);
    });
    rx.await.unwrap()
}

async fn add_looked_up(ctx: &mut crate::Context<'_>, msg: crate::Message) -> Result<(), HandlerError> {
    let key: i64 = msg.get()?;
    let before = ctx.get(&COUNT)?.unwrap_or(0);
    let found = lookup(key).await;
    // State read before the await is still the context's, and writes after it count.
    ctx.set(&COUNT, &(before + found));
    if ctx.caller().is_some() {
        ctx.reply(&(before + found))?;
    }
    Ok(())
}

fn async_functions() -> Functions {
    let mut functions = Functions::new();
    functions.register_async(tn("test/async"), vec![COUNT.decl()], |ctx, msg| {
        Box::pin(add_looked_up(ctx, msg))
    });
    functions.register(tn("test/sync"), vec![COUNT.decl()], |ctx, _| {
        ctx.set(&COUNT, &1);
        Ok(())
    });
    functions
}

async fn async_result(functions: &Functions, request: ToFunction) -> InvocationResponse {
    let reply = functions.handle_async(&request.encode_to_vec()).await.unwrap();
    match FromFunction::decode(reply).unwrap().response {
        Some(Response::InvocationResult(r)) => r,
        other => panic!("expected an invocation result, got {other:?}"),
    }
}

#[tokio::test]
async fn async_handlers_run_the_batch_in_order_across_awaits() {
    let functions = async_functions();
    let mut second = invocation(long_value(2));
    second.caller = Some(pb_address("spindle.reply/1", "q"));
    let request = batch(
        "test/async",
        "a",
        vec![state("count", Some(long_value(5)))],
        vec![invocation(long_value(1)), second],
    );
    let r = async_result(&functions, request).await;
    // 5 + 100, then + 200: the second invocation saw the first one's write.
    assert_eq!(r.state_mutations.len(), 1);
    assert_eq!(r.state_mutations[0].state_value, Some(long_value(305)));
    let [reply] = &r.outgoing_messages[..] else {
        panic!("one reply expected, got {:?}", r.outgoing_messages)
    };
    assert_eq!(reply.target, Some(pb_address("spindle.reply/1", "q")));
    assert_eq!(reply.argument, Some(long_value(305)));

    // Missing state: asked for, handler not run — as for synchronous handlers.
    let request = batch("test/async", "a", vec![], vec![invocation(long_value(1))]);
    let reply = functions.handle_async(&request.encode_to_vec()).await.unwrap();
    assert!(matches!(
        FromFunction::decode(reply).unwrap().response,
        Some(Response::IncompleteInvocationContext(_))
    ));
}

#[tokio::test]
async fn handle_async_serves_synchronous_handlers_and_handle_refuses_async_ones() {
    let functions = async_functions();
    let sync = batch(
        "test/sync",
        "s",
        vec![state("count", None)],
        vec![invocation(long_value(0))],
    );
    let r = async_result(&functions, sync.clone()).await;
    assert_eq!(r.state_mutations[0].state_value, Some(long_value(1)));
    assert_eq!(result(&functions, sync), r, "handle and handle_async agree");

    let request = batch(
        "test/async",
        "a",
        vec![state("count", None)],
        vec![invocation(long_value(1))],
    );
    let err = functions.handle(&request.encode_to_vec()).unwrap_err();
    assert!(
        matches!(&err, SdkError::AsyncHandler(t) if t.as_str() == "test/async"),
        "{err:?}"
    );
    assert!(err.to_string().contains("handle_async"), "{err}");
}

#[tokio::test]
async fn async_handler_errors_and_misuse_fail_the_batch() {
    let mut functions = Functions::new();
    functions.register_async(tn("test/bad"), vec![COUNT.decl()], |ctx, msg| {
        Box::pin(async move {
            tokio::task::yield_now().await;
            if msg.get::<i64>()? == 0 {
                return Err(HandlerError::msg("zero"));
            }
            ctx.set(&ValueSpec::<i64>::new("nope"), &1);
            Ok(())
        })
    });
    let run = |v| {
        let request = batch(
            "test/bad",
            "b",
            vec![state("count", None)],
            vec![invocation(long_value(v))],
        );
        let functions = &functions;
        async move { functions.handle_async(&request.encode_to_vec()).await.unwrap_err() }
    };
    let err = run(0).await;
    assert!(
        matches!(err, SdkError::Handler { .. }) && err.to_string().contains("zero"),
        "{err}"
    );
    let err = run(1).await;
    assert!(
        matches!(&err, SdkError::Usage { source: UsageError::UndeclaredState(s), .. } if s == "nope"),
        "{err:?}"
    );
}
