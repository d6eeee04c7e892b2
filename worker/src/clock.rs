//! Wall-clock time in epoch milliseconds: state expiry and delayed messages are stored against
//! it because they must mean the same after a restart (a monotonic clock does not).

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
