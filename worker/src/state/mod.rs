//! Per-address persisted state: the registered state specs of each function type, and the
//! values with their expiry. Pure data structures in the data plane's own types (the invoker
//! turns them into the StateFun protocol and back); time is passed in (epoch milliseconds) so
//! expiry is testable and checkpointable.
//!
//! Laid out for millions of mostly idle addresses: values are kept by key group, then by
//! function type, then by id, and an address's id and cells are one shared allocation (see
//! `cells`).
//! With change tracking on (checkpoints), each key group remembers which of its addresses
//! changed since the last [`capture`](StateStore::capture): a checkpoint writes those (and,
//! to keep restores short, a few whole key groups), not the whole state. Expired values are
//! dropped when their address is invoked, and by [`sweep`](StateStore::sweep) for addresses
//! that never are.

mod cells;
pub mod query;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use spindle_spec::TypeName;

pub use cells::{CellRef, Cells};
use cells::{Entry, Kinds, NewCell};

use crate::keygroup::key_group;
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

/// One key group's addresses.
#[derive(Debug, Default)]
struct Group {
    /// By function type, the entries (id and cells) of its addresses.
    types: HashMap<TypeName, HashSet<Entry>>,
    addresses: usize,
    /// Changed since the last capture (change tracking on): by function type, each changed
    /// address's entry as it is now, an empty one when deleted. The entries are the store's
    /// own (shared), and the sets are taken, capacity and all, by the capture: a burst of
    /// changes leaves no table behind.
    changed: HashMap<TypeName, HashSet<Entry>>,
    /// Some cell may expire: the sweep skips groups without.
    expiring: bool,
}

impl Group {
    fn entry(&self, addr: &Address) -> Option<&Entry> {
        self.types.get(&addr.typename)?.get(addr.id.as_bytes())
    }
}

/// What a capture hands the checkpoint: the key groups changed since the previous capture.
#[derive(Debug, Default)]
pub struct StateChanges {
    pub groups: Vec<GroupChanges>,
    /// Addresses per key group that has any (what compaction weighs).
    pub sizes: Vec<(u32, usize)>,
}

#[derive(Debug)]
pub struct GroupChanges {
    pub key_group: u32,
    /// Every address of the group (a base for it), not only the changed ones.
    pub whole: bool,
    /// Per address its cells; `None`: deleted.
    pub entries: Vec<(Address, Option<Cells>)>,
}

/// All state values of the addresses this partition owns, by key group.
#[derive(Debug)]
pub struct StateStore {
    key_groups: u32,
    groups: Vec<Group>,
    addresses: usize,
    /// Remember changed addresses (checkpoints on).
    tracking: bool,
    /// Groups with changed addresses, in the order of their first change since the capture.
    changed_groups: Vec<u32>,
    kinds: Kinds,
}

fn expiry(exp: Expiration, now_ms: u64) -> u64 {
    match exp {
        Expiration::Never => 0,
        Expiration::AfterWrite(d) | Expiration::AfterInvoke(d) => now_ms.saturating_add(d.as_millis() as u64).max(1),
    }
}

impl StateStore {
    /// An empty store of an application with `key_groups` key groups.
    pub fn new(key_groups: u32) -> StateStore {
        let key_groups = key_groups.max(1);
        StateStore {
            key_groups,
            // Allocated at the first value (a snapshot's empty store costs nothing).
            groups: Vec::new(),
            addresses: 0,
            tracking: false,
            changed_groups: Vec::new(),
            kinds: Kinds::default(),
        }
    }

    /// From now on, remember what changes, for [`capture`](Self::capture).
    pub fn track_changes(&mut self) {
        self.tracking = true;
    }

    pub fn key_groups(&self) -> u32 {
        self.key_groups
    }

    fn group_of(&self, addr: &Address) -> u32 {
        key_group(addr, self.key_groups)
    }

    fn group(&self, kg: u32) -> Option<&Group> {
        self.groups.get(kg as usize)
    }

