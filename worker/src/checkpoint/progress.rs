//! Where the application stands, as one worker knows it: the generation it runs, the
//! checkpoint that generation started from, and the newest checkpoint known complete. Durable
//! acknowledgements wait on it; `/status` shows it.

/// Checkpoint progress of one worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub generation: u64,
    /// The checkpoint the current generation started from (0: none).
    pub restored: u64,
    /// The newest checkpoint known complete (at least `restored`).
    pub completed: u64,
}
