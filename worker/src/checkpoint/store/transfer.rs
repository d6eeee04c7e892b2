//! How parts move to and from remote storage: in pieces, each one request with a timeout for
//! its size at a minimum rate, retried on its own. Settings come from the worker's
//! environment (`SPINDLE_STORAGE_*`, beside the `AWS_*` ones), documented in
//! `docs/checkpoints.md`.

use std::time::Duration;

use object_store::RetryConfig;

/// Settings of large transfers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transfer {
    /// Bytes per request: multipart upload parts (at least 5 MiB, S3's minimum) and ranged
    /// reads. `SPINDLE_STORAGE_PIECE_BYTES`, default 8 MiB.
    pub piece: usize,
    /// The slowest transfer accepted, bytes per second: a request of `piece` bytes fails
    /// after `5 s + piece / min_rate`. `SPINDLE_STORAGE_MIN_BYTES_PER_SECOND`, default 1 MiB/s.
    pub min_rate: u64,
    /// Retries of one piece (with backoff, within `2 × its timeout`).
    /// `SPINDLE_STORAGE_RETRIES`, default 3.
    pub retries: usize,
    /// Pieces in flight at once per part. `SPINDLE_STORAGE_CONCURRENCY`, default 4.
    pub concurrency: usize,
    /// The timeout of the request that completes a multipart upload: the storage assembles
    /// the object then, which S3 says can take minutes for a large one, far longer than a
    /// piece's timeout. `SPINDLE_STORAGE_COMPLETE_TIMEOUT_SECONDS`, default 120.
    pub complete_timeout: Duration,
}

impl Default for Transfer {
    fn default() -> Self {
        Transfer {
            piece: 8 << 20,
            min_rate: 1 << 20,
            retries: 3,
            concurrency: 4,
            complete_timeout: Duration::from_secs(120),
        }
    }
}

const MIN_PIECE: usize = 5 << 20;

impl Transfer {
    /// The settings in `env`, defaults for those missing.
    pub fn from_env(env: &[(String, String)]) -> Result<Transfer, String> {
        let mut t = Transfer::default();
        for (k, v) in env {
            let number = || {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("{k}={v}: expected a whole number"))
            };
            match k.as_str() {
                "SPINDLE_STORAGE_PIECE_BYTES" => {
                    let n = number()? as usize;
                    if n < MIN_PIECE {
                        return Err(format!("{k}={v}: at least {MIN_PIECE} (S3's smallest multipart part)"));
                    }
                    t.piece = n;
                }
                "SPINDLE_STORAGE_MIN_BYTES_PER_SECOND" => t.min_rate = number()?.max(1),
                "SPINDLE_STORAGE_RETRIES" => t.retries = number()? as usize,
                "SPINDLE_STORAGE_CONCURRENCY" => t.concurrency = (number()? as usize).clamp(1, 64),
                "SPINDLE_STORAGE_COMPLETE_TIMEOUT_SECONDS" => {
                    t.complete_timeout = Duration::from_secs(number()?.max(1))
                }
                _ => {}
            }
        }
        Ok(t)
    }

    /// The timeout of one request of up to `piece` bytes.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(5) + Duration::from_secs_f64(self.piece as f64 / self.min_rate as f64)
    }

    pub fn retry(&self) -> RetryConfig {
        RetryConfig {
            max_retries: self.retries,
            retry_timeout: self.request_timeout() * 2,
            ..RetryConfig::default()
        }
    }

    /// Retries of a completion: as many, within twice its timeout.
    pub fn complete_retry(&self) -> RetryConfig {
        RetryConfig {
            max_retries: self.retries,
            retry_timeout: self.complete_timeout * 2,
            ..RetryConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn settings_are_read_and_checked() {
        assert_eq!(Transfer::from_env(&[]).unwrap(), Transfer::default());
        assert_eq!(Transfer::default().request_timeout(), Duration::from_secs(13));
        let t = Transfer::from_env(&env(&[
            ("SPINDLE_STORAGE_PIECE_BYTES", "16777216"),
            ("SPINDLE_STORAGE_MIN_BYTES_PER_SECOND", "4194304"),
            ("SPINDLE_STORAGE_RETRIES", "5"),
            ("SPINDLE_STORAGE_CONCURRENCY", "8"),
            ("SPINDLE_STORAGE_COMPLETE_TIMEOUT_SECONDS", "600"),
            ("AWS_REGION", "x"),
        ]))
        .unwrap();
        assert_eq!(
            (t.piece, t.min_rate, t.retries, t.concurrency, t.complete_timeout),
            (16 << 20, 4 << 20, 5, 8, Duration::from_secs(600))
        );
        assert_eq!(t.request_timeout(), Duration::from_secs(9));
        let err = Transfer::from_env(&env(&[("SPINDLE_STORAGE_PIECE_BYTES", "1000")])).unwrap_err();
        assert!(err.contains("SPINDLE_STORAGE_PIECE_BYTES=1000"), "{err}");
        assert!(Transfer::from_env(&env(&[("SPINDLE_STORAGE_RETRIES", "many")])).is_err());
    }
}