    fn group_mut(&mut self, kg: u32) -> &mut Group {
        if self.groups.is_empty() {
            self.groups = (0..self.key_groups).map(|_| Group::default()).collect();
        }
        &mut self.groups[kg as usize]
    }

    fn entry(&self, kg: u32, addr: &Address) -> Option<&Entry> {
        self.group(kg)?.entry(addr)
    }

    /// Replaces the cells of `addr` in key group `kg` (none: removes the address).
    fn set(&mut self, kg: u32, addr: &Address, cells: &[NewCell<'_>]) {
        if cells.is_empty() && self.groups.is_empty() {
            return;
        }
        let entry = Entry::new(&addr.id, cells);
        let tracking = self.tracking;
        let g = self.group_mut(kg);
        let before = g.addresses;
        if entry.is_empty() {
            let Some(ids) = g.types.get_mut(&addr.typename) else {
                return;
            };
            if !ids.remove(addr.id.as_bytes()) {
                return;
            }
            if ids.is_empty() {
                g.types.remove(&addr.typename);
            }
            g.addresses -= 1;
        } else {
            g.expiring |= entry.expiring();
            let ids = match g.types.get_mut(&addr.typename) {
                Some(ids) => ids,
                None => g.types.entry(addr.typename.clone()).or_default(),
            };
            if ids.replace(entry.clone()).is_none() {
                g.addresses += 1;
            }
        }
        let after = g.addresses;
        let first_change = tracking && g.changed.is_empty();
        if tracking {
            let changed = match g.changed.get_mut(&addr.typename) {
                Some(c) => c,
                None => g.changed.entry(addr.typename.clone()).or_default(),
            };
            changed.replace(entry);
        }
        if first_change {
            self.changed_groups.push(kg);
        }
        self.addresses = self.addresses + after - before;
    }

    /// The values to send with an invocation of `addr`: one per spec, `None` when unset or
    /// expired. Expired values are dropped; after-invoke expiry is refreshed.
    pub fn values_for_invocation(&mut self, addr: &Address, specs: &[StateSpec], now_ms: u64) -> Vec<StateValue> {
        let kg = self.group_of(addr);
        let entry = self.entry(kg, addr).cloned();
        let kinds = &self.kinds;
        let values = specs
            .iter()
            .map(|spec| StateValue {
                name: spec.name.clone(),
                typename: spec.typename.clone(),
                value: entry
                    .as_ref()
                    .and_then(|e| kinds.named(e, &spec.name))
                    .filter(|c| !c.expired(now_ms))
                    .map(|c| Value {
                        typename: kinds.kind(c.kind).typename.clone(),
                        bytes: Bytes::copy_from_slice(c.bytes),
                    }),
            })
            .collect();
        let Some(entry) = entry else {
            return values;
        };
        let refreshed = |kind: u32| {
            let name = &kinds.kind(kind).name;
            match specs.iter().find(|s| s.name == *name).map(|s| s.expiration) {
                Some(e @ Expiration::AfterInvoke(_)) => Some(expiry(e, now_ms)),
                _ => None,
            }
        };
        let rewrite = entry
            .cells()
            .any(|c| c.expired(now_ms) || refreshed(c.kind).is_some_and(|t| t != c.expires_at_ms));
        if rewrite {
            let live: Vec<NewCell<'_>> = entry
                .cells()
                .filter(|c| !c.expired(now_ms))
                .map(|c| NewCell {
                    expires_at_ms: refreshed(c.kind).unwrap_or(c.expires_at_ms),
                    ..c.as_new()
                })
                .collect();
            self.set(kg, addr, &live);
        }
        values
    }

    /// Applies a batch's mutations. A mutation for a state the function never declared is
    /// kept without expiry (the SDKs do not send such mutations; being lenient loses nothing).
    /// Values are copied out of the reply, so a small value never holds a large buffer.
    pub fn apply(&mut self, addr: &Address, mutations: Vec<Mutation>, specs: &[StateSpec], now_ms: u64) {
        if mutations.is_empty() {
            return;
        }
        let kg = self.group_of(addr);
        let mut kinds = Vec::with_capacity(mutations.len());
        for m in &mutations {
            kinds.push(m.value.as_ref().map(|v| self.kinds.get(&m.name, &v.typename)));
        }
        let old = self.entry(kg, addr).cloned();
        let mut cells: Vec<NewCell<'_>> = match &old {
            Some(old) => old
                .cells()
                .filter(|c| !mutations.iter().any(|m| *m.name == *self.kinds.kind(c.kind).name))
                .map(|c| c.as_new())
                .collect(),
            None => Vec::new(),
        };
        for (i, m) in mutations.iter().enumerate() {
            cells.retain(|c| *self.kinds.kind(c.kind).name != *m.name);
            let (Some(value), Some(kind)) = (&m.value, kinds[i]) else {
                continue;
            };
            let exp = specs
                .iter()
                .find(|s| *s.name == *m.name)
                .map_or(Expiration::Never, |s| s.expiration);
            cells.push(NewCell {
                kind,
                bytes: &value.bytes,
                expires_at_ms: expiry(exp, now_ms),
            });
        }
        self.set(kg, addr, &cells);
    }

