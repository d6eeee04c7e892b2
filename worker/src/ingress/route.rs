//! From a log record (Kafka record, JetStream message) to messages for functions: the value
//! typename and targets configured for its topic or subject, the record's id as the function
//! id, a `spindle-target` header to override the targets. A record that cannot become a
//! message is refused with the reason, and goes to the dead letters. Pure: no I/O.

use bytes::Bytes;
use spindle_protocol::Primitive;
use spindle_spec::{TypeName, ValueFormat};

use crate::app::AppConfig;
use crate::deadletter::{DeadMessage, kind};
use crate::message::{Address, Envelope, Value, check_id};

/// Header naming the function type a record goes to, instead of the configured targets.
pub const TARGET_HEADER: &str = "spindle-target";

/// Where the records of one topic or subject filter go.
#[derive(Debug, Clone)]
pub struct Route {
    pub value_type: TypeName,
    pub targets: Vec<TypeName>,
    pub format: ValueFormat,
}

/// Why a record did not become messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub kind: &'static str,
    pub reason: String,
}

impl Route {
    /// Parses the spec's strings (validated already).
    pub fn new(value_type: &str, targets: &[String], format: ValueFormat) -> Route {
        let parse = |s: &str| TypeName::parse(s).expect("validated spec has valid typenames");
        Route {
            value_type: parse(value_type),
            targets: targets.iter().map(|t| parse(t)).collect(),
            format,
        }
    }

    /// The messages for a record with id `id`, value `value` and the value of its
    /// `spindle-target` header, if any.
    pub fn envelopes(
        &self,
        app: &AppConfig,
        id: Option<&[u8]>,
        value: Option<Bytes>,
        target: Option<&[u8]>,
    ) -> Result<Vec<Envelope>, Refusal> {
        let bad = |reason: String| Refusal {
            kind: kind::BAD_RECORD,
            reason,
        };
        let id = match id {
            None => return Err(bad("the record has no key: the key is the function id".into())),
            Some(id) => std::str::from_utf8(id).map_err(|_| bad("the record key is not UTF-8".into()))?,
        };
        if id.is_empty() {
            return Err(bad("the record key is empty: the key is the function id".into()));
        }
        check_id(id).map_err(|e| bad(format!("the record key is not a function id: {e}")))?;
        let value = value.ok_or_else(|| bad("the record has no value".into()))?;
        check_value(&self.value_type, self.format, &value).map_err(bad)?;
        let targets = match target {
            None => self.targets.clone(),
            Some(raw) => {
                let t = std::str::from_utf8(raw)
                    .ok()
                    .and_then(|s| TypeName::parse(s).ok())
                    .ok_or_else(|| {
                        bad(format!(
                            "header {TARGET_HEADER} `{}` is not a typename",
                            String::from_utf8_lossy(raw)
                        ))
                    })?;
                if app.function_for(&t).is_none() {
                    return Err(Refusal {
                        kind: kind::UNKNOWN_FUNCTION,
                        reason: format!("header {TARGET_HEADER} names `{t}`, which no function serves"),
                    });
                }
                vec![t]
            }
        };
        let value = Value::new(self.value_type.as_str(), value);
        Ok(targets
            .into_iter()
            .map(|t| Envelope {
                target: Address::new(t, id),
                caller: None,
                value: value.clone(),
                dedup: None,
                trace: None,
            })
            .collect())
    }
}

fn check_value(value_type: &TypeName, format: ValueFormat, value: &[u8]) -> Result<(), String> {
    if value_type.namespace() == "io.statefun.types" && Primitive::decode(value_type.as_str(), value).is_none() {
        return Err(format!("the value does not decode as `{value_type}`"));
    }
    match format {
        ValueFormat::Raw => Ok(()),
        ValueFormat::Json => serde_json::from_slice::<serde::de::IgnoredAny>(value)
            .map(|_| ())
            .map_err(|e| format!("the value is not JSON: {e}")),
        ValueFormat::Utf8 => std::str::from_utf8(value)
            .map(|_| ())
            .map_err(|_| "the value is not UTF-8".into()),
    }
}

