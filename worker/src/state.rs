//! Per-address persisted state: the registered state specs of each function type, and the
//! values with their expiry. Pure data structures in the data plane's own types (the invoker
//! turns them into the StateFun protocol and back); time is passed in (epoch milliseconds) so
//! expiry is testable and checkpointable.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use spindle_spec::TypeName;

use crate::message::{Address, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiration {
    Never,
    AfterWrite(Duration),
    /// After the last invocation or write, whichever is later.
    AfterInvoke(Duration),
}

/// A state value a function declared (learned from `IncompleteInvocationContext`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSpec {
    pub name: Arc<str>,
    pub typename: String,
    pub expiration: Expiration,
}

/// One state value as an invocation sees it: `None` when unset or expired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateValue {
    pub name: Arc<str>,
    /// The declared type (sent with a missing value, as StateFun does).
    pub typename: String,
    pub value: Option<Value>,
}

/// A function's change to one of its state values: `None` deletes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutation {
    pub name: String,
    pub value: Option<Value>,
}

/// The state specs each function type has declared.
#[derive(Debug, Default, Clone)]
pub struct SpecRegistry {
    specs: HashMap<TypeName, Vec<StateSpec>>,
}

impl SpecRegistry {
    pub fn specs(&self, t: &TypeName) -> &[StateSpec] {
        self.specs.get(t).map_or(&[], Vec::as_slice)
    }

    /// Registers specs; a spec with a known name replaces the old one. Returns whether
    /// anything changed.
    pub fn register(&mut self, t: &TypeName, new: impl IntoIterator<Item = StateSpec>) -> bool {
        let specs = self.specs.entry(t.clone()).or_default();
        let mut changed = false;
        for spec in new {
            match specs.iter_mut().find(|s| s.name == spec.name) {
                Some(old) if *old == spec => {}
                Some(old) => {
                    *old = spec;
                    changed = true;
                }
                None => {
                    specs.push(spec);
                    changed = true;
                }
            }
        }
        changed
    }

    pub fn iter(&self) -> impl Iterator<Item = (&TypeName, &[StateSpec])> {
        self.specs.iter().map(|(t, s)| (t, s.as_slice()))
    }
}

#[derive(Debug, Clone)]
struct Cell {
    value: Value,
    expires_at_ms: Option<u64>,
}

/// All state values of the addresses this partition owns. `Clone` is how a checkpoint
/// captures it, in O(1): the outer map is persistent (copy-on-write), so processing after a
/// snapshot copies only the paths and per-address maps it changes, and values are `Bytes`.
#[derive(Debug, Default, Clone)]
pub struct StateStore {
    cells: imbl::HashMap<Address, HashMap<Arc<str>, Cell>>,
}

fn expiry(exp: Expiration, now_ms: u64) -> Option<u64> {
    match exp {
        Expiration::Never => None,
        Expiration::AfterWrite(d) | Expiration::AfterInvoke(d) => Some(now_ms.saturating_add(d.as_millis() as u64)),
    }
}

impl StateStore {
    /// The values to send with an invocation of `addr`: one per spec, `None` when unset or
    /// expired. Expired values are dropped; after-invoke expiry is refreshed.
    pub fn values_for_invocation(&mut self, addr: &Address, specs: &[StateSpec], now_ms: u64) -> Vec<StateValue> {
        let mut cells = self.cells.get_mut(addr);
        let values = specs
            .iter()
            .map(|spec| {
                let cell = cells.as_deref_mut().and_then(|cells| {
                    let live = cells
                        .get(&spec.name)
                        .is_some_and(|c| c.expires_at_ms.is_none_or(|t| t > now_ms));
                    if !live {
                        cells.remove(&spec.name);
                        return None;
                    }
                    let cell = cells.get_mut(&spec.name)?;
                    if let Expiration::AfterInvoke(_) = spec.expiration {
                        cell.expires_at_ms = expiry(spec.expiration, now_ms);
                    }
                    Some(cell)
                });
                StateValue {
                    name: spec.name.clone(),
                    typename: spec.typename.clone(),
                    value: cell.map(|c| c.value.clone()),
                }
            })
            .collect();
        if self.cells.get(addr).is_some_and(HashMap::is_empty) {
            self.cells.remove(addr);
        }
        values
    }

