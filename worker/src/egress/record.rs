//! How an egress record is written as a JSON line.

use serde_json::{Map, Value as Json};

use super::EgressRecord;
use crate::deadletter::DeadMessage;
use crate::json::insert_value;
use crate::message::{Address, Envelope};

impl EgressRecord {
    /// The record as a dead-letter entry (target = the egress).
    pub fn dead_message(&self) -> DeadMessage {
        DeadMessage::from_envelope(&Envelope {
            target: Address::new(self.egress.clone(), ""),
            caller: Some(self.source.clone()),
            value: self.value.clone(),
            dedup: None,
            trace: None,
        })
    }
}

/// `{"egress", "key"?, "source", "typename", "value" | "valueBase64"}` as one line, no
/// newline; `key` is the idempotency key of records released by a checkpoint.
pub fn json_line(r: &EgressRecord) -> String {
    let mut obj = Map::new();
    obj.insert("egress".into(), r.egress.as_str().into());
    if let Some(key) = &r.key {
        obj.insert("key".into(), (**key).into());
    }
    obj.insert("source".into(), r.source.to_string().into());
    obj.insert("typename".into(), (*r.value.typename).into());
    insert_value(&mut obj, &r.value);
    Json::Object(obj).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Value;
    use bytes::Bytes;
    use spindle_protocol::Primitive;
    use spindle_spec::TypeName;

    fn rec(typename: &str, bytes: Bytes) -> EgressRecord {
        EgressRecord {
            egress: TypeName::parse("e/out").unwrap(),
            value: Value::new(typename, bytes),
            source: Address::new(TypeName::parse("f/g").unwrap(), "x"),
            key: None,
        }
    }

    #[test]
    fn decodes_json_primitives_and_falls_back_to_base64() {
        let line = json_line(&rec("e/Greeting", Bytes::from_static(br#"{"a":1}"#)));
        assert_eq!(
            line,
            r#"{"egress":"e/out","source":"f/g/x","typename":"e/Greeting","value":{"a":1}}"#
        );
        let s = Primitive::String("hi".into());
        let line = json_line(&rec(s.typename(), s.encode()));
        assert!(line.ends_with(r#""value":"hi"}"#), "{line}");
        let line = json_line(&rec("e/Bin", Bytes::from_static(&[0xff, 0x00])));
        assert!(line.ends_with(r#""valueBase64":"/wA="}"#), "{line}");
    }
}
