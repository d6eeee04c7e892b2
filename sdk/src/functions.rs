//! The registry of functions and the request handler: one `ToFunction` in, one `FromFunction`
//! out, no I/O (so it is tested, benchmarked and served the same way).

use std::collections::HashMap;
use std::fmt;

use bytes::Bytes;
use prost::Message as _;
use spindle_protocol::reqreply::from_function::{IncompleteInvocationContext, InvocationResponse, Response};
use spindle_protocol::reqreply::to_function::{Invocation, Request};
use spindle_protocol::reqreply::{FromFunction, ToFunction};

use crate::state::StateView;
use crate::{Address, Context, HandlerError, Message, SdkError, StateDecl, TypeName};

type Handler = Box<dyn Fn(&mut Context<'_>, Message) -> Result<(), HandlerError> + Send + Sync>;

struct Function {
    typename: TypeName,
    states: Vec<StateDecl>,
    handler: Handler,
}

/// The functions one endpoint serves, by function type.
#[derive(Default)]
pub struct Functions {
    by_type: HashMap<String, Function>,
}

impl Functions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` as the function `typename`, with the states it uses (see
    /// [`ValueSpec::decl`](crate::ValueSpec::decl)). Registering a typename again replaces it.
    ///
    /// # Panics
    /// When two declared states share a name: a programming error, caught at startup rather
    /// than as unreadable state later.
    pub fn register<F>(&mut self, typename: TypeName, states: Vec<StateDecl>, handler: F) -> &mut Self
    where
        F: Fn(&mut Context<'_>, Message) -> Result<(), HandlerError> + Send + Sync + 'static,
    {
        for (i, decl) in states.iter().enumerate() {
            assert!(
                states[..i].iter().all(|d| d.name() != decl.name()),
                "function `{typename}` declares state `{}` twice",
                decl.name()
            );
        }
        let function = Function {
            typename: typename.clone(),
            states,
            handler: Box::new(handler),
        };
        self.by_type.insert(typename.as_str().to_string(), function);
        self
    }

    /// The registered function types.
    pub fn typenames(&self) -> impl Iterator<Item = &TypeName> {
        self.by_type.values().map(|f| &f.typename)
    }

    /// Answers one request: decodes the `ToFunction`, dispatches on the target's function type
    /// and returns the encoded `FromFunction`. When a declared state is missing from the
    /// request, the handler does not run and the reply lists every missing state; otherwise
    /// every invocation of the batch runs in order against the same state.
    pub fn handle(&self, request: &[u8]) -> Result<Bytes, SdkError> {
        let Some(Request::Invocation(batch)) = ToFunction::decode(request)?.request else {
            return Err(SdkError::MissingInvocation);
        };
        let target = Address::from_pb(batch.target.as_ref())
            .map_err(|source| SdkError::InvalidAddress { role: "target", source })?
            .ok_or(SdkError::MissingTarget)?;
        let function = self
            .by_type
            .get(target.typename.as_str())
            .ok_or_else(|| SdkError::UnknownFunction(target.typename.to_string()))?;

        let response = match StateView::resolve(&function.states, batch.state) {
            Err(missing) => {
                tracing::debug!(function = %target.typename, missing = missing.len(), "incomplete invocation context");
                Response::IncompleteInvocationContext(IncompleteInvocationContext {
                    missing_values: missing.into_iter().map(|d| d.to_pb()).collect(),
                })
            }
            Ok(state) => Response::InvocationResult(function.run(&target, state, batch.invocations)?),
        };
        let reply = FromFunction {
            response: Some(response),
        };
        Ok(reply.encode_to_vec().into())
    }
}

impl Function {
    fn run(
        &self,
        target: &Address,
        state: StateView<'_>,
        invocations: Vec<Invocation>,
    ) -> Result<InvocationResponse, SdkError> {
        let mut ctx = Context::new(target, state);
        for invocation in invocations {
            let caller = Address::from_pb(invocation.caller.as_ref())
                .map_err(|source| SdkError::InvalidAddress { role: "caller", source })?;
            ctx.set_caller(caller);
            (self.handler)(&mut ctx, Message::from_pb(invocation.argument)).map_err(|source| SdkError::Handler {
                function: self.typename.clone(),
                source,
            })?;
            // Fail at the invocation that misused the context, as the Python SDK raises there.
            if let Some(source) = ctx.take_misuse() {
                return Err(SdkError::Usage {
                    function: self.typename.clone(),
                    source,
                });
            }
        }
        Ok(ctx.finish())
    }
}

impl fmt::Debug for Functions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.typenames()).finish()
    }
}
