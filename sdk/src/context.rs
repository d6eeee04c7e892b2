//! What a handler sees and does: its address, the caller, its state, and the messages it sends.

use std::time::Duration;

use bytes::Bytes;
use spindle_protocol::reqreply::TypedValue;
use spindle_protocol::reqreply::from_function::{DelayedInvocation, EgressMessage, Invocation, InvocationResponse};

use crate::state::StateView;
use crate::{Address, DecodeError, Type, TypeName, UsageError, ValueSpec};

/// The handler's view of one function instance during one batch. Every invocation of the batch
/// sees the state as left by the previous one; sends are collected and returned to the runtime
/// when the whole batch has run.
pub struct Context<'a> {
    address: &'a Address,
    caller: Option<Address>,
    state: StateView<'a>,
    /// Outgoing messages, delayed messages and egress records, in the order they were sent.
    /// State mutations are added from `state` at the end of the batch.
    outbox: InvocationResponse,
    /// The first misuse (undeclared state, wrong type, unencodable value). Setters return
    /// nothing, as in the other SDKs, so the misuse is kept here and fails the batch.
    misuse: Option<UsageError>,
}

impl<'a> Context<'a> {
    pub(crate) fn new(address: &'a Address, state: StateView<'a>) -> Self {
        Context {
            address,
            caller: None,
            state,
            outbox: InvocationResponse::default(),
            misuse: None,
        }
    }

    pub(crate) fn set_caller(&mut self, caller: Option<Address>) {
        self.caller = caller;
    }

    pub(crate) fn take_misuse(&mut self) -> Option<UsageError> {
        self.misuse.take()
    }

    /// The reply for the batch: state mutations and everything sent.
    pub(crate) fn finish(self) -> InvocationResponse {
        let mut response = self.outbox;
        response.state_mutations = self.state.into_mutations();
        response
    }

    /// The address of the function instance being invoked.
    pub fn address(&self) -> &Address {
        self.address
    }

    /// The function that sent the current message; `None` for a message from an ingress.
    pub fn caller(&self) -> Option<&Address> {
        self.caller.as_ref()
    }

    /// The state's current value; `None` when it has none.
    pub fn get<T: Type>(&self, spec: &ValueSpec<T>) -> Result<Option<T>, DecodeError> {
        self.state.get(spec)
    }

    pub fn set<T: Type>(&mut self, spec: &ValueSpec<T>, value: &T) {
        let result = self.state.set(spec, value);
        self.record(result);
    }

    pub fn remove<T: Type>(&mut self, spec: &ValueSpec<T>) {
        let result = self.state.remove(spec);
        self.record(result);
    }

    /// Sends a message to a function.
    pub fn send<T: Type>(&mut self, to: &Address, value: &T) {
        let Some(argument) = self.typed(value) else {
            return;
        };
        self.outbox.outgoing_messages.push(Invocation {
            target: Some(to.to_pb()),
            argument: Some(argument),
        });
    }

    /// Replies to the caller of the message being handled: sends `value` to the function that
    /// sent it, or — for a request made with `Spindle-Reply: wait` — to the HTTP request
    /// waiting for it (the ordinary StateFun idiom, `send` to `caller`, so the same code works
    /// under StateFun). A message with no caller (from an ingress, nobody waiting) is an
    /// [`UsageError::NoCaller`] and nothing is sent; `?` in a handler fails the batch with it.
    pub fn reply<T: Type>(&mut self, value: &T) -> Result<(), UsageError> {
        let Some(caller) = self.caller.clone() else {
            return Err(UsageError::NoCaller(self.address.to_string()));
        };
        self.send(&caller, value);
        Ok(())
    }

    /// Sends a message to a function after `delay`. A message sent with a cancellation token
    /// can be cancelled with [`Context::cancel_delayed`] until it is delivered.
    pub fn send_after<T: Type>(&mut self, delay: Duration, to: &Address, value: &T, cancellation_token: Option<&str>) {
        let Some(argument) = self.typed(value) else {
            return;
        };
        self.outbox.delayed_invocations.push(DelayedInvocation {
            is_cancellation_request: false,
            cancellation_token: cancellation_token.unwrap_or_default().to_string(),
            delay_in_ms: i64::try_from(delay.as_millis()).unwrap_or(i64::MAX),
            target: Some(to.to_pb()),
            argument: Some(argument),
        });
    }

    /// Cancels the delayed message sent with `cancellation_token`; best effort, a no-op once
    /// the message has been delivered.
    pub fn cancel_delayed(&mut self, cancellation_token: &str) {
        self.outbox.delayed_invocations.push(DelayedInvocation {
            is_cancellation_request: true,
            cancellation_token: cancellation_token.to_string(),
            ..DelayedInvocation::default()
        });
    }

    /// Sends a record to the egress `egress` (`namespace/name`, as the application declares it).
    pub fn send_egress<T: Type>(&mut self, egress: &TypeName, value: &T) {
        let Some(argument) = self.typed(value) else {
            return;
        };
        self.outbox.outgoing_egresses.push(EgressMessage {
            egress_namespace: egress.namespace().to_string(),
            egress_type: egress.name().to_string(),
            argument: Some(argument),
        });
    }

    fn typed<T: Type>(&mut self, value: &T) -> Option<TypedValue> {
        let result = value.try_encode().map_err(|source| UsageError::Encode {
            typename: T::typename(),
            source,
        });
        self.record(result).map(|bytes: Bytes| TypedValue {
            typename: T::typename().to_string(),
            has_value: true,
            value: bytes,
        })
    }

    fn record<R>(&mut self, result: Result<R, UsageError>) -> Option<R> {
        match result {
            Ok(r) => Some(r),
            Err(e) => {
                self.misuse.get_or_insert(e);
                None
            }
        }
    }
}
