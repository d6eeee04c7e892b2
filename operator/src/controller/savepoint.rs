//! `spec.checkpoint.savepointRequest`: the operator asks worker 0 for the savepoint
//! (`POST /savepoints/{name}` on its admin endpoint, with a token of `spec.admin.auth` when
//! it is set and comes from a Secret) once per name, and reports it in `status.savepoint`.
//! The field is the operator's alone: it is left out of the workers' configuration, so
//! setting it restarts nothing. Pure decisions here; the call is in `apply`.

use crate::resource::SavepointStatus;
use crate::worker_admin::{SavepointRecord, SavepointRefusal};

pub const TAKEN: &str = "Taken";
pub const PENDING: &str = "Pending";
pub const FAILED: &str = "Failed";

/// What to do about the requested savepoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing requested, or this name is settled (taken or refused).
    Done,
    /// Ask worker 0 for it.
    Take(String),
    /// Requested, but no worker is ready to take it: report it pending.
    Wait(String),
}

pub fn next(requested: Option<&str>, previous: Option<&SavepointStatus>, workers_ready: bool) -> Step {
    let Some(name) = requested else {
        return Step::Done;
    };
    let settled = previous.is_some_and(|p| p.name == name && (p.phase == TAKEN || p.phase == FAILED));
    match (settled, workers_ready) {
        (true, _) => Step::Done,
        (false, true) => Step::Take(name.to_string()),
        (false, false) => Step::Wait(name.to_string()),
    }
}

/// The status a request reached; `time`: now, RFC 3339.
pub fn outcome(name: &str, result: Result<SavepointRecord, SavepointRefusal>, time: String) -> SavepointStatus {
    match result {
        Ok(r) => SavepointStatus {
            name: name.to_string(),
            phase: TAKEN.into(),
            checkpoint: Some(r.checkpoint),
            time: Some(time),
            message: Some(format!(
                "checkpoint {} is kept as savepoint `{name}`: start from it with spec.checkpoint.restoreFrom: {name}",
                r.checkpoint
            )),
        },
        Err(SavepointRefusal::Refused(why) | SavepointRefusal::Exists(why)) => SavepointStatus {
            name: name.to_string(),
            phase: FAILED.into(),
            message: Some(why),
            ..SavepointStatus::default()
        },
        Err(SavepointRefusal::Unavailable(why)) => pending(name, why),
    }
}

pub fn pending(name: &str, why: String) -> SavepointStatus {
    SavepointStatus {
        name: name.to_string(),
        phase: PENDING.into(),
        message: Some(why),
        ..SavepointStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_name_is_taken_once_and_a_refusal_is_final() {
        assert_eq!(next(None, None, true), Step::Done);
        assert_eq!(next(Some("a"), None, false), Step::Wait("a".into()));
        assert_eq!(next(Some("a"), None, true), Step::Take("a".into()));
        let taken = outcome(
            "a",
            Ok(SavepointRecord {
                name: "a".into(),
                checkpoint: 7,
                created_at_ms: 1,
            }),
            "t".into(),
        );
        assert_eq!((taken.phase.as_str(), taken.checkpoint), (TAKEN, Some(7)));
        assert_eq!(next(Some("a"), Some(&taken), true), Step::Done);
        assert_eq!(next(Some("b"), Some(&taken), true), Step::Take("b".into()));
        let later = outcome("b", Err(SavepointRefusal::Unavailable("down".into())), "t".into());
        assert_eq!(later.phase, PENDING);
        assert_eq!(
            next(Some("b"), Some(&later), true),
            Step::Take("b".into()),
            "asked again"
        );
        let refused = outcome("b", Err(SavepointRefusal::Refused("exists".into())), "t".into());
        assert_eq!(next(Some("b"), Some(&refused), true), Step::Done);
    }
}
