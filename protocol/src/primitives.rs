//! StateFun's primitive types: typenames and the protobuf wrappers that carry them.

use bytes::Bytes;
use prost::Message;

use crate::types::{BooleanWrapper, DoubleWrapper, FloatWrapper, IntWrapper, LongWrapper, StringWrapper};

/// Typenames of StateFun's built-in types.
pub mod typenames {
    pub const INT: &str = "io.statefun.types/int";
    pub const LONG: &str = "io.statefun.types/long";
    pub const STRING: &str = "io.statefun.types/string";
    pub const BOOL: &str = "io.statefun.types/bool";
    pub const FLOAT: &str = "io.statefun.types/float";
    pub const DOUBLE: &str = "io.statefun.types/double";
    pub const KAFKA_PRODUCER_RECORD: &str = "type.googleapis.com/io.statefun.sdk.egress.KafkaProducerRecord";
}

/// A decoded value of one of StateFun's primitive types.
#[derive(Debug, Clone, PartialEq)]
pub enum Primitive {
    Int(i32),
    Long(i64),
    String(String),
    Bool(bool),
    Float(f32),
    Double(f64),
}

impl Primitive {
    /// Decodes `bytes` if `typename` names a primitive type; `None` for any other typename or
    /// for bytes that are not a valid wrapper.
    pub fn decode(typename: &str, bytes: &[u8]) -> Option<Primitive> {
        use typenames::*;
        Some(match typename {
            INT => Primitive::Int(IntWrapper::decode(bytes).ok()?.value),
            LONG => Primitive::Long(LongWrapper::decode(bytes).ok()?.value),
            STRING => Primitive::String(StringWrapper::decode(bytes).ok()?.value),
            BOOL => Primitive::Bool(BooleanWrapper::decode(bytes).ok()?.value),
            FLOAT => Primitive::Float(FloatWrapper::decode(bytes).ok()?.value),
            DOUBLE => Primitive::Double(DoubleWrapper::decode(bytes).ok()?.value),
            _ => return None,
        })
    }

    pub fn typename(&self) -> &'static str {
        use typenames::*;
        match self {
            Primitive::Int(_) => INT,
            Primitive::Long(_) => LONG,
            Primitive::String(_) => STRING,
            Primitive::Bool(_) => BOOL,
            Primitive::Float(_) => FLOAT,
            Primitive::Double(_) => DOUBLE,
        }
    }

    pub fn encode(&self) -> Bytes {
        let v = match self {
            Primitive::Int(v) => IntWrapper { value: *v }.encode_to_vec(),
            Primitive::Long(v) => LongWrapper { value: *v }.encode_to_vec(),
            Primitive::String(v) => StringWrapper { value: v.clone() }.encode_to_vec(),
            Primitive::Bool(v) => BooleanWrapper { value: *v }.encode_to_vec(),
            Primitive::Float(v) => FloatWrapper { value: *v }.encode_to_vec(),
            Primitive::Double(v) => DoubleWrapper { value: *v }.encode_to_vec(),
        };
        Bytes::from(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrappers_use_fixed_width_integers() {
        // IntWrapper is sfixed32 and LongWrapper sfixed64 in StateFun's schema: tag then 4/8 bytes.
        assert_eq!(Primitive::Int(1).encode().as_ref(), &[0x0d, 1, 0, 0, 0]);
        assert_eq!(
            Primitive::Long(-1).encode().as_ref(),
            &[0x09, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]
        );
    }

    #[test]
    fn roundtrip_every_primitive() {
        for p in [
            Primitive::Int(-7),
            Primitive::Long(1 << 40),
            Primitive::String("héllo".into()),
            Primitive::Bool(true),
            Primitive::Float(1.5),
            Primitive::Double(-2.25),
        ] {
            assert_eq!(Primitive::decode(p.typename(), &p.encode()), Some(p));
        }
        assert_eq!(Primitive::decode("example/Other", b""), None);
    }
}
