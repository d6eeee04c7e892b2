//! Who a worker is, as its certificate says: a URI SAN
//! `spiffe://spindle.dev/ns/<namespace>/app/<application>/worker/<index>`. Pure: parsing,
//! printing and the checks every peer-port call makes against what the caller claims.
//!
//! The certificate is the only thing on the peer port an attacker cannot make up: the
//! application name, worker count and index in a `Hello` or a control request are guessable,
//! so every claim of an index is checked against the certificate's.

use std::fmt;

/// URI prefix of a worker identity.
pub const PREFIX: &str = "spiffe://spindle.dev/ns/";
/// The namespace of a worker that runs outside Kubernetes (`spindle run`): not a valid
/// Kubernetes namespace name, so it never collides with one.
pub const NO_NAMESPACE: &str = "_";

/// One worker of one application in one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkerIdentity {
    /// The Kubernetes namespace, or [`NO_NAMESPACE`].
    pub namespace: String,
    pub application: String,
    pub worker: u32,
}

/// A peer-port call refused because of who made it. The text names the cause and only
/// values the caller itself presented (its certificate, its claim): never this worker's own
/// secrets, layout or generation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the caller presented no client certificate; the peer port needs the application's mutual TLS")]
    NoCertificate,
    #[error("the caller's certificate names no Spindle worker (no SAN URI `{PREFIX}…`)")]
    NoIdentity,
    #[error("the caller's certificate is for application `{0}`, which is not this worker's application")]
    OtherApplication(String),
    #[error("the caller's certificate is for namespace `{0}`, which is not this worker's namespace")]
    OtherNamespace(String),
    #[error("the caller claims to be worker {claimed}, but its certificate is worker {certified}'s")]
    OtherIndex { claimed: u32, certified: u32 },
    #[error("only the coordinator (worker 0) may send {what}; the caller is worker {from}")]
    NotCoordinator { what: &'static str, from: u32 },
    #[error("{what} goes to the coordinator (worker 0), not to this worker")]
    ToCoordinatorOnly { what: &'static str },
}

impl WorkerIdentity {
    pub fn new(namespace: Option<&str>, application: &str, worker: u32) -> WorkerIdentity {
        WorkerIdentity {
            namespace: namespace.unwrap_or(NO_NAMESPACE).to_string(),
            application: application.to_string(),
            worker,
        }
    }

    /// The SAN URI of this identity.
    pub fn uri(&self) -> String {
        format!(
            "{PREFIX}{}/app/{}/worker/{}",
            self.namespace, self.application, self.worker
        )
    }

    /// Parses a SAN URI; `None` for anything that is not exactly a worker identity.
    pub fn parse(uri: &str) -> Option<WorkerIdentity> {
        let rest = uri.strip_prefix(PREFIX)?;
        let parts: Vec<&str> = rest.split('/').collect();
        let [ns, "app", app, "worker", index] = parts.as_slice() else {
            return None;
        };
        let segment = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !segment(ns) || !segment(app) {
            return None;
        }
        // No sign, no leading zeros: one spelling per index.
        if index.is_empty() || (index.len() > 1 && index.starts_with('0')) || !index.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        Some(WorkerIdentity {
            namespace: ns.to_string(),
            application: app.to_string(),
            worker: index.parse().ok()?,
        })
    }

    /// The first worker identity among a certificate's SAN URIs.
    pub fn from_uris<'a>(uris: impl IntoIterator<Item = &'a str>) -> Option<WorkerIdentity> {
        uris.into_iter().find_map(WorkerIdentity::parse)
    }

    /// True when `other` is a worker of the same application in the same namespace.
    pub fn same_application(&self, other: &WorkerIdentity) -> Result<(), Refusal> {
        if other.namespace != self.namespace {
            return Err(Refusal::OtherNamespace(other.namespace.clone()));
        }
        if other.application != self.application {
            return Err(Refusal::OtherApplication(other.application.clone()));
        }
        Ok(())
    }
}

impl fmt::Display for WorkerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.uri())
    }
}

/// What a peer-port call was authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The peer port runs without TLS (a deployment that opted out): every claim is believed.
    Unauthenticated,
    /// The certificate's identity (its application and namespace were checked at the TLS
    /// handshake; checked again here).
    Worker(WorkerIdentity),
}

/// The caller's claim to be worker `claimed`, against its certificate and this worker's
/// identity `me`.
pub fn check_claim(me: &WorkerIdentity, caller: &Caller, claimed: u32) -> Result<(), Refusal> {
    let Caller::Worker(id) = caller else {
        return Ok(());
    };
    me.same_application(id)?;
    if id.worker != claimed {
        return Err(Refusal::OtherIndex {
            claimed,
            certified: id.worker,
        });
    }
    Ok(())
}

/// The control calls, by who may send them to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlKind {
    /// Worker → coordinator.
    Join,
    Part,
    Want,
    Leave,
    /// Coordinator → worker.
    Restore,
    Completed,
    Exit,
    Ping,
}

