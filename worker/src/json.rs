//! How values are shown as JSON (egress files, `/state`): JSON and StateFun primitive types
//! decoded into `value`, anything else as base64 in `valueBase64`.

use base64::Engine;
use serde_json::{Map, Value as Json, json};
use spindle_protocol::Primitive;

use crate::message::Value;

pub fn insert_value(obj: &mut Map<String, Json>, v: &Value) {
    match decode(&v.typename, &v.bytes) {
        Some(decoded) => obj.insert("value".into(), decoded),
        None => obj.insert(
            "valueBase64".into(),
            Json::String(base64::engine::general_purpose::STANDARD.encode(&v.bytes)),
        ),
    };
}

fn decode(typename: &str, bytes: &[u8]) -> Option<Json> {
    if let Some(p) = Primitive::decode(typename, bytes) {
        return Some(match p {
            Primitive::Int(v) => json!(v),
            Primitive::Long(v) => json!(v),
            Primitive::String(v) => json!(v),
            Primitive::Bool(v) => json!(v),
            Primitive::Float(v) => json!(v),
            Primitive::Double(v) => json!(v),
        });
    }
    // User types are JSON by the SDKs' convention (`make_json_type`, `JsonType`).
    serde_json::from_slice(bytes).ok()
}