    /// Applies a batch's mutations. A mutation for a state the function never declared is
    /// kept without expiry (the SDKs do not send such mutations; being lenient loses nothing).
    pub fn apply(&mut self, addr: &Address, mutations: Vec<Mutation>, specs: &[StateSpec], now_ms: u64) {
        for m in mutations {
            let Some(value) = m.value else {
                if let Some(cells) = self.cells.get_mut(addr) {
                    cells.remove(m.name.as_str());
                    if cells.is_empty() {
                        self.cells.remove(addr);
                    }
                }
                continue;
            };
            let exp = specs
                .iter()
                .find(|s| *s.name == *m.name)
                .map_or(Expiration::Never, |s| s.expiration);
            self.cells.entry(addr.clone()).or_default().insert(
                m.name.as_str().into(),
                Cell {
                    value,
                    expires_at_ms: expiry(exp, now_ms),
                },
            );
        }
    }

    /// A state value as it stands (ignoring expiry), for inspection and tests.
    pub fn get(&self, addr: &Address, name: &str) -> Option<&Value> {
        self.cells.get(addr)?.get(name).map(|c| &c.value)
    }

    /// Number of addresses with state.
    pub fn addresses(&self) -> usize {
        self.cells.len()
    }

    /// Every value with its expiry (epoch ms), by address: what a checkpoint writes.
    pub fn iter(&self) -> impl Iterator<Item = (&Address, impl Iterator<Item = (&str, &Value, Option<u64>)>)> {
        self.cells
            .iter()
            .map(|(a, cells)| (a, cells.iter().map(|(n, c)| (&**n, &c.value, c.expires_at_ms))))
    }

    /// Puts back a value read from a checkpoint.
    pub fn restore(&mut self, addr: Address, name: &str, value: Value, expires_at_ms: Option<u64>) {
        self.cells
            .entry(addr)
            .or_default()
            .insert(name.into(), Cell { value, expires_at_ms });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn addr() -> Address {
        Address::new(TypeName::parse("t/f").unwrap(), "a")
    }

    fn spec(name: &str, expiration: Expiration) -> StateSpec {
        StateSpec {
            name: name.into(),
            typename: "io.statefun.types/long".into(),
            expiration,
        }
    }

    fn modify(name: &str, v: &'static [u8]) -> Mutation {
        Mutation {
            name: name.into(),
            value: Some(Value::new("io.statefun.types/long", Bytes::from_static(v))),
        }
    }

    fn present(values: &[StateValue]) -> Vec<(String, bool)> {
        values.iter().map(|v| (v.name.to_string(), v.value.is_some())).collect()
    }

    #[test]
    fn every_spec_is_sent_and_unset_ones_have_no_value() {
        let mut store = StateStore::default();
        let specs = [spec("a", Expiration::Never), spec("b", Expiration::Never)];
        store.apply(&addr(), vec![modify("a", b"1")], &specs, 0);
        let values = store.values_for_invocation(&addr(), &specs, 0);
        assert_eq!(present(&values), [("a".into(), true), ("b".into(), false)]);
        assert_eq!(values[1].typename, "io.statefun.types/long");
        let delete = Mutation {
            name: "a".into(),
            value: None,
        };
        store.apply(&addr(), vec![delete], &specs, 0);
        assert_eq!(store.addresses(), 0);
    }

    #[test]
    fn after_write_expires_regardless_of_reads() {
        let mut store = StateStore::default();
        let specs = [spec("a", Expiration::AfterWrite(Duration::from_millis(100)))];
        store.apply(&addr(), vec![modify("a", b"1")], &specs, 1_000);
        assert!(present(&store.values_for_invocation(&addr(), &specs, 1_050))[0].1);
        assert!(!present(&store.values_for_invocation(&addr(), &specs, 1_100))[0].1);
        assert_eq!(store.addresses(), 0, "expired values are dropped");
    }

    #[test]
    fn after_invoke_is_refreshed_by_invocations() {
        let mut store = StateStore::default();
        let specs = [spec("a", Expiration::AfterInvoke(Duration::from_millis(100)))];
        store.apply(&addr(), vec![modify("a", b"1")], &specs, 1_000);
        for now in [1_050, 1_120, 1_200] {
            assert!(present(&store.values_for_invocation(&addr(), &specs, now))[0].1);
        }
        assert!(!present(&store.values_for_invocation(&addr(), &specs, 1_300))[0].1);
    }

    #[test]
    fn registry_reports_changes() {
        let mut reg = SpecRegistry::default();
        let t = TypeName::parse("t/f").unwrap();
        assert!(reg.register(&t, [spec("a", Expiration::Never)]));
        assert!(!reg.register(&t, [spec("a", Expiration::Never)]));
        assert!(reg.register(&t, [spec("a", Expiration::AfterWrite(Duration::from_secs(1)))]));
        assert_eq!(reg.specs(&t).len(), 1);
    }
}