/// A refused record as a dead-letter entry: its id (or `?`) and its bytes.
pub fn dead_message(route: &Route, id: Option<&[u8]>, value: Option<&[u8]>) -> DeadMessage {
    let id = id.map(String::from_utf8_lossy).unwrap_or("?".into());
    DeadMessage::from_envelope(&Envelope {
        target: Address::new(route.targets[0].clone(), id.as_ref()),
        caller: None,
        value: Value::new(
            route.value_type.as_str(),
            Bytes::copy_from_slice(value.unwrap_or_default()),
        ),
        dedup: None,
        trace: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> AppConfig {
        let yaml = "apiVersion: spindle.dev/v1alpha1\nkind: StatefulApplication\nmetadata: {name: t}\nspec:\n  functions:\n    - {typename: t/*, endpoint: 'http://f/'}\n";
        AppConfig::resolve(
            &spindle_spec::from_yaml_str(yaml, "t").unwrap(),
            std::path::Path::new("."),
        )
    }

    #[test]
    fn records_become_messages_or_are_refused_with_a_reason() {
        let app = app();
        let route = Route::new("t/Add", &["t/counter".into(), "t/audit".into()], ValueFormat::Json);
        let ok = route
            .envelopes(&app, Some(b"k1"), Some(Bytes::from_static(b"{\"n\":1}")), None)
            .unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[1].target.to_string(), "t/audit/k1");
        assert_eq!(&*ok[0].value.typename, "t/Add");
        let over = route
            .envelopes(&app, Some(b"k1"), Some(Bytes::from_static(b"{}")), Some(b"t/other"))
            .unwrap();
        assert_eq!(over.len(), 1);
        assert_eq!(over[0].target.to_string(), "t/other/k1");
        let refused = |id: Option<&[u8]>, v: &'static [u8], target: Option<&[u8]>| {
            route
                .envelopes(&app, id, Some(Bytes::from_static(v)), target)
                .unwrap_err()
        };
        assert!(refused(None, b"{}", None).reason.contains("no key"));
        assert!(refused(Some(b"k"), b"{oops", None).reason.contains("not JSON"));
        let unknown = refused(Some(b"k"), b"{}", Some(b"x/y"));
        assert_eq!(unknown.kind, kind::UNKNOWN_FUNCTION);
        assert!(
            route
                .envelopes(&app, Some(b"k"), None, None)
                .unwrap_err()
                .reason
                .contains("no value")
        );
        let long = Route::new("io.statefun.types/long", &["t/c".into()], ValueFormat::Raw);
        assert!(
            long.envelopes(&app, Some(b"k"), Some(Bytes::from_static(b"\xff")), None)
                .is_err()
        );
    }

    #[test]
    fn any_record_becomes_valid_messages_or_a_refusal_never_a_panic() {
        let app = app();
        let routes = [
            Route::new("t/Add", &["t/counter".into()], ValueFormat::Json),
            Route::new("io.statefun.types/long", &["t/counter".into()], ValueFormat::Raw),
            Route::new("t/Text", &["t/a".into(), "t/b".into()], ValueFormat::Utf8),
        ];
        let mut rng = crate::fuzz::Rng::new(0x5eed_0005);
        for case in 0..crate::fuzz::CASES {
            let route = &routes[case % routes.len()];
            let field = |rng: &mut crate::fuzz::Rng| match rng.below(4) {
                0 => None,
                1 => Some(rng.bytes(40)),
                2 => Some(rng.mutate(b"{\"n\":1}")),
                _ => Some(rng.text().into_bytes()),
            };
            let (id, value, target) = (field(&mut rng), field(&mut rng), field(&mut rng));
            match route.envelopes(&app, id.as_deref(), value.clone().map(Bytes::from), target.as_deref()) {
                Ok(envs) => {
                    for e in envs {
                        assert!(
                            crate::message::check_id(&e.target.id).is_ok(),
                            "case {case}: id {:?}",
                            e.target.id
                        );
                    }
                }
                Err(refusal) => {
                    assert!(!refusal.reason.is_empty(), "case {case}");
                    // A refused record is kept as a dead letter: that must not panic either.
                    let _ = dead_message(route, id.as_deref(), value.as_deref());
                }
            }
        }
    }
}
