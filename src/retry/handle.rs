//! Runtime view of a retry layer: metrics, the budget, retry events.

use super::budget::RetryBudget;
use super::shared::CoreRef;
use std::error::Error as StdError;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    /// First attempts, published by each service clone in batches (see `RetryMetrics::attempts`).
    pub(crate) calls: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) budget_rejections: AtomicU64,
    pub(crate) exhausted: AtomicU64,
    pub(crate) succeeded_after_retry: AtomicU64,
}

/// A snapshot of a retry layer's counters, from [`RetryHandle::metrics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RetryMetrics {
    /// Attempts made: first attempts plus retries.
    ///
    /// First attempts are counted by each service clone locally and published 64 at a
    /// time, and when the clone is dropped (so the success path writes no shared counter);
    /// a live clone may have up to 63 calls not yet counted here.
    pub attempts: u64,
    /// Retries made (attempts after the first), counted when each one starts: a retry whose
    /// call was dropped during the backoff is not counted (nor is its budget token spent).
    pub retries: u64,
    /// Retries the budget refused; the last response or error was returned instead.
    pub budget_rejections: u64,
    /// Calls that used every attempt and still failed.
    pub exhausted: u64,
    /// Calls whose answer came from a retry and was not a failure: the calls the retries
    /// saved (Resilience4j's `numberOfSuccessfulCallsWithRetryAttempt`). Calls that succeed
    /// on their first attempt are `attempts - retries` minus the failures, and are not
    /// counted here, so the success path writes nothing.
    pub succeeded_after_retry: u64,
}

/// Runtime control of a retry layer: metrics and the budget. Every clone of the layer and of
/// its services reports to the same handle.
///
/// # Example
///
/// ```
/// use seawall::retry::RetryLayer;
///
/// let layer = RetryLayer::builder().build().unwrap();
/// let handle = layer.handle();
/// assert_eq!(handle.metrics().retries, 0);
/// ```
#[derive(Debug, Clone)]
pub struct RetryHandle {
    core: CoreRef,
}

impl RetryHandle {
    pub(crate) fn new(core: CoreRef) -> Self {
        Self { core }
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> RetryMetrics {
        let m = &self.core.metrics;
        let retries = m.retries.load(Ordering::Relaxed);
        RetryMetrics {
            attempts: m.calls.load(Ordering::Relaxed) + retries,
            retries,
            budget_rejections: m.budget_rejections.load(Ordering::Relaxed),
            exhausted: m.exhausted.load(Ordering::Relaxed),
            succeeded_after_retry: m.succeeded_after_retry.load(Ordering::Relaxed),
        }
    }

    /// The layer's retry budget, if it has one.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.core.budget.as_ref()
    }

    /// The most attempts one call makes, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.core.config.max_attempts
    }
}

/// Why an attempt is being retried, for logs and [`RetryEvent`]s.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Reason<'a> {
    /// The attempt failed with this error.
    Error(&'a (dyn StdError + Send + Sync + 'static)),
    /// The response had this HTTP status.
    Status(u16),
    /// The response was classified as a failure.
    Response,
}

impl fmt::Display for Reason<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Error(e) => write!(f, "error: {e}"),
            Reason::Status(s) => write!(f, "status {s}"),
            Reason::Response => f.write_str("response classified as a failure"),
        }
    }
}

/// One retry about to happen, given to the `on_retry` hook of
/// [`RetryLayerBuilder`](super::RetryLayerBuilder::on_retry).
#[derive(Debug, Clone, Copy)]
pub struct RetryEvent<'a> {
    pub(crate) attempt: u32,
    pub(crate) delay: Duration,
    pub(crate) reason: Reason<'a>,
    pub(crate) server_hint: Option<Duration>,
}

impl<'a> RetryEvent<'a> {
    /// The attempt that failed, counted from 1 (the next attempt is `attempt() + 1`).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// How long the layer waits before the next attempt.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// Why the attempt is retried.
    pub fn reason(&self) -> Reason<'a> {
        self.reason
    }

    /// The wait asked for by the server (`Retry-After`) or by a seawall rejection, before the
    /// cap, if any.
    pub fn server_hint(&self) -> Option<Duration> {
        self.server_hint
    }
}
