//! Exponential backoff within a deadline, shared by everything that retries an HTTP call (the
//! invoker, the webhook egress): first wait 10 ms, doubling up to 1 s, as StateFun's runtime.

use std::time::{Duration, Instant};

const FIRST: Duration = Duration::from_millis(10);
/// Longest wait between attempts, so a peer that comes back is reached soon.
const MAX: Duration = Duration::from_secs(1);

pub struct Backoff {
    next: Duration,
    deadline: Instant,
}

impl Backoff {
    pub fn within(timeout: Duration) -> Backoff {
        Backoff {
            next: FIRST,
            deadline: Instant::now() + timeout,
        }
    }

    /// Time left for an attempt.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// The wait before the next attempt, or `None` when the deadline has passed.
    pub fn next_wait(&mut self) -> Option<Duration> {
        let wait = self.next.min(self.remaining());
        self.next = (self.next * 2).min(MAX);
        (!wait.is_zero()).then_some(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_stops_at_the_deadline() {
        let mut b = Backoff::within(Duration::from_secs(3600));
        let waits: Vec<u128> = (0..9).map(|_| b.next_wait().unwrap().as_millis()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        assert_eq!(Backoff::within(Duration::ZERO).next_wait(), None);
    }
}
