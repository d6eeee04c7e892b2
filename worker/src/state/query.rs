//! Which addresses' state to show (`/state`, `spindle state list|export`), selected from a
//! [`StateStore`] — a worker's own, or one restored from a checkpoint — and how one address's
//! state looks as JSON: each value with its typename, decoded for JSON and StateFun primitive
//! types, otherwise base64 (as the file egress shows values).

use serde_json::{Map, Value as Json, json};
use spindle_spec::TypeName;

use super::StateStore;
use crate::json::insert_value;
use crate::message::{Address, Value};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateQuery {
    /// Only addresses of this function type.
    pub typename: Option<TypeName>,
    /// Only ids starting with this.
    pub prefix: Option<String>,
    /// At most this many addresses (the first by type and id).
    pub limit: Option<usize>,
}

/// One address and its values (name, value, expiry in epoch ms), by name.
#[derive(Debug, Clone, PartialEq)]
pub struct AddressState {
    pub address: Address,
    pub values: Vec<(String, Value, Option<u64>)>,
}

/// The addresses `q` selects, ordered by type and id, without values expired at `now_ms`.
pub fn select(store: &StateStore, q: &StateQuery, now_ms: u64) -> Vec<AddressState> {
    let mut out: Vec<AddressState> = store
        .iter()
        .filter(|(a, _)| q.typename.as_ref().is_none_or(|t| a.typename == *t))
        .filter(|(a, _)| q.prefix.as_deref().is_none_or(|p| a.id.starts_with(p)))
        .filter_map(|(address, cells)| {
            let mut values: Vec<(String, Value, Option<u64>)> = cells
                .iter()
                .filter(|c| c.expires_at_ms.is_none_or(|t| t > now_ms))
                .map(|c| {
                    let v = Value {
                        typename: c.typename.into(),
                        bytes: bytes::Bytes::copy_from_slice(c.bytes),
                    };
                    (c.name.to_string(), v, c.expires_at_ms)
                })
                .collect();
            values.sort_by(|a, b| a.0.cmp(&b.0));
            (!values.is_empty()).then_some(AddressState { address, values })
        })
        .collect();
    out.sort_by(|a, b| {
        (a.address.typename.as_str(), &*a.address.id).cmp(&(b.address.typename.as_str(), &*b.address.id))
    });
    if let Some(limit) = q.limit {
        out.truncate(limit);
    }
    out
}

/// `{"name": {"typename": …, "value" | "valueBase64": …, "expiresAtMs"?: …}, …}`
pub fn values_json<'a>(values: impl IntoIterator<Item = (&'a str, &'a Value, Option<u64>)>) -> Json {
    let mut out = Map::new();
    for (name, value, expires) in values {
        let mut v = Map::new();
        v.insert("typename".into(), (*value.typename).into());
        insert_value(&mut v, value);
        if let Some(t) = expires {
            v.insert("expiresAtMs".into(), t.into());
        }
        out.insert(name.to_string(), v.into());
    }
    out.into()
}

/// One line of `spindle state export`: `{"typename", "id", "state": {…}}`.
pub fn address_json(a: &AddressState) -> Json {
    json!({
        "typename": a.address.typename.as_str(),
        "id": &*a.address.id,
        "state": values_json(a.values.iter().map(|(n, v, e)| (n.as_str(), v, *e))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selects_by_type_and_prefix_in_order_without_expired_values() {
        let mut s = StateStore::new(8);
        let t = TypeName::parse("example/greeter").unwrap();
        let other = TypeName::parse("example/other").unwrap();
        let int = |n: i32| Value {
            typename: "io.statefun.types/int".into(),
            bytes: spindle_protocol::Primitive::Int(n).encode(),
        };
        for id in ["bob", "alice", "al"] {
            s.restore(Address::new(t.clone(), id), "seen", int(id.len() as i32), None);
        }
        s.restore(Address::new(t.clone(), "alex"), "seen", int(1), Some(5));
        s.restore(Address::new(other, "alice"), "seen", int(9), None);
        let q = StateQuery {
            typename: Some(t),
            prefix: Some("al".into()),
            limit: None,
        };
        let ids: Vec<String> = select(&s, &q, 10).iter().map(|a| a.address.id.to_string()).collect();
        assert_eq!(ids, ["al", "alice"], "alex's only value expired at 5");
        let all = select(
            &s,
            &StateQuery {
                limit: Some(4),
                ..StateQuery::default()
            },
            1,
        );
        let ids: Vec<String> = all
            .iter()
            .map(|a| format!("{}/{}", a.address.typename, a.address.id))
            .collect();
        assert_eq!(
            ids,
            [
                "example/greeter/al",
                "example/greeter/alex",
                "example/greeter/alice",
                "example/greeter/bob"
            ]
        );
        let line = address_json(&all[2]);
        assert_eq!(
            line,
            json!({"typename": "example/greeter", "id": "alice", "state": {"seen": {"typename": "io.statefun.types/int", "value": 5}}})
        );
    }
}