impl ControlKind {
    fn name(self) -> &'static str {
        match self {
            ControlKind::Join => "Join",
            ControlKind::Part => "PartWritten",
            ControlKind::Want => "WantCheckpoint",
            ControlKind::Restore => "Restore",
            ControlKind::Completed => "Completed",
            ControlKind::Leave => "Leave",
            ControlKind::Exit => "Exit",
            ControlKind::Ping => "Ping",
        }
    }
}

/// May worker `from` send `kind` to worker `me`? (Identity already checked: `from` is certified.)
pub fn authorize(kind: ControlKind, from: u32, me: u32) -> Result<(), Refusal> {
    let what = kind.name();
    match kind {
        ControlKind::Join | ControlKind::Part | ControlKind::Want | ControlKind::Leave if me != 0 => {
            Err(Refusal::ToCoordinatorOnly { what })
        }
        ControlKind::Restore | ControlKind::Completed | ControlKind::Exit | ControlKind::Ping if from != 0 => {
            Err(Refusal::NotCoordinator { what, from })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(ns: &str, app: &str, w: u32) -> WorkerIdentity {
        WorkerIdentity::new(Some(ns), app, w)
    }

    #[test]
    fn uris_round_trip_and_nothing_else_parses() {
        let me = id("shop", "orders", 2);
        assert_eq!(me.uri(), "spiffe://spindle.dev/ns/shop/app/orders/worker/2");
        assert_eq!(WorkerIdentity::parse(&me.uri()), Some(me));
        let local = WorkerIdentity::new(None, "orders", 0);
        assert_eq!(local.uri(), "spiffe://spindle.dev/ns/_/app/orders/worker/0");
        assert_eq!(WorkerIdentity::parse(&local.uri()), Some(local));
        for bad in [
            "spiffe://spindle.dev/ns/shop/app/orders/worker/",
            "spiffe://spindle.dev/ns/shop/app/orders/worker/02",
            "spiffe://spindle.dev/ns/shop/app/orders/worker/-1",
            "spiffe://spindle.dev/ns/shop/app/orders/worker/4294967296",
            "spiffe://spindle.dev/ns/shop/app/orders/worker/1/x",
            "spiffe://spindle.dev/ns//app/orders/worker/1",
            "spiffe://spindle.dev/ns/shop/app/or%2Fders/worker/1",
            "spiffe://other.dev/ns/shop/app/orders/worker/1",
            "https://spindle.dev/ns/shop/app/orders/worker/1",
        ] {
            assert_eq!(WorkerIdentity::parse(bad), None, "{bad}");
        }
        assert_eq!(
            WorkerIdentity::from_uris(["https://example.com", "spiffe://spindle.dev/ns/a/app/b/worker/7"]),
            Some(id("a", "b", 7))
        );
    }

    #[test]
    fn a_claim_must_match_the_certificate() {
        let me = id("shop", "orders", 0);
        let caller = |ns, app, w| Caller::Worker(id(ns, app, w));
        assert_eq!(check_claim(&me, &caller("shop", "orders", 1), 1), Ok(()));
        assert_eq!(
            check_claim(&me, &caller("shop", "orders", 1), 2),
            Err(Refusal::OtherIndex {
                claimed: 2,
                certified: 1
            })
        );
        assert_eq!(
            check_claim(&me, &caller("shop", "billing", 1), 1),
            Err(Refusal::OtherApplication("billing".into()))
        );
        assert_eq!(
            check_claim(&me, &caller("test", "orders", 1), 1),
            Err(Refusal::OtherNamespace("test".into()))
        );
        assert_eq!(check_claim(&me, &Caller::Unauthenticated, 5), Ok(()));
        // The refusal names what the caller presented, not this worker's values.
        let text = check_claim(&me, &caller("test", "orders", 1), 1)
            .unwrap_err()
            .to_string();
        assert!(text.contains("`test`") && !text.contains("shop"), "{text}");
    }

    #[test]
    fn only_the_coordinator_commands_and_only_it_is_reported_to() {
        use ControlKind::*;
        let table = [
            // (kind, from, to, allowed)
            (Join, 1, 0, true),
            (Join, 1, 2, false),
            (Part, 2, 0, true),
            (Part, 2, 1, false),
            (Want, 1, 0, true),
            (Want, 0, 1, false),
            (Restore, 0, 1, true),
            (Restore, 2, 1, false),
            (Completed, 0, 2, true),
            (Completed, 1, 2, false),
            (Completed, 1, 0, false),
            (Leave, 2, 0, true),
            (Leave, 2, 1, false),
            (Exit, 0, 2, true),
            (Exit, 1, 2, false),
        ];
        for (kind, from, to, allowed) in table {
            assert_eq!(authorize(kind, from, to).is_ok(), allowed, "{kind:?} {from} -> {to}");
        }
        assert_eq!(
            authorize(Completed, 1, 2).unwrap_err().to_string(),
            "only the coordinator (worker 0) may send Completed; the caller is worker 1"
        );
    }
}
