use super::key::{Global, KeyExtractor};
use super::state::Shared;
use crate::error::ConfigError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Runtime control and metrics of one rate limit: from [`RateLimitLayer::handle`] or
/// [`RateLimit::handle`].
///
/// Cheap to clone; every clone sees the same limit.
///
/// [`RateLimitLayer::handle`]: super::RateLimitLayer::handle
/// [`RateLimit::handle`]: super::RateLimit::handle
pub struct RateLimitHandle<K: KeyExtractor = Global> {
    shared: Arc<Shared<K>>,
}

impl<K: KeyExtractor> RateLimitHandle<K> {
    pub(crate) fn new(shared: Arc<Shared<K>>) -> Self {
        Self { shared }
    }

    /// The configured rate: `n` calls per period.
    pub fn rate(&self) -> (u32, Duration) {
        self.shared.rate()
    }

    /// The configured burst.
    pub fn burst(&self) -> u32 {
        self.shared.params().burst as u32
    }

    /// Changes the rate, live: calls decided from now on use it. Each bucket keeps the calls it
    /// has spent, and gets them back at the new rate (one key-table pass, under each shard's
    /// read lock). A call decided while the change is under way may be judged by the old rate
    /// or the new one: around the change a bucket may admit one call more or fewer.
    ///
    /// # Errors
    /// As [`RateLimitBuilder::build`](super::RateLimitBuilder::build), and the limit keeps its
    /// rate.
    pub fn set_rate(&self, n: u32, per: Duration) -> Result<(), ConfigError> {
        self.shared.set_rate(n, per)
    }

    /// Changes the burst, live.
    ///
    /// # Errors
    /// As [`RateLimitBuilder::build`](super::RateLimitBuilder::build), and the limit keeps its
    /// burst.
    pub fn set_burst(&self, burst: u32) -> Result<(), ConfigError> {
        self.shared.set_burst(burst)
    }

    /// Calls the default bucket (the whole limit, for an unkeyed limiter) would admit now.
    pub fn remaining(&self) -> u32 {
        self.remaining_at(None)
    }

    /// Calls `key` would be admitted now (the burst for a key not in the table).
    pub fn remaining_for(&self, key: &K::Key) -> u32 {
        self.remaining_at(Some(key))
    }

    fn remaining_at(&self, key: Option<&K::Key>) -> u32 {
        let tat = self.shared.tat(key);
        let now = self.shared.clock.now();
        self.shared.params().remaining(tat, now) as u32
    }

    /// Calls admitted so far (waiting ones included), exactly.
    pub fn allowed(&self) -> u64 {
        self.shared.allowed()
    }

    /// Calls rejected so far, exactly.
    pub fn limited(&self) -> u64 {
        self.shared.limited()
    }

    /// Keys in the table now.
    pub fn keys(&self) -> usize {
        self.shared.store.len()
    }

    /// The bound on [`keys`](Self::keys).
    pub fn max_keys(&self) -> usize {
        self.shared.store.max_keys()
    }

    /// New keys that found the table full (no key idle) and used the default bucket.
    pub fn overflowed(&self) -> u64 {
        self.shared.store.overflowed()
    }

    /// Drops every idle key now (one whose allowance is whole again: dropping it changes no
    /// decision) and returns how many. The table also does this by itself when it is full.
    pub fn sweep(&self) -> usize {
        let now = self.shared.clock.now();
        self.shared.store.sweep(now)
    }
}

impl<K: KeyExtractor> Clone for RateLimitHandle<K> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K: KeyExtractor + fmt::Debug> fmt::Debug for RateLimitHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitHandle")
            .field("shared", &self.shared)
            .finish()
    }
}
