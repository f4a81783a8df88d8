//! Errors the retry layer produces itself.

use std::fmt;
use std::time::Duration;

/// One attempt took longer than the per-attempt timeout and was cancelled.
///
/// The default classifiers count it as a failure, so it is retried while attempts, budget and
/// deadline allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptTimedOut {
    timeout: Duration,
}

impl AttemptTimedOut {
    /// An attempt cancelled after `timeout`.
    pub const fn new(timeout: Duration) -> Self {
        Self { timeout }
    }

    /// The per-attempt timeout that passed.
    pub const fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl fmt::Display for AttemptTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "attempt timed out after {:?}", self.timeout)
    }
}

impl std::error::Error for AttemptTimedOut {}

/// The overall deadline passed while an attempt was in flight; it was cancelled and not
/// retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadlineExceeded {
    deadline: Duration,
}

impl DeadlineExceeded {
    /// The deadline `deadline` (measured from the call) passed.
    pub const fn new(deadline: Duration) -> Self {
        Self { deadline }
    }

    /// The overall deadline that passed.
    pub const fn deadline(&self) -> Duration {
        self.deadline
    }
}

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "retry deadline of {:?} exceeded", self.deadline)
    }
}

impl std::error::Error for DeadlineExceeded {}
