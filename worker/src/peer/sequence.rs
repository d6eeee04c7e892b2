//! The numbers a peer sends on a channel, checked before anything is delivered: batches are
//! numbered 1, 2, 3, … without gaps (a re-sent batch repeats an old number and is skipped),
//! and barriers grow strictly, start above the checkpoint the generation restored, and leave
//! room for the next epoch (`u64::MAX` would overflow it). Pure.

/// What a channel from one peer has delivered in the current generation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ChannelState {
    /// The highest batch delivered (0: none).
    pub seq: u64,
    /// The highest barrier delivered (0: none).
    pub barrier: u64,
}

/// A batch to deliver, or one delivered before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Deliver,
    Duplicate,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    #[error("batch {seq} follows batch {last}: batches are numbered without gaps")]
    Gap { seq: u64, last: u64 },
    #[error("batch number 0 is not used")]
    ZeroSeq,
    #[error("barrier {barrier} does not follow barrier {last}: barriers grow")]
    BarrierBackwards { barrier: u64, last: u64 },
    #[error("barrier {barrier} is not after the checkpoint this generation restored")]
    BarrierRestored { barrier: u64 },
    #[error("barrier {0} is out of range")]
    BarrierRange(u64),
}

/// Checks batch `seq` with barrier `barrier` (0: none) against what `state` delivered, in a
/// generation restored from checkpoint `restored`.
pub(crate) fn check_batch(state: ChannelState, seq: u64, barrier: u64, restored: u64) -> Result<Verdict, WireError> {
    if seq == 0 {
        return Err(WireError::ZeroSeq);
    }
    if seq <= state.seq {
        return Ok(Verdict::Duplicate);
    }
    if seq != state.seq + 1 {
        return Err(WireError::Gap { seq, last: state.seq });
    }
    if barrier != 0 {
        if barrier == u64::MAX {
            return Err(WireError::BarrierRange(barrier));
        }
        if barrier <= restored {
            return Err(WireError::BarrierRestored { barrier });
        }
        if barrier <= state.barrier {
            return Err(WireError::BarrierBackwards {
                barrier,
                last: state.barrier,
            });
        }
    }
    Ok(Verdict::Deliver)
}

impl ChannelState {
    /// The state after delivering batch `seq` (barrier 0: none).
    pub fn after(self, seq: u64, barrier: u64) -> ChannelState {
        ChannelState {
            seq,
            barrier: if barrier == 0 { self.barrier } else { barrier },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_follow_each_other_and_barriers_grow() {
        let s = |seq, barrier| ChannelState { seq, barrier };
        use Verdict::*;
        type Row = (ChannelState, u64, u64, u64, Result<Verdict, WireError>);
        let table: &[Row] = &[
            // (state, seq, barrier, restored, verdict)
            (s(0, 0), 1, 0, 0, Ok(Deliver)),
            (s(4, 0), 5, 0, 0, Ok(Deliver)),
            (s(4, 0), 4, 0, 0, Ok(Duplicate)),
            (s(4, 0), 1, 0, 0, Ok(Duplicate)),
            (s(4, 0), 7, 0, 0, Err(WireError::Gap { seq: 7, last: 4 })),
            (s(4, 0), u64::MAX, 0, 0, Err(WireError::Gap { seq: u64::MAX, last: 4 })),
            (s(0, 0), 0, 0, 0, Err(WireError::ZeroSeq)),
            (s(0, 0), 1, 3, 2, Ok(Deliver)),
            (s(0, 0), 1, 2, 2, Err(WireError::BarrierRestored { barrier: 2 })),
            (s(3, 5), 4, 7, 2, Ok(Deliver)),
            (
                s(3, 5),
                4,
                5,
                2,
                Err(WireError::BarrierBackwards { barrier: 5, last: 5 }),
            ),
            (s(3, 5), 4, u64::MAX, 2, Err(WireError::BarrierRange(u64::MAX))),
            // A duplicate is skipped whatever it carries: it was checked when first delivered.
            (s(3, 5), 2, 1, 2, Ok(Duplicate)),
        ];
        for (i, (state, seq, barrier, restored, want)) in table.iter().enumerate() {
            assert_eq!(&check_batch(*state, *seq, *barrier, *restored), want, "row {i}");
        }
        assert_eq!(s(3, 5).after(4, 0), s(4, 5));
        assert_eq!(s(3, 5).after(4, 6), s(4, 6));
    }
}
