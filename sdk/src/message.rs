//! The message a handler is invoked with.

use bytes::Bytes;
use spindle_protocol::reqreply::TypedValue;

use crate::{DecodeError, Type};

/// A message: bytes tagged with the typename of their type. Check the type with [`Message::is`]
/// and read it with [`Message::get`].
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    typename: String,
    bytes: Bytes,
}

impl Message {
    /// Builds a message from a value, e.g. to call a handler directly in a test.
    pub fn of<T: Type>(value: &T) -> Self {
        Message {
            typename: T::typename().to_string(),
            bytes: value.encode(),
        }
    }

    /// An absent argument reads as an empty message of no type rather than failing: it can only
    /// be decoded by a type that accepts empty bytes under an empty typename, i.e. never.
    pub(crate) fn from_pb(argument: Option<TypedValue>) -> Self {
        let value = argument.unwrap_or_default();
        Message {
            typename: value.typename,
            bytes: value.value,
        }
    }

    pub fn typename(&self) -> &str {
        &self.typename
    }

    /// True when the message is of type `T` (by typename).
    pub fn is<T: Type>(&self) -> bool {
        self.typename == T::typename()
    }

    /// Decodes the message as a `T`; a message of another type is a [`DecodeError::TypeMismatch`].
    pub fn get<T: Type>(&self) -> Result<T, DecodeError> {
        if !self.is::<T>() {
            return Err(DecodeError::TypeMismatch {
                expected: T::typename().to_string(),
                actual: self.typename.clone(),
            });
        }
        T::decode(&self.bytes)
    }

    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
}