    /// A state value as it stands (ignoring expiry), for inspection and tests.
    pub fn get(&self, addr: &Address, name: &str) -> Option<Value> {
        let kg = self.group_of(addr);
        let c = self.kinds.named(self.entry(kg, addr)?, name)?;
        Some(Value {
            typename: self.kinds.kind(c.kind).typename.clone(),
            bytes: Bytes::copy_from_slice(c.bytes),
        })
    }

    /// Number of addresses with state.
    pub fn addresses(&self) -> usize {
        self.addresses
    }

    /// Addresses with state in key group `kg`.
    #[cfg(test)]
    pub fn group_addresses(&self, kg: u32) -> usize {
        self.groups.get(kg as usize).map_or(0, |g| g.addresses)
    }

    /// Key groups that hold any state.
    pub fn groups_with_state(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.key_groups).filter(|&kg| self.group(kg).is_some_and(|g| g.addresses > 0))
    }

    /// Every address with its cells (allocates each address: for tests and tools).
    pub fn iter(&self) -> impl Iterator<Item = (Address, Cells)> + '_ {
        self.groups.iter().flat_map(move |g| {
            g.types.iter().flat_map(move |(t, ids)| {
                ids.iter().map(move |e| {
                    (
                        Address::new(t.clone(), e.id()),
                        Cells {
                            entry: e.clone(),
                            kinds: self.kinds.clone(),
                        },
                    )
                })
            })
        })
    }

    /// Puts back one value read from a checkpoint (the cells of version-1 parts come one by
    /// one).
    pub fn restore(&mut self, addr: Address, name: &str, value: Value, expires_at_ms: Option<u64>) {
        let kg = self.group_of(&addr);
        let kind = self.kinds.get(name, &value.typename);
        let old = self.entry(kg, &addr).cloned();
        let mut cells: Vec<NewCell<'_>> = old
            .iter()
            .flat_map(|e| e.cells())
            .filter(|c| *self.kinds.kind(c.kind).name != *name)
            .map(|c| c.as_new())
            .collect();
        cells.push(NewCell {
            kind,
            bytes: &value.bytes,
            expires_at_ms: expires_at_ms.unwrap_or(0),
        });
        self.set(kg, &addr, &cells);
    }

    /// Sets all cells of `typename`/`id` as a checkpoint section holds them (name, typename,
    /// bytes, expiry with 0 for never); no cells: the address has none. `kg` must be the
    /// address's key group: the caller checked it.
    pub fn load(&mut self, kg: u32, addr: &Address, cells: &[(&str, &str, &[u8], u64)]) {
        debug_assert_eq!(
            kg,
            self.group_of(addr),
            "a section names the key group of its addresses"
        );
        let cells: Vec<NewCell<'_>> = cells
            .iter()
            .map(|&(name, typename, bytes, expires_at_ms)| NewCell {
                kind: self.kinds.get(name, typename),
                bytes,
                expires_at_ms,
            })
            .collect();
        self.set(kg, addr, &cells);
    }

    /// Empties key group `kg` (a base section follows).
    pub fn clear_group(&mut self, kg: u32) {
        if let Some(g) = self.groups.get_mut(kg as usize) {
            self.addresses -= std::mem::take(g).addresses;
        }
    }

    /// What changed since the last capture: per key group the changed addresses with their
    /// cells now (`None`: deleted), and every address of the groups in `whole`, which the
    /// checkpoint writes as new bases. O(changed + whole groups); the cells are shared, not
    /// copied.
    pub fn capture(&mut self, whole: &[u32]) -> StateChanges {
        let mut whole: Vec<u32> = whole.iter().copied().filter(|&kg| kg < self.key_groups).collect();
        whole.sort_unstable();
        whole.dedup();
        let kinds = self.kinds.clone();
        let cells = |e: Entry| {
            Some(Cells {
                entry: e,
                kinds: kinds.clone(),
            })
        };
        let mut out = StateChanges::default();
        for &kg in &whole {
            let g = self.group_mut(kg);
            g.changed = HashMap::new();
            let entries = g
                .types
                .iter()
                .flat_map(|(t, ids)| ids.iter().map(move |e| (Address::new(t.clone(), e.id()), e.clone())))
                .map(|(a, e)| (a, cells(e)))
                .collect();
            out.groups.push(GroupChanges {
                key_group: kg,
                whole: true,
                entries,
            });
        }
        for kg in std::mem::take(&mut self.changed_groups) {
            if whole.binary_search(&kg).is_ok() {
                continue;
            }
            let changed = std::mem::take(&mut self.groups[kg as usize].changed);
            let entries = changed
                .into_iter()
                .flat_map(|(t, ids)| ids.into_iter().map(move |e| (Address::new(t.clone(), e.id()), e)))
                .map(|(a, e)| (a, if e.is_empty() { None } else { cells(e) }))
                .collect();
            out.groups.push(GroupChanges {
                key_group: kg,
                whole: false,
                entries,
            });
        }
        out.sizes = self
            .groups
            .iter()
            .enumerate()
            .filter(|(_, g)| g.addresses > 0)
            .map(|(kg, g)| (kg as u32, g.addresses))
            .collect();
        out
    }

    /// Key groups where something may expire.
    pub fn expiring_groups(&self) -> Vec<u32> {
        (0..self.key_groups)
            .filter(|&kg| self.group(kg).is_some_and(|g| g.expiring))
            .collect()
    }

    /// The first key group at or after `from` (wrapping around) where something may expire.
    pub fn next_expiring(&self, from: u32) -> Option<u32> {
        let k = self.groups.len() as u32;
        (0..k)
            .map(|i| (from + i) % k)
            .find(|&kg| self.groups[kg as usize].expiring)
    }

    /// Drops the expired values of key group `kg` (a change, for the next checkpoint: without
    /// it, state of addresses never invoked again would grow for ever). Returns how many
    /// values went.
    pub fn sweep(&mut self, kg: u32, now_ms: u64) -> usize {
        let Some(g) = self.groups.get(kg as usize).filter(|g| g.expiring) else {
            return 0;
        };
        // Entries are immutable: find the ones with expired cells, then set them anew.
        let mut stale: Vec<(Address, Entry)> = Vec::new();
        let mut still_expiring = false;
        for (t, ids) in &g.types {
            for e in ids {
                if e.cells().any(|c| c.expired(now_ms)) {
                    stale.push((Address::new(t.clone(), e.id()), e.clone()));
                } else {
                    still_expiring |= e.expiring();
                }
            }
        }
        let mut removed = 0;
        for (addr, e) in &stale {
            let live: Vec<NewCell<'_>> = e.cells().filter(|c| !c.expired(now_ms)).map(|c| c.as_new()).collect();
            removed += e.cells().count() - live.len();
            still_expiring |= live.iter().any(|c| c.expires_at_ms != 0);
            self.set(kg, addr, &live);
        }
        self.groups[kg as usize].expiring = still_expiring;
        removed
    }
}
