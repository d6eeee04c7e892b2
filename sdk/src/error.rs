//! The SDK's errors, split by who can act on them: decoding a value ([`DecodeError`]), encoding
//! one ([`EncodeError`]), misusing the context ([`UsageError`]), a failing handler
//! ([`HandlerError`]), and the outcome of a whole request ([`SdkError`]), which the server maps
//! to a 4xx (the runtime gives up) or a 5xx (the runtime retries).

use std::error::Error as StdError;

use crate::{TypeName, TypeNameError};

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// A value could not be read as the type asked for.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The value's typename is not the one the reader expected (a message of another type, or a
    /// state written under another type).
    #[error("type mismatch: the value is of type `{actual}` but was read as `{expected}`")]
    TypeMismatch { expected: String, actual: String },
    /// The bytes are not a valid encoding of a StateFun primitive.
    #[error("the bytes are not a valid `{typename}` value")]
    Malformed { typename: &'static str },
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The state was not declared when the function was registered.
    #[error("state `{0}` is not declared for this function")]
    UndeclaredState(String),
    /// Raised by a user-defined [`Type`](crate::Type).
    #[error(transparent)]
    Custom(BoxError),
}

impl DecodeError {
    /// Wraps an error from a user-defined [`Type`](crate::Type)'s decoder.
    pub fn custom(error: impl Into<BoxError>) -> Self {
        DecodeError::Custom(error.into())
    }
}

/// A value could not be serialized.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("cannot serialize as JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Custom(BoxError),
}

/// A handler used its [`Context`](crate::Context) in a way the function's registration does not
/// allow. Recorded by the context (its setters return nothing) and reported for the whole batch.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("state `{0}` is not declared for this function")]
    UndeclaredState(String),
    #[error("state `{state}` is declared as `{declared}` but was written as `{written}`")]
    StateTypeMismatch {
        state: String,
        declared: &'static str,
        written: &'static str,
    },
    #[error("cannot encode a `{typename}` value: {source}")]
    Encode {
        typename: &'static str,
        source: EncodeError,
    },
    /// [`Context::reply`](crate::Context::reply) for a message nobody waits on.
    #[error(
        "cannot reply: the message to `{0}` has no caller (it came from an ingress; an HTTP caller asks for a reply with `Spindle-Reply: wait`)"
    )]
    NoCaller(String),
}

/// Why a handler failed. Build one from a message ([`HandlerError::msg`]) or any error
/// ([`HandlerError::new`]); `?` converts [`DecodeError`]s, [`UsageError`]s, strings and boxed
/// errors directly.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A context call that reports its misuse, e.g. [`Context::reply`](crate::Context::reply)
    /// without a caller.
    #[error(transparent)]
    Usage(#[from] UsageError),
    #[error("{0}")]
    Message(String),
    #[error(transparent)]
    Other(BoxError),
}

impl HandlerError {
    pub fn msg(message: impl Into<String>) -> Self {
        HandlerError::Message(message.into())
    }

    pub fn new(error: impl StdError + Send + Sync + 'static) -> Self {
        HandlerError::Other(Box::new(error))
    }
}

impl From<String> for HandlerError {
    fn from(message: String) -> Self {
        HandlerError::Message(message)
    }
}

impl From<&str> for HandlerError {
    fn from(message: &str) -> Self {
        HandlerError::Message(message.to_string())
    }
}

impl From<BoxError> for HandlerError {
    fn from(error: BoxError) -> Self {
        HandlerError::Other(error)
    }
}

/// Why a request could not be answered with a `FromFunction`.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    #[error("the request body is not a ToFunction message: {0}")]
    MalformedRequest(#[from] prost::DecodeError),
    #[error("the request carries no invocation batch")]
    MissingInvocation,
    #[error("the invocation batch has no target address")]
    MissingTarget,
    #[error("invalid {role} address: {source}")]
    InvalidAddress { role: &'static str, source: TypeNameError },
    #[error("no function of type `{0}` is registered here")]
    UnknownFunction(String),
    #[error("function `{function}` failed: {source}")]
    Handler { function: TypeName, source: HandlerError },
    #[error("function `{function}` misused its context: {source}")]
    Usage { function: TypeName, source: UsageError },
    /// [`Functions::handle`](crate::Functions::handle) was asked to run an async handler.
    #[error(
        "function `{0}` has an async handler: answer its requests with Functions::handle_async (as serve does), not Functions::handle"
    )]
    AsyncHandler(TypeName),
}

impl SdkError {
    /// True when the request itself is at fault, so retrying it cannot help (HTTP 400); false
    /// when the function failed (HTTP 500, which StateFun's runtime retries).
    pub fn is_bad_request(&self) -> bool {
        match self {
            SdkError::MalformedRequest(_)
            | SdkError::MissingInvocation
            | SdkError::MissingTarget
            | SdkError::InvalidAddress { .. }
            | SdkError::UnknownFunction(_) => true,
            SdkError::Handler { .. } | SdkError::Usage { .. } | SdkError::AsyncHandler(_) => false,
        }
    }
}
