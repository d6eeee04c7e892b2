//! Per-address persisted state: the registered state specs of each function type, and the
//! values with their expiry. Pure data structures in the data plane's own types (the invoker
//! turns them into the StateFun protocol and back); time is passed in (epoch milliseconds) so
//! expiry is testable and checkpointable.
//!
//! Laid out for millions of mostly idle addresses: values are kept by key group, then by
//! function type, then by id, and an address's cells are one shared allocation ([`Cells`]).
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

use cells::{Cell, Kinds};
pub use cells::{CellRef, Cells};

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
    /// By function type, then id. Ids are `Box<str>`: no reference count per idle address.
    types: HashMap<TypeName, HashMap<Box<str>, Cells>>,
    addresses: usize,
    /// Changed since the last capture (change tracking on).
    changed: HashSet<Address>,
    /// Some cell may expire: the sweep skips groups without.
    expiring: bool,
}

impl Group {
    fn cells(&self, addr: &Address) -> Option<&Cells> {
        self.types.get(&addr.typename)?.get(&*addr.id)
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

    fn cells(&self, kg: u32, addr: &Address) -> Option<&Cells> {
        self.group(kg)?.cells(addr)
    }

    /// Replaces (or with `None` removes) the cells of `addr` in key group `kg`.
    fn set(&mut self, kg: u32, addr: &Address, cells: Option<Cells>) {
        if cells.is_none() && self.groups.is_empty() {
            return;
        }
        let tracking = self.tracking;
        let g = self.group_mut(kg);
        let before = g.addresses;
        match cells {
            Some(cells) => {
                g.expiring |= cells.expiring();
                let ids = match g.types.get_mut(&addr.typename) {
                    Some(ids) => ids,
                    None => g.types.entry(addr.typename.clone()).or_default(),
                };
                match ids.get_mut(&*addr.id) {
                    Some(slot) => *slot = cells,
                    None => {
                        ids.insert(Box::from(&*addr.id), cells);
                        g.addresses += 1;
                    }
                }
            }
            None => {
                let Some(ids) = g.types.get_mut(&addr.typename) else {
                    return;
                };
                if ids.remove(&*addr.id).is_none() {
                    return;
                }
                if ids.is_empty() {
                    g.types.remove(&addr.typename);
                }
                g.addresses -= 1;
            }
        }
        let after = g.addresses;
        let first_change = tracking && g.changed.is_empty();
        if tracking {
            g.changed.insert(addr.clone());
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
        let cells = self.cells(kg, addr).cloned();
        let spec_of = |name: &str| specs.iter().find(|s| *s.name == *name);
        let values = specs
            .iter()
            .map(|spec| StateValue {
                name: spec.name.clone(),
                typename: spec.typename.clone(),
                value: cells.as_ref().and_then(|cells| {
                    let c = cells
                        .0
                        .iter()
                        .find(|c| *c.kind.name == *spec.name && !c.expired(now_ms))?;
                    Some(Value {
                        typename: c.kind.typename.clone(),
                        bytes: Bytes::copy_from_slice(&c.bytes),
                    })
                }),
            })
            .collect();
        let Some(cells) = cells else {
            return values;
        };
        let refreshed = |c: &Cell| match spec_of(&c.kind.name).map(|s| s.expiration) {
            Some(e @ Expiration::AfterInvoke(_)) => Some(expiry(e, now_ms)),
            _ => None,
        };
        let rewrite = cells
            .0
            .iter()
            .any(|c| c.expired(now_ms) || refreshed(c).is_some_and(|t| t != c.expires_at_ms));
        if rewrite {
            let live: Vec<Cell> = cells
                .0
                .iter()
                .filter(|c| !c.expired(now_ms))
                .map(|c| Cell {
                    expires_at_ms: refreshed(c).unwrap_or(c.expires_at_ms),
                    ..c.clone()
                })
                .collect();
            self.set(kg, addr, (!live.is_empty()).then(|| Cells(live.into())));
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
        let mut cells: Vec<Cell> = match self.cells(kg, addr) {
            Some(old) => old
                .0
                .iter()
                .filter(|c| !mutations.iter().any(|m| *m.name == *c.kind.name))
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        for m in mutations {
            cells.retain(|c| *c.kind.name != *m.name);
            let Some(value) = m.value else {
                continue;
            };
            let exp = specs
                .iter()
                .find(|s| *s.name == *m.name)
                .map_or(Expiration::Never, |s| s.expiration);
            cells.push(Cell {
                kind: self.kinds.get(&m.name, &value.typename),
                bytes: Box::from(&value.bytes[..]),
                expires_at_ms: expiry(exp, now_ms),
            });
        }
        self.set(kg, addr, (!cells.is_empty()).then(|| Cells(cells.into())));
    }

    /// A state value as it stands (ignoring expiry), for inspection and tests.
    pub fn get(&self, addr: &Address, name: &str) -> Option<Value> {
        let kg = self.group_of(addr);
        let cells = self.cells(kg, addr)?;
        let c = cells.0.iter().find(|c| *c.kind.name == *name)?;
        Some(Value {
            typename: c.kind.typename.clone(),
            bytes: Bytes::copy_from_slice(&c.bytes),
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
    pub fn iter(&self) -> impl Iterator<Item = (Address, &Cells)> {
        self.groups.iter().flat_map(|g| {
            g.types
                .iter()
                .flat_map(|(t, ids)| ids.iter().map(move |(id, c)| (Address::new(t.clone(), &**id), c)))
        })
    }

    /// Puts back one value read from a checkpoint (the cells of version-1 parts come one by
    /// one).
    pub fn restore(&mut self, addr: Address, name: &str, value: Value, expires_at_ms: Option<u64>) {
        let kg = self.group_of(&addr);
        let mut cells: Vec<Cell> = self
            .cells(kg, &addr)
            .map(|c| c.0.iter().filter(|c| *c.kind.name != *name).cloned().collect())
            .unwrap_or_default();
        cells.push(Cell {
            kind: self.kinds.get(name, &value.typename),
            bytes: Box::from(&value.bytes[..]),
            expires_at_ms: expires_at_ms.unwrap_or(0),
        });
        self.set(kg, &addr, Some(Cells(cells.into())));
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
        let cells: Vec<Cell> = cells
            .iter()
            .map(|&(name, typename, bytes, expires_at_ms)| Cell {
                kind: self.kinds.get(name, typename),
                bytes: Box::from(bytes),
                expires_at_ms,
            })
            .collect();
        self.set(kg, addr, (!cells.is_empty()).then(|| Cells(cells.into())));
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
        let mut out = StateChanges::default();
        for &kg in &whole {
            let g = self.group_mut(kg);
            g.changed.clear();
            let entries = g
                .types
                .iter()
                .flat_map(|(t, ids)| {
                    ids.iter()
                        .map(move |(id, c)| (Address::new(t.clone(), &**id), Some(c.clone())))
                })
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
            let Group { types, changed, .. } = &mut self.groups[kg as usize];
            let entries = changed
                .drain()
                .map(|a| {
                    let cells = types.get(&a.typename).and_then(|ids| ids.get(&*a.id)).cloned();
                    (a, cells)
                })
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
        let Some(g) = self.groups.get_mut(kg as usize).filter(|g| g.expiring) else {
            return 0;
        };
        let mut removed = 0;
        let mut gone = 0;
        let mut still_expiring = false;
        let mut changed = Vec::new();
        for (t, ids) in g.types.iter_mut() {
            ids.retain(|id, cells| {
                if !cells.0.iter().any(|c| c.expired(now_ms)) {
                    still_expiring |= cells.expiring();
                    return true;
                }
                let live: Vec<Cell> = cells.0.iter().filter(|c| !c.expired(now_ms)).cloned().collect();
                removed += cells.len() - live.len();
                changed.push(Address::new(t.clone(), &**id));
                if live.is_empty() {
                    gone += 1;
                    return false;
                }
                *cells = Cells(live.into());
                still_expiring |= cells.expiring();
                true
            });
        }
        g.types.retain(|_, ids| !ids.is_empty());
        g.expiring = still_expiring;
        g.addresses -= gone;
        self.addresses -= gone;
        if self.tracking && !changed.is_empty() {
            if g.changed.is_empty() {
                self.changed_groups.push(kg);
            }
            g.changed.extend(changed);
        }
        removed
    }
}
