//! How values travel: every message and state value is a `TypedValue`, bytes tagged with a
//! typename. [`Type`] maps a Rust type to both; StateFun's primitives and JSON types come built in.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use spindle_protocol::{Primitive, typenames};

use crate::{DecodeError, EncodeError};

/// A Rust type with a StateFun typename and a byte encoding.
pub trait Type: Sized {
    /// The typename carried next to the bytes, e.g. `io.statefun.types/long`.
    fn typename() -> &'static str;

    fn encode(&self) -> Bytes;

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError>;

    /// Encodes, reporting failure instead of hiding it. The SDK calls this one; override it
    /// when encoding can fail (the JSON types do).
    fn try_encode(&self) -> Result<Bytes, EncodeError> {
        Ok(self.encode())
    }
}

/// A type carried as JSON under `TYPENAME`, like the Python SDK's `make_json_type`:
/// `impl JsonType for Greet { const TYPENAME: &'static str = "example/Greet"; }`.
pub trait JsonType: Serialize + DeserializeOwned {
    const TYPENAME: &'static str;
}

impl<T: JsonType> Type for T {
    fn typename() -> &'static str {
        T::TYPENAME
    }

    /// Serialization only fails for maps with non-string keys or failing `Serialize` impls. The
    /// SDK goes through [`Type::try_encode`] and reports that; here the failure is logged and
    /// the value encodes as empty (which no JSON reader accepts, so it cannot pass unnoticed).
    fn encode(&self) -> Bytes {
        self.try_encode().unwrap_or_else(|e| {
            tracing::error!(typename = T::TYPENAME, error = %e, "cannot encode a JSON value");
            Bytes::new()
        })
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(serde_json::from_slice(bytes)?)
    }

    fn try_encode(&self) -> Result<Bytes, EncodeError> {
        Ok(serde_json::to_vec(self)?.into())
    }
}

/// Implements [`Type`] for a StateFun primitive through [`Primitive`], so the wire format (for
/// example `IntWrapper` being `sfixed32`) is defined in one place, the protocol crate.
macro_rules! primitive_type {
    ($rust:ty, $variant:ident, $typename:expr, |$v:ident| $wrap:expr) => {
        impl Type for $rust {
            fn typename() -> &'static str {
                $typename
            }

            fn encode(&self) -> Bytes {
                let $v = self;
                Primitive::$variant($wrap).encode()
            }

            fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
                match Primitive::decode($typename, bytes) {
                    Some(Primitive::$variant(value)) => Ok(value),
                    _ => Err(DecodeError::Malformed { typename: $typename }),
                }
            }
        }
    };
}

primitive_type!(i32, Int, typenames::INT, |v| *v);
primitive_type!(i64, Long, typenames::LONG, |v| *v);
primitive_type!(String, String, typenames::STRING, |v| v.clone());
primitive_type!(bool, Bool, typenames::BOOL, |v| *v);
primitive_type!(f32, Float, typenames::FLOAT, |v| *v);
primitive_type!(f64, Double, typenames::DOUBLE, |v| *v);

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Point {
        x: i32,
    }

    impl JsonType for Point {
        const TYPENAME: &'static str = "example/Point";
    }

    #[test]
    fn primitives_roundtrip() {
        assert_eq!(i32::decode(&(-7i32).encode()).unwrap(), -7);
        assert_eq!(i64::decode(&(1i64 << 40).encode()).unwrap(), 1 << 40);
        assert_eq!(String::decode(&"hé".to_string().encode()).unwrap(), "hé");
        assert!(bool::decode(&true.encode()).unwrap());
        assert_eq!(f32::decode(&1.5f32.encode()).unwrap(), 1.5);
        assert_eq!(f64::decode(&(-2.25f64).encode()).unwrap(), -2.25);
        assert_eq!(<i64 as Type>::typename(), "io.statefun.types/long");
        // Zero is proto3's default: it encodes as no bytes at all, and decodes back.
        assert_eq!(i64::decode(b"").unwrap(), 0);
    }

    #[test]
    fn malformed_primitive_is_an_error() {
        assert!(matches!(i64::decode(&[0x09, 1]), Err(DecodeError::Malformed { .. })));
    }

    #[test]
    fn json_types_roundtrip() {
        let bytes = Point { x: 3 }.encode();
        assert_eq!(&bytes[..], br#"{"x":3}"#);
        assert_eq!(Point::decode(&bytes).unwrap(), Point { x: 3 });
        assert_eq!(<Point as Type>::typename(), "example/Point");
        assert!(matches!(Point::decode(b"nope"), Err(DecodeError::Json(_))));
    }
}
