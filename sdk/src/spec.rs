//! Declaring state: a typed [`ValueSpec`] for handlers, its untyped [`StateDecl`] for
//! registration (what the SDK reports to the runtime when the state is missing).

use std::marker::PhantomData;
use std::time::Duration;

use spindle_protocol::reqreply::from_function::{ExpirationSpec, PersistedValueSpec, expiration_spec::ExpireMode};

use crate::Type;

/// When the runtime may drop a state value that is not touched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Expiration {
    #[default]
    Never,
    /// Expires this long after the last write.
    AfterWrite(Duration),
    /// Expires this long after the last invocation of the function instance (read or write).
    AfterInvoke(Duration),
}

impl Expiration {
    fn to_pb(self) -> ExpirationSpec {
        let (mode, after) = match self {
            Expiration::Never => (ExpireMode::None, Duration::ZERO),
            Expiration::AfterWrite(d) => (ExpireMode::AfterWrite, d),
            Expiration::AfterInvoke(d) => (ExpireMode::AfterInvoke, d),
        };
        ExpirationSpec {
            mode: mode as i32,
            expire_after_millis: i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        }
    }
}

/// A named state value of type `T`, scoped to a function instance. Declare it as a constant and
/// pass it both to registration ([`ValueSpec::decl`]) and to the context's getters and setters:
///
/// ```
/// # use spindle_sdk::ValueSpec;
/// # use std::time::Duration;
/// const VISITS: ValueSpec<i64> = ValueSpec::new("visits").expire_after_invoke(Duration::from_secs(86400));
/// ```
pub struct ValueSpec<T> {
    name: &'static str,
    expiration: Expiration,
    // `fn() -> T`: the spec neither owns a `T` nor restricts `Send`/`Sync` by it.
    _type: PhantomData<fn() -> T>,
}

impl<T> ValueSpec<T> {
    pub const fn new(name: &'static str) -> Self {
        ValueSpec {
            name,
            expiration: Expiration::Never,
            _type: PhantomData,
        }
    }

    pub const fn expire_after_write(mut self, after: Duration) -> Self {
        self.expiration = Expiration::AfterWrite(after);
        self
    }

    pub const fn expire_after_invoke(mut self, after: Duration) -> Self {
        self.expiration = Expiration::AfterInvoke(after);
        self
    }

    pub const fn name(&self) -> &'static str {
        self.name
    }

    pub const fn expiration(&self) -> Expiration {
        self.expiration
    }
}

impl<T: Type> ValueSpec<T> {
    /// The declaration to pass to [`Functions::register`](crate::Functions::register).
    pub fn decl(&self) -> StateDecl {
        StateDecl {
            name: self.name,
            typename: T::typename(),
            expiration: self.expiration,
        }
    }
}

// Manual impls: derives would demand `T: Clone` etc., which a spec does not need.
impl<T> Clone for ValueSpec<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for ValueSpec<T> {}

impl<T> std::fmt::Debug for ValueSpec<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueSpec")
            .field("name", &self.name)
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// One declared state of a function: name, typename of its values, and expiration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateDecl {
    name: &'static str,
    typename: &'static str,
    expiration: Expiration,
}

impl StateDecl {
    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn typename(&self) -> &'static str {
        self.typename
    }

    pub fn expiration(&self) -> Expiration {
        self.expiration
    }

    pub(crate) fn to_pb(self) -> PersistedValueSpec {
        PersistedValueSpec {
            state_name: self.name.to_string(),
            expiration_spec: Some(self.expiration.to_pb()),
            type_typename: self.typename.to_string(),
        }
    }
}

impl<T: Type> From<&ValueSpec<T>> for StateDecl {
    fn from(spec: &ValueSpec<T>) -> Self {
        spec.decl()
    }
}
