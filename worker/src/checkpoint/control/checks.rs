//! The numbers of a control call, checked before it is acted on: generations and checkpoints
//! are counted from 1 and never reach `u64::MAX` (the next one must exist), a completion never
//! goes backwards, and a part report names the object its sender would have written. Pure.

/// A number from the wire that cannot be right.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NumberError {
    #[error("{what} {value} is out of range")]
    Range { what: &'static str, value: u64 },
    #[error("the part report names object `{key}`, which is not the part of worker {worker} for that checkpoint")]
    PartKey { key: String, worker: u32 },
}

/// A counter from the wire: at least 1 (0 where `zero_ok`), below `u64::MAX`.
fn counter(what: &'static str, value: u64, zero_ok: bool) -> Result<(), NumberError> {
    if value == u64::MAX || (value == 0 && !zero_ok) {
        return Err(NumberError::Range { what, value });
    }
    Ok(())
}

/// `Restore{generation, checkpoint}`: checkpoint 0 means "start empty".
pub(crate) fn restore(generation: u64, checkpoint: u64) -> Result<(), NumberError> {
    counter("generation", generation, false)?;
    counter("checkpoint", checkpoint, true)
}

/// `Ping{generation}`: 0 before the first generation runs.
pub(crate) fn ping(generation: u64) -> Result<(), NumberError> {
    counter("generation", generation, true)
}

/// `Completed{checkpoint}` of the running generation, where `completed` is the newest known:
/// true when it is news. An older or repeated one is not an error (announcements race), just
/// nothing to do: completion never goes backwards.
pub(crate) fn completed(generation: u64, checkpoint: u64, completed: u64) -> Result<bool, NumberError> {
    counter("generation", generation, false)?;
    counter("checkpoint", checkpoint, false)?;
    Ok(checkpoint > completed)
}

/// `PartWritten` / `WantCheckpoint` numbers.
pub(crate) fn reported(generation: u64, checkpoint: u64) -> Result<(), NumberError> {
    counter("generation", generation, false)?;
    counter("checkpoint", checkpoint, false)
}

/// A written part must be at the key its worker writes (`expected`), so a report cannot make
/// the manifest point at another worker's object (or anything else in the bucket).
pub(crate) fn part_key(key: &str, expected: &str, worker: u32) -> Result<(), NumberError> {
    if key != expected {
        return Err(NumberError::PartKey {
            key: key.to_string(),
            worker,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_from_the_wire() {
        assert_eq!(restore(3, 0), Ok(()));
        assert_eq!(restore(3, 7), Ok(()));
        assert!(restore(0, 1).is_err());
        assert!(restore(u64::MAX, 1).is_err());
        assert!(restore(2, u64::MAX).is_err());

        assert_eq!(completed(2, 5, 4), Ok(true));
        assert_eq!(completed(2, 5, 5), Ok(false));
        assert_eq!(completed(2, 4, 5), Ok(false));
        assert_eq!(
            completed(2, u64::MAX, 5),
            Err(NumberError::Range {
                what: "checkpoint",
                value: u64::MAX
            })
        );
        assert!(completed(2, 0, 0).is_err());

        // A ping may come before the first generation runs.
        assert_eq!(ping(0), Ok(()));
        assert!(ping(u64::MAX).is_err());

        assert_eq!(reported(1, 1), Ok(()));
        assert!(reported(1, 0).is_err());
        assert!(reported(u64::MAX, 1).is_err());

        let key = "app/checkpoints/00000000000000000003/part-g2-w1.bin";
        assert_eq!(part_key(key, key, 1), Ok(()));
        let other = "app/checkpoints/00000000000000000003/part-g2-w2.bin";
        assert_eq!(
            part_key(other, key, 1).unwrap_err().to_string(),
            format!("the part report names object `{other}`, which is not the part of worker 1 for that checkpoint")
        );
    }
}
