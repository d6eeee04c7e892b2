//! The registry of functions and the request handler: one `ToFunction` in, one `FromFunction`
//! out, no I/O (so it is tested, benchmarked and served the same way).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context as TaskContext, Poll, Waker};

use bytes::Bytes;
use prost::Message as _;
use spindle_protocol::reqreply::from_function::{IncompleteInvocationContext, InvocationResponse, Response};
use spindle_protocol::reqreply::to_function::{Invocation, InvocationBatchRequest, Request};
use spindle_protocol::reqreply::{FromFunction, ToFunction};

use crate::state::StateView;
use crate::{Address, Context, HandlerError, Message, SdkError, StateDecl, TypeName};

/// The future an async handler returns for one invocation. It borrows the context (`'c`) for
/// as long as it runs, so the handler reads and writes state across its `.await`s.
pub type HandlerFuture<'c> = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send + 'c>>;

type SyncHandler = Box<dyn Fn(&mut Context<'_>, Message) -> Result<(), HandlerError> + Send + Sync>;
type AsyncHandler = Box<dyn for<'c, 'b> Fn(&'c mut Context<'b>, Message) -> HandlerFuture<'c> + Send + Sync>;

enum Handler {
    Sync(SyncHandler),
    Async(AsyncHandler),
}

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
        self.insert(typename, states, Handler::Sync(Box::new(handler)))
    }

    /// Registers an async handler (one that awaits a database, an HTTP API, …) as the function
    /// `typename`. The handler returns its future boxed, which lets it borrow the context:
    ///
    /// ```
    /// # use spindle_sdk::{Context, Functions, HandlerError, Message, TypeName};
    /// async fn lookup(ctx: &mut Context<'_>, msg: Message) -> Result<(), HandlerError> {
    ///     let name: String = msg.get()?;
    ///     let found = async { name.len() as i64 }.await; // e.g. a query
    ///     ctx.reply(&found)?;
    ///     Ok(())
    /// }
    /// let mut functions = Functions::new();
    /// functions.register_async(TypeName::parse("example/lookup").unwrap(), vec![], |ctx, msg| {
    ///     Box::pin(lookup(ctx, msg))
    /// });
    /// ```
    ///
    /// The invocations of a batch still run one after the other (each sees the state the
    /// previous one left), so an instance never runs two at once; different instances' batches
    /// run concurrently under [`serve`](crate::serve). Serve async functions with
    /// [`serve`](crate::serve) or [`Functions::handle_async`]; [`Functions::handle`] refuses
    /// them.
    ///
    /// # Panics
    /// As [`Functions::register`].
    pub fn register_async<F>(&mut self, typename: TypeName, states: Vec<StateDecl>, handler: F) -> &mut Self
    where
        F: for<'c, 'b> Fn(&'c mut Context<'b>, Message) -> HandlerFuture<'c> + Send + Sync + 'static,
    {
        self.insert(typename, states, Handler::Async(Box::new(handler)))
    }

    fn insert(&mut self, typename: TypeName, states: Vec<StateDecl>, handler: Handler) -> &mut Self {
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
            handler,
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
    ///
    /// Synchronous: a request for a function registered with [`Functions::register_async`] is
    /// refused with [`SdkError::AsyncHandler`]; answer those with [`Functions::handle_async`].
    pub fn handle(&self, request: &[u8]) -> Result<Bytes, SdkError> {
        let (function, target, batch) = self.decode(request)?;
        if matches!(function.handler, Handler::Async(_)) {
            return Err(SdkError::AsyncHandler(function.typename.clone()));
        }
        // Only synchronous handlers run, so the future never waits: one poll completes it.
        let mut answer = pin!(function.answer(&target, batch));
        match answer.as_mut().poll(&mut TaskContext::from_waker(Waker::noop())) {
            Poll::Ready(result) => result,
            Poll::Pending => unreachable!("a batch of synchronous handlers completes in one poll"),
        }
    }

    /// [`Functions::handle`] for any function, synchronous or async: what
    /// [`serve`](crate::serve) calls.
    pub async fn handle_async(&self, request: &[u8]) -> Result<Bytes, SdkError> {
        let (function, target, batch) = self.decode(request)?;
        function.answer(&target, batch).await
    }

    fn decode(&self, request: &[u8]) -> Result<(&Function, Address, InvocationBatchRequest), SdkError> {
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
        Ok((function, target, batch))
    }
}

impl Function {
    async fn answer(&self, target: &Address, batch: InvocationBatchRequest) -> Result<Bytes, SdkError> {
        let response = match StateView::resolve(&self.states, batch.state) {
            Err(missing) => {
                tracing::debug!(function = %target.typename, missing = missing.len(), "incomplete invocation context");
                Response::IncompleteInvocationContext(IncompleteInvocationContext {
                    missing_values: missing.into_iter().map(|d| d.to_pb()).collect(),
                })
            }
            Ok(state) => Response::InvocationResult(self.run(target, state, batch.invocations).await?),
        };
        let reply = FromFunction {
            response: Some(response),
        };
        Ok(reply.encode_to_vec().into())
    }

    async fn run(
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
            let message = Message::from_pb(invocation.argument);
            let result = match &self.handler {
                Handler::Sync(handler) => handler(&mut ctx, message),
                Handler::Async(handler) => handler(&mut ctx, message).await,
            };
            result.map_err(|source| SdkError::Handler {
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
