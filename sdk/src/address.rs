//! Function addresses: a function type plus the id of one of its instances.

use std::fmt;

use spindle_protocol::reqreply;

use crate::{TypeName, TypeNameError};

/// The address of one function instance: its type (`namespace/name`) and an id. State is scoped
/// to an address, and messages are sent to one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Address {
    pub typename: TypeName,
    pub id: String,
}

impl Address {
    pub fn new(typename: TypeName, id: impl Into<String>) -> Self {
        Address {
            typename,
            id: id.into(),
        }
    }

    /// Reads a wire address. An absent or all-empty one means "no address" (the caller of a
    /// message from an ingress), as in the Python SDK.
    pub(crate) fn from_pb(pb: Option<&reqreply::Address>) -> Result<Option<Address>, TypeNameError> {
        let Some(pb) = pb else { return Ok(None) };
        if pb.namespace.is_empty() && pb.r#type.is_empty() && pb.id.is_empty() {
            return Ok(None);
        }
        let typename = TypeName::new(&pb.namespace, &pb.r#type)?;
        Ok(Some(Address::new(typename, pb.id.clone())))
    }

    pub(crate) fn to_pb(&self) -> reqreply::Address {
        reqreply::Address {
            namespace: self.typename.namespace().to_string(),
            r#type: self.typename.name().to_string(),
            id: self.id.clone(),
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.typename, self.id)
    }
}
