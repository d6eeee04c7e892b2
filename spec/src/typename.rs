//! Typenames: `namespace/name`, as StateFun spells function types, egress ids and message types.

use std::fmt;
use std::sync::Arc;

/// A typename `namespace/name`. The namespace may contain dots and slashes are not allowed in
/// the name; both parts are non-empty. Cheap to clone: routing copies it for every message.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TypeName {
    // The full `namespace/name` string and the position of the last '/': one allocation, and
    // the string form (used on every hop and in every log line) needs no formatting.
    full: Arc<str>,
    split: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypeNameError {
    #[error("`{0}` is not a typename: expected `namespace/name`")]
    MissingSlash(String),
    #[error("`{0}` is not a typename: the namespace is empty")]
    EmptyNamespace(String),
    #[error("`{0}` is not a typename: the name is empty")]
    EmptyName(String),
    #[error("`{0}` is not a typename: it contains whitespace or a control character")]
    BadCharacter(String),
}

impl TypeName {
    /// Parses `namespace/name`; the name is what follows the last `/`.
    pub fn parse(s: &str) -> Result<TypeName, TypeNameError> {
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(TypeNameError::BadCharacter(s.to_string()));
        }
        let split = s.rfind('/').ok_or_else(|| TypeNameError::MissingSlash(s.to_string()))?;
        if split == 0 {
            return Err(TypeNameError::EmptyNamespace(s.to_string()));
        }
        if split + 1 == s.len() {
            return Err(TypeNameError::EmptyName(s.to_string()));
        }
        Ok(TypeName {
            full: Arc::from(s),
            split,
        })
    }

    /// Builds a typename from its two parts.
    pub fn new(namespace: &str, name: &str) -> Result<TypeName, TypeNameError> {
        TypeName::parse(&format!("{namespace}/{name}"))
    }

    pub fn namespace(&self) -> &str {
        &self.full[..self.split]
    }

    pub fn name(&self) -> &str {
        &self.full[self.split + 1..]
    }

    pub fn as_str(&self) -> &str {
        &self.full
    }
}

impl fmt::Display for TypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for TypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.full)
    }
}

impl std::str::FromStr for TypeName {
    type Err = TypeNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TypeName::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespace_and_name() {
        let t = TypeName::parse("com.example.fns/greeter").unwrap();
        assert_eq!(t.namespace(), "com.example.fns");
        assert_eq!(t.name(), "greeter");
        assert_eq!(t.to_string(), "com.example.fns/greeter");
        // The name is what follows the last slash, as in StateFun.
        let t = TypeName::parse("a/b/c").unwrap();
        assert_eq!((t.namespace(), t.name()), ("a/b", "c"));
    }

    #[test]
    fn rejects_malformed() {
        assert!(matches!(
            TypeName::parse("greeter"),
            Err(TypeNameError::MissingSlash(_))
        ));
        assert!(matches!(
            TypeName::parse("/greeter"),
            Err(TypeNameError::EmptyNamespace(_))
        ));
        assert!(matches!(TypeName::parse("ns/"), Err(TypeNameError::EmptyName(_))));
        assert!(matches!(TypeName::parse("ns/a b"), Err(TypeNameError::BadCharacter(_))));
    }
}
