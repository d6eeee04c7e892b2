//! Exponential backoff, shared by everything that retries a call (the invoker, the webhook
//! and connector egresses): first wait 10 ms, doubling up to 1 s, as StateFun's runtime —
//! within a deadline, or for as long as it takes when there is none.

use std::time::{Duration, Instant};

const FIRST: Duration = Duration::from_millis(10);
/// Longest wait between attempts, so a peer that comes back is reached soon.
const MAX: Duration = Duration::from_secs(1);

pub struct Backoff {
    next: Duration,
    /// `None`: retry for as long as it takes.
    deadline: Option<Instant>,
}

impl Backoff {
    /// Retries within `timeout`, or without end when it is `None`.
    pub fn within(timeout: Option<Duration>) -> Backoff {
        Backoff {
            next: FIRST,
            deadline: timeout.map(|t| Instant::now() + t),
        }
    }

    /// Time left for an attempt; `at_most` when there is no deadline (or more time than that).
    pub fn remaining(&self, at_most: Duration) -> Duration {
        match self.deadline {
            Some(d) => d.saturating_duration_since(Instant::now()).min(at_most),
            None => at_most,
        }
    }

    /// The wait before the next attempt, or `None` when the deadline has passed.
    pub fn next_wait(&mut self) -> Option<Duration> {
        let wait = match self.deadline {
            Some(d) => self.next.min(d.saturating_duration_since(Instant::now())),
            None => self.next,
        };
        self.next = (self.next * 2).min(MAX);
        (!wait.is_zero()).then_some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_stops_at_the_deadline() {
        let mut b = Backoff::within(Some(Duration::from_secs(3600)));
        let waits: Vec<u128> = (0..9).map(|_| b.next_wait().unwrap().as_millis()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        assert_eq!(Backoff::within(Some(Duration::ZERO)).next_wait(), None);
        let mut forever = Backoff::within(None);
        assert!((0..100).all(|_| forever.next_wait().is_some()));
        assert_eq!(forever.remaining(Duration::from_secs(60)), Duration::from_secs(60));
    }
}
