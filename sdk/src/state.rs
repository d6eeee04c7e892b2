//! The state of one function instance during a batch: the values the runtime sent, changed in
//! place by the handler, and turned into one mutation per changed state at the end.

use spindle_protocol::reqreply::TypedValue;
use spindle_protocol::reqreply::from_function::PersistedValueMutation;
use spindle_protocol::reqreply::from_function::persisted_value_mutation::MutationType;
use spindle_protocol::reqreply::to_function::PersistedValue;

use crate::{DecodeError, StateDecl, Type, UsageError, ValueSpec};

struct Cell<'a> {
    decl: &'a StateDecl,
    /// `None` when empty: never written, sent with `has_value = false`, or removed.
    value: Option<TypedValue>,
    /// Changed by this batch, so the runtime must be told.
    dirty: bool,
}

pub(crate) struct StateView<'a> {
    // In declaration order, so mutations come out in a stable order. Functions declare a handful
    // of states, so a linear scan beats hashing.
    cells: Vec<Cell<'a>>,
}

impl<'a> StateView<'a> {
    /// Matches the received values to the declared states. When some declared state was not
    /// sent, returns every such declaration (in declaration order) so the runtime can register
    /// them all at once. Received values of undeclared states are ignored.
    pub(crate) fn resolve(decls: &'a [StateDecl], received: Vec<PersistedValue>) -> Result<Self, Vec<&'a StateDecl>> {
        let mut cells: Vec<Cell<'a>> = decls
            .iter()
            .map(|decl| Cell {
                decl,
                value: None,
                dirty: false,
            })
            .collect();
        let mut present = vec![false; decls.len()];
        for pv in received {
            if let Some(i) = cells.iter().position(|c| c.decl.name() == pv.state_name) {
                present[i] = true;
                cells[i].value = pv.state_value.filter(|v| v.has_value);
            }
        }
        let missing: Vec<&StateDecl> = decls
            .iter()
            .zip(&present)
            .filter(|(_, present)| !**present)
            .map(|(decl, _)| decl)
            .collect();
        if missing.is_empty() {
            Ok(StateView { cells })
        } else {
            Err(missing)
        }
    }

    fn cell(&mut self, name: &str) -> Option<&mut Cell<'a>> {
        self.cells.iter_mut().find(|c| c.decl.name() == name)
    }

    pub(crate) fn get<T: Type>(&self, spec: &ValueSpec<T>) -> Result<Option<T>, DecodeError> {
        let cell = self
            .cells
            .iter()
            .find(|c| c.decl.name() == spec.name())
            .ok_or_else(|| DecodeError::UndeclaredState(spec.name().to_string()))?;
        let Some(value) = &cell.value else {
            return Ok(None);
        };
        if value.typename != T::typename() {
            return Err(DecodeError::TypeMismatch {
                expected: T::typename().to_string(),
                actual: value.typename.clone(),
            });
        }
        T::decode(&value.value).map(Some)
    }

    pub(crate) fn set<T: Type>(&mut self, spec: &ValueSpec<T>, value: &T) -> Result<(), UsageError> {
        let cell = self.declared::<T>(spec)?;
        let bytes = value.try_encode().map_err(|source| UsageError::Encode {
            typename: T::typename(),
            source,
        })?;
        cell.value = Some(TypedValue {
            typename: T::typename().to_string(),
            has_value: true,
            value: bytes,
        });
        cell.dirty = true;
        Ok(())
    }

    pub(crate) fn remove<T: Type>(&mut self, spec: &ValueSpec<T>) -> Result<(), UsageError> {
        let cell = self.declared::<T>(spec)?;
        cell.value = None;
        cell.dirty = true;
        Ok(())
    }

    /// The cell of a declared state, checked against the type the handler writes: the runtime
    /// stores whatever typename it is sent, so a mismatch here would surface much later as an
    /// unreadable state.
    fn declared<T: Type>(&mut self, spec: &ValueSpec<T>) -> Result<&mut Cell<'a>, UsageError> {
        let cell = self
            .cell(spec.name())
            .ok_or_else(|| UsageError::UndeclaredState(spec.name().to_string()))?;
        if cell.decl.typename() != T::typename() {
            return Err(UsageError::StateTypeMismatch {
                state: spec.name().to_string(),
                declared: cell.decl.typename(),
                written: T::typename(),
            });
        }
        Ok(cell)
    }

    /// One mutation per changed state: its final value, or a delete.
    pub(crate) fn into_mutations(self) -> Vec<PersistedValueMutation> {
        self.cells
            .into_iter()
            .filter(|c| c.dirty)
            .map(|c| {
                let mutation_type = if c.value.is_some() {
                    MutationType::Modify
                } else {
                    MutationType::Delete
                };
                PersistedValueMutation {
                    mutation_type: mutation_type as i32,
                    state_name: c.decl.name().to_string(),
                    state_value: c.value,
                }
            })
            .collect()
    }
}
