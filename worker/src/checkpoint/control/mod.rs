//! The control RPC of checkpoints and rollback (`proto/control.proto`), served on the peer
//! port: [`server`] answers it, [`client`] calls it.

pub(crate) mod checks;
pub(crate) mod client;
pub(crate) mod report;
pub(crate) mod server;
