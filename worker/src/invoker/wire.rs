//! The StateFun request-reply protocol (`io.statefun.sdk.reqreply`): a [`Call`] becomes a
//! `ToFunction`, a `FromFunction` becomes an [`Outcome`]. Pure: no I/O.

use std::time::Duration;

use spindle_protocol::reqreply::{
    self, FromFunction, ToFunction,
    from_function::{
        self, ExpirationSpec, InvocationResponse, PersistedValueSpec, expiration_spec::ExpireMode,
        persisted_value_mutation::MutationType,
    },
    to_function::{self, InvocationBatchRequest, PersistedValue},
};
use spindle_spec::TypeName;

use super::{Call, Delayed, Effects, EgressOut, Outcome};
use crate::message::{Address, Envelope, Value};
use crate::state::{Expiration, Mutation, StateSpec};

/// An address from the wire; `None` when the namespace or type is missing or malformed.
pub(crate) fn address_from_wire(a: &reqreply::Address) -> Option<Address> {
    let typename = TypeName::new(&a.namespace, &a.r#type).ok()?;
    crate::message::check_id(&a.id).ok()?;
    Some(Address::new(typename, a.id.as_str()))
}

pub(crate) fn address_to_wire(a: &Address) -> reqreply::Address {
    reqreply::Address {
        namespace: a.typename.namespace().to_string(),
        r#type: a.typename.name().to_string(),
        id: a.id.to_string(),
    }
}

/// `None` for a TypedValue without a value: a message must carry one.
pub(crate) fn value_from_wire(v: reqreply::TypedValue) -> Option<Value> {
    v.has_value.then(|| Value::new(v.typename, v.value))
}

pub(crate) fn value_to_wire(v: &Value) -> reqreply::TypedValue {
    reqreply::TypedValue {
        typename: v.typename.to_string(),
        has_value: true,
        value: v.bytes.clone(),
    }
}

pub(crate) fn spec_from_wire(p: &PersistedValueSpec) -> StateSpec {
    let ttl = |e: &ExpirationSpec| Duration::from_millis(e.expire_after_millis.max(0) as u64);
    let expiration = match &p.expiration_spec {
        Some(e) if e.mode == ExpireMode::AfterWrite as i32 => Expiration::AfterWrite(ttl(e)),
        Some(e) if e.mode == ExpireMode::AfterInvoke as i32 => Expiration::AfterInvoke(ttl(e)),
        _ => Expiration::Never,
    };
    StateSpec {
        name: p.state_name.as_str().into(),
        typename: p.type_typename.clone(),
        expiration,
    }
}

/// The request for a batch.
pub(crate) fn to_function(call: &Call) -> ToFunction {
    let state = call
        .state
        .iter()
        .map(|s| PersistedValue {
            state_name: s.name.to_string(),
            state_value: Some(match &s.value {
                Some(v) => value_to_wire(v),
                None => reqreply::TypedValue {
                    typename: s.typename.clone(),
                    has_value: false,
                    value: Default::default(),
                },
            }),
        })
        .collect();
    ToFunction {
        request: Some(to_function::Request::Invocation(InvocationBatchRequest {
            target: Some(address_to_wire(&call.target)),
            state,
            invocations: call
                .messages
                .iter()
                .map(|(caller, argument)| to_function::Invocation {
                    caller: caller.as_ref().map(address_to_wire),
                    argument: Some(value_to_wire(argument)),
                })
                .collect(),
        })),
    }
}

/// What the function at `source` answered, or why the answer is unusable.
pub(crate) fn from_function(source: &Address, reply: FromFunction) -> Result<Outcome, String> {
    match reply.response {
        Some(from_function::Response::InvocationResult(r)) => Ok(Outcome::Effects(effects(source, r))),
        Some(from_function::Response::IncompleteInvocationContext(c)) => Ok(Outcome::Incomplete(
            c.missing_values.iter().map(spec_from_wire).collect(),
        )),
        // A batch without effects: the Python SDK leaves `invocation_result` unset then (an
        // empty body), and StateFun's runtime reads an unset result as an empty one.
        None => Ok(Outcome::Effects(effects(source, InvocationResponse::default()))),
    }
}

fn effects(source: &Address, r: InvocationResponse) -> Effects {
    let mutations = r
        .state_mutations
        .into_iter()
        .map(|m| {
            let delete = m.mutation_type == MutationType::Delete as i32;
            Mutation {
                name: m.state_name,
                value: if delete {
                    None
                } else {
                    m.state_value.and_then(value_from_wire)
                },
            }
        })
        .collect();
    let messages = r
        .outgoing_messages
        .into_iter()
        .map(|m| envelope(source, m.target, m.argument))
        .collect();
    let delayed = r
        .delayed_invocations
        .into_iter()
        .map(|d| {
            if d.is_cancellation_request {
                return Ok(Delayed::Cancel {
                    token: d.cancellation_token,
                });
            }
            Ok(Delayed::Send {
                env: envelope(source, d.target, d.argument)?,
                delay_ms: d.delay_in_ms.max(0) as u64,
                token: d.cancellation_token,
            })
        })
        .collect();
    let egress = r
        .outgoing_egresses
        .into_iter()
        .map(|e| {
            let egress = TypeName::new(&e.egress_namespace, &e.egress_type)
                .map_err(|err| format!("egress message to a malformed egress: {err}"))?;
            let value = e
                .argument
                .and_then(value_from_wire)
                .ok_or_else(|| format!("egress message to `{egress}` without a value"))?;
            Ok(EgressOut { egress, value })
        })
        .collect();
    Effects {
        mutations,
        messages,
        delayed,
        egress,
    }
}

/// An outgoing message from the wire, sent by `source`.
fn envelope(
    source: &Address,
    target: Option<reqreply::Address>,
    argument: Option<reqreply::TypedValue>,
) -> Result<Envelope, String> {
    let target = target
        .as_ref()
        .and_then(address_from_wire)
        .ok_or_else(|| format!("message with a missing or malformed target {target:?}"))?;
    let value = argument
        .and_then(value_from_wire)
        .ok_or_else(|| format!("message to {target} without a value"))?;
    Ok(Envelope {
        target,
        caller: Some(source.clone()),
        value,
        dedup: None,
        trace: None,
    })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use spindle_protocol::reqreply::from_function::{
        DelayedInvocation, EgressMessage, IncompleteInvocationContext, Invocation, PersistedValueMutation,
    };

    use super::*;
    use crate::state::StateValue;

    fn addr(id: &str) -> Address {
        Address::new(TypeName::parse("t/f").unwrap(), id)
    }

    fn typed(t: &str, v: &'static [u8]) -> reqreply::TypedValue {
        reqreply::TypedValue {
            typename: t.into(),
            has_value: true,
            value: Bytes::from_static(v),
        }
    }

    #[test]
    fn a_call_becomes_a_batch_request_with_every_declared_state() {
        let call = Call {
            function: 0,
            target: addr("a"),
            state: vec![
                StateValue {
                    name: "seen".into(),
                    typename: "io.statefun.types/int".into(),
                    value: Some(Value::new("io.statefun.types/int", Bytes::from_static(b"\x08\x01"))),
                },
                StateValue {
                    name: "name".into(),
                    typename: "io.statefun.types/string".into(),
                    value: None,
                },
            ],
            messages: vec![
                (None, Value::new("t/m", Bytes::from_static(b"1"))),
                (Some(addr("b")), Value::new("t/m", Bytes::from_static(b"2"))),
            ],
        };
        let Some(to_function::Request::Invocation(r)) = to_function(&call).request else {
            panic!("an invocation request");
        };
        assert_eq!(r.target.unwrap().id, "a");
        assert_eq!(r.state.len(), 2);
        let unset = r.state[1].state_value.as_ref().unwrap();
        assert!(!unset.has_value);
        assert_eq!(
            unset.typename, "io.statefun.types/string",
            "an unset value names its declared type"
        );
        assert_eq!(r.invocations.len(), 2);
        assert!(r.invocations[0].caller.is_none());
        assert_eq!(r.invocations[1].caller.as_ref().unwrap().id, "b");
    }

    #[test]
    fn a_reply_becomes_effects_and_bad_entries_their_reasons() {
        let response = InvocationResponse {
            state_mutations: vec![
                PersistedValueMutation {
                    mutation_type: MutationType::Modify as i32,
                    state_name: "seen".into(),
                    state_value: Some(typed("io.statefun.types/int", b"\x08\x02")),
                },
                PersistedValueMutation {
                    mutation_type: MutationType::Delete as i32,
                    state_name: "name".into(),
                    state_value: None,
                },
            ],
            outgoing_messages: vec![
                Invocation {
                    target: Some(address_to_wire(&addr("b"))),
                    argument: Some(typed("t/m", b"x")),
                },
                Invocation {
                    target: None,
                    argument: Some(typed("t/m", b"y")),
                },
            ],
            delayed_invocations: vec![
                DelayedInvocation {
                    is_cancellation_request: false,
                    cancellation_token: "tok".into(),
                    delay_in_ms: 50,
                    target: Some(address_to_wire(&addr("c"))),
                    argument: Some(typed("t/m", b"z")),
                },
                DelayedInvocation {
                    is_cancellation_request: true,
                    cancellation_token: "old".into(),
                    ..Default::default()
                },
            ],
            outgoing_egresses: vec![
                EgressMessage {
                    egress_namespace: "e".into(),
                    egress_type: "out".into(),
                    argument: Some(typed("t/g", b"hi")),
                },
                EgressMessage {
                    egress_namespace: "e".into(),
                    egress_type: "out".into(),
                    argument: None,
                },
            ],
        };
        let reply = FromFunction {
            response: Some(from_function::Response::InvocationResult(response)),
        };
        let Ok(Outcome::Effects(e)) = from_function(&addr("a"), reply) else {
            panic!("effects");
        };
        assert_eq!(e.mutations[0].value.as_ref().unwrap().bytes.as_ref(), b"\x08\x02");
        assert_eq!(e.mutations[1].value, None, "a delete");
        let sent = e.messages[0].as_ref().unwrap();
        assert_eq!(
            (sent.target.to_string(), sent.caller.clone()),
            ("t/f/b".into(), Some(addr("a")))
        );
        assert!(
            e.messages[1]
                .as_ref()
                .unwrap_err()
                .contains("missing or malformed target")
        );
        assert!(matches!(&e.delayed[0], Ok(Delayed::Send { delay_ms: 50, token, .. }) if token == "tok"));
        assert_eq!(e.delayed[1], Ok(Delayed::Cancel { token: "old".into() }));
        assert_eq!(e.egress[0].as_ref().unwrap().egress.as_str(), "e/out");
        assert!(e.egress[1].as_ref().unwrap_err().contains("without a value"));
    }

    #[test]
    fn incomplete_contexts_name_the_specs_and_empty_replies_have_no_effects() {
        let reply = FromFunction {
            response: Some(from_function::Response::IncompleteInvocationContext(
                IncompleteInvocationContext {
                    missing_values: vec![PersistedValueSpec {
                        state_name: "seen".into(),
                        expiration_spec: Some(ExpirationSpec {
                            mode: ExpireMode::AfterInvoke as i32,
                            expire_after_millis: 1000,
                        }),
                        type_typename: "io.statefun.types/int".into(),
                    }],
                },
            )),
        };
        let Ok(Outcome::Incomplete(specs)) = from_function(&addr("a"), reply) else {
            panic!("incomplete");
        };
        assert_eq!(specs[0].expiration, Expiration::AfterInvoke(Duration::from_secs(1)));
        let Ok(Outcome::Effects(e)) = from_function(&addr("a"), FromFunction { response: None }) else {
            panic!("an empty FromFunction is an empty result");
        };
        assert!(e.mutations.is_empty() && e.messages.is_empty() && e.delayed.is_empty() && e.egress.is_empty());
    }

    /// A reply with one of each effect, addressed with the given strings.
    fn reply(namespace: &str, ty: &str, id: &str, egress: &str) -> FromFunction {
        let to = reqreply::Address {
            namespace: namespace.into(),
            r#type: ty.into(),
            id: id.into(),
        };
        FromFunction {
            response: Some(from_function::Response::InvocationResult(InvocationResponse {
                state_mutations: vec![PersistedValueMutation {
                    mutation_type: MutationType::Modify as i32,
                    state_name: id.into(),
                    state_value: Some(typed("t/v", b"1")),
                }],
                outgoing_messages: vec![Invocation {
                    target: Some(to.clone()),
                    argument: Some(typed("t/v", b"2")),
                }],
                delayed_invocations: vec![DelayedInvocation {
                    is_cancellation_request: false,
                    cancellation_token: id.into(),
                    delay_in_ms: -5,
                    target: Some(to),
                    argument: Some(typed("t/v", b"3")),
                }],
                outgoing_egresses: vec![EgressMessage {
                    egress_namespace: egress.into(),
                    egress_type: egress.into(),
                    argument: Some(typed("t/v", b"4")),
                }],
            })),
        }
    }

    /// What must hold of any outcome: every message it accepted has a valid target.
    fn check_outcome(outcome: Result<Outcome, String>, case: usize) {
        if let Ok(Outcome::Effects(e)) = outcome {
            let targets = e
                .messages
                .iter()
                .flatten()
                .map(|m| &m.target)
                .chain(e.delayed.iter().flatten().filter_map(|d| match d {
                    Delayed::Send { env, .. } => Some(&env.target),
                    Delayed::Cancel { .. } => None,
                }));
            for t in targets {
                assert!(
                    crate::message::check_id(&t.id).is_ok(),
                    "case {case}: accepted id {:?}",
                    t.id
                );
                assert!(TypeName::parse(t.typename.as_str()).is_ok(), "case {case}: {t}");
            }
        }
    }

    #[test]
    fn any_bytes_and_any_strings_from_a_function_give_effects_or_an_error_never_a_panic() {
        use prost::Message as _;
        let mut rng = crate::fuzz::Rng::new(0x5eed_0001);
        let valid = reply("t", "f", "x", "e").encode_to_vec();
        for case in 0..crate::fuzz::CASES {
            let bytes = if case % 2 == 0 {
                rng.mutate(&valid)
            } else {
                rng.bytes(300)
            };
            if let Ok(r) = FromFunction::decode(bytes.as_slice()) {
                check_outcome(from_function(&addr("a"), r), case);
            }
            let (ns, ty, id, eg) = (rng.text(), rng.text(), rng.text(), rng.text());
            check_outcome(from_function(&addr("a"), reply(&ns, &ty, &id, &eg)), case);
        }
    }
}
