//! The HTTP side of request–reply: what a request with `Spindle-Reply: wait` asks for, and how
//! it waits. Its message carries a reply address as the caller (`crate::reply`); the request
//! is answered with the reply's value once the checkpoint containing the reply has completed
//! (so everything that led to it is durable), or:
//!
//! - `503` with `Spindle-Retry: safe` when the application rolled back to a checkpoint that
//!   does not contain the request's record — it was not applied;
//! - `504` when no reply came within the timeout: the record is still processed exactly once
//!   when it was in a completed checkpoint (the answer says which); a retry with the same
//!   `Idempotency-Key` then returns the reply once there is one, without running the function
//!   again.
//!
//! A rollback to a checkpoint that contains the record does not end the wait: the replay
//! produces the reply again (or the checkpoint holds it), and it reaches the request.

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use spindle_spec::HumanDuration;
use tokio::sync::{oneshot, watch};

use crate::checkpoint::Progress;
use crate::reply::{Released, Waiting};

/// Header asking for the reply: `Spindle-Reply: wait`.
pub const REPLY_HEADER: &str = "spindle-reply";
/// Header with the longest wait for this request, e.g. `5s`.
pub const TIMEOUT_HEADER: &str = "spindle-reply-timeout";
/// Used when the application has no HTTP ingress settings (never, in practice).
pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest a request may ask to wait: the idempotency window, past which a retry would
/// not find the reply remembered.
pub const MAX_REPLY_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Why a waiting request got no reply.
#[derive(Debug)]
pub struct NoReply {
    pub status: StatusCode,
    pub kind: &'static str,
    pub message: String,
    /// The record was not applied: sending it again is safe.
    pub retry_safe: bool,
}

fn no_reply(status: StatusCode, kind: &'static str, message: String, retry_safe: bool) -> NoReply {
    NoReply {
        status,
        kind,
        message,
        retry_safe,
    }
}

/// Whether the request waits for its reply, and for how long; `Err` names the bad header.
pub fn requested(headers: &HeaderMap, default: Duration) -> Result<Option<Duration>, String> {
    match headers.get(REPLY_HEADER).map(|v| v.to_str().unwrap_or("")) {
        None | Some("none") => return Ok(None),
        Some("wait") => {}
        Some(other) => return Err(format!("Spindle-Reply `{other}` is neither `wait` nor `none`")),
    }
    let Some(raw) = headers.get(TIMEOUT_HEADER) else {
        return Ok(Some(default));
    };
    let d = raw
        .to_str()
        .ok()
        .and_then(|s| HumanDuration::parse(s).ok())
        .map(HumanDuration::as_duration)
        .ok_or_else(|| {
            format!(
                "Spindle-Reply-Timeout `{}` is not a duration such as `5s` or `2m`",
                String::from_utf8_lossy(raw.as_bytes())
            )
        })?;
    if d.is_zero() || d > MAX_REPLY_TIMEOUT {
        return Err(format!(
            "Spindle-Reply-Timeout must be above zero and at most {MAX_REPLY_TIMEOUT:?}"
        ));
    }
    Ok(Some(d))
}

/// Waits for the reply of a record ingested in `generation`; `epoch` learns the checkpoint
/// that will contain the record. `progress` is `None` when checkpoints are off (replies then
/// come at once, without durability).
pub async fn wait(
    mut waiting: Waiting,
    epoch: oneshot::Receiver<u64>,
    mut generation: u64,
    progress: Option<&watch::Receiver<Progress>>,
    timeout: Duration,
) -> Result<Released, NoReply> {
    let deadline = tokio::time::Instant::now() + timeout;
    let gone = || {
        no_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the worker is shutting down; the request's effects are unknown (retry with the same Idempotency-Key)"
                .into(),
            false,
        )
    };
    let epoch = epoch.await.map_err(|_| {
        no_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "rolled_back",
            "the application rolled back before the record was queued; it was not applied".into(),
            true,
        )
    })?;
    let Some(progress) = progress else {
        return tokio::time::timeout_at(deadline, waiting.reply())
            .await
            .map_err(|_| timed_out(timeout, None))?
            .map_err(|_| gone());
    };
    let mut progress = progress.clone();
    loop {
        // Decided first, acted on after: the arms' futures borrow `waiting` and `progress`.
        let event = tokio::select! {
            biased;
            reply = waiting.reply() => Event::Reply(reply.ok()),
            p = progress.wait_for(|p| p.generation > generation) => Event::RolledBack(p.ok().map(|p| *p)),
            _ = tokio::time::sleep_until(deadline) => Event::Deadline,
        };
        match event {
            Event::Reply(reply) => return reply.ok_or_else(gone),
            Event::RolledBack(None) => return Err(gone()),
            Event::RolledBack(Some(p)) => {
                // A reply released just before the rollback counts (its checkpoint completed).
                if let Ok(reply) = waiting.reply().try_recv() {
                    return Ok(reply);
                }
                if p.restored < epoch {
                    return Err(no_reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "rolled_back",
                        format!(
                            "the application rolled back to checkpoint {}, before checkpoint {epoch} that would have contained the record; it was not applied",
                            p.restored
                        ),
                        true,
                    ));
                }
                // The restored checkpoint holds the record: its reply comes again.
                generation = p.generation;
            }
            Event::Deadline => {
                let p = *progress.borrow();
                let durable = (p.generation == generation && p.completed >= epoch) || p.restored >= epoch;
                return Err(timed_out(timeout, Some((durable, epoch))));
            }
        }
    }
}

enum Event {
    Reply(Option<Released>),
    RolledBack(Option<Progress>),
    Deadline,
}

fn timed_out(timeout: Duration, durable: Option<(bool, u64)>) -> NoReply {
    let what = match durable {
        Some((true, epoch)) => format!(
            "the record is in checkpoint {epoch} and is processed exactly once; a retry with the same Idempotency-Key returns the reply once there is one"
        ),
        Some((false, epoch)) => format!(
            "checkpoint {epoch}, which contains the record, has not completed yet: it may or may not be applied; a retry with the same Idempotency-Key applies it at most once"
        ),
        None => "checkpoints are off: the record may or may not be applied".into(),
    };
    no_reply(
        StatusCode::GATEWAY_TIMEOUT,
        "no_reply",
        format!("no reply within {timeout:?}; {what}"),
        false,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_headers_ask_for_a_reply_and_its_timeout() {
        let mut h = HeaderMap::new();
        let d = Duration::from_secs(30);
        assert_eq!(requested(&h, d), Ok(None));
        h.insert(REPLY_HEADER, "wait".parse().unwrap());
        assert_eq!(requested(&h, d), Ok(Some(d)));
        h.insert(TIMEOUT_HEADER, "250ms".parse().unwrap());
        assert_eq!(requested(&h, d), Ok(Some(Duration::from_millis(250))));
        h.insert(TIMEOUT_HEADER, "1h".parse().unwrap());
        assert!(requested(&h, d).unwrap_err().contains("at most"));
        h.insert(TIMEOUT_HEADER, "soon".parse().unwrap());
        assert!(requested(&h, d).unwrap_err().contains("not a duration"));
        h.insert(REPLY_HEADER, "later".parse().unwrap());
        assert!(requested(&h, d).unwrap_err().contains("neither"));
    }
}
