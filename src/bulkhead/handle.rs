use std::sync::Arc;
use std::time::Duration;

use super::state::{Shared, MAX_CAPACITY};
use crate::error::{check, ConfigError, MAX_DELAY};

/// Runtime view and control of one bulkhead, from [`BulkheadLayer::handle`] or
/// [`Bulkhead::handle`].
///
/// Figures are read without stopping the bulkhead, so under load they are a moment's
/// approximation (exact when calls are quiet).
///
/// [`BulkheadLayer::handle`]: super::BulkheadLayer::handle
/// [`Bulkhead::handle`]: super::Bulkhead::handle
#[derive(Debug, Clone)]
pub struct BulkheadHandle {
    shared: Arc<Shared>,
}

/// A snapshot of a bulkhead's figures, from [`BulkheadHandle::metrics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BulkheadMetrics {
    /// How many calls may be in flight at once.
    pub capacity: usize,
    /// Calls in flight now (may exceed `capacity` for a while after a shrink).
    pub in_flight: usize,
    /// Permits free now.
    pub available: usize,
    /// Calls waiting for a permit now.
    pub waiting: usize,
    /// Calls rejected since the bulkhead was built (full, queue full, or wait expired).
    pub rejected: u64,
    /// Of those, calls rejected because their maximum wait expired.
    pub expired: u64,
}

impl BulkheadHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// How many calls may be in flight at once.
    pub fn capacity(&self) -> usize {
        self.shared.capacity()
    }

    /// How many calls are in flight.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight()
    }

    /// How many permits are free.
    pub fn available(&self) -> usize {
        self.shared.available()
    }

    /// How many calls wait for a permit.
    pub fn waiting(&self) -> usize {
        self.shared.waiting()
    }

    /// How many calls were rejected, for any reason.
    pub fn rejections(&self) -> u64 {
        self.shared.rejected()
    }

    /// All the figures at once.
    pub fn metrics(&self) -> BulkheadMetrics {
        BulkheadMetrics {
            capacity: self.capacity(),
            in_flight: self.in_flight(),
            available: self.available(),
            waiting: self.waiting(),
            rejected: self.rejections(),
            expired: self.shared.expired(),
        }
    }

    /// Changes how many calls may be in flight, at run time, keeping in-flight calls counted.
    ///
    /// Raising the limit admits waiting calls at once. Lowering it below the calls in flight
    /// lets them finish, and admits nothing until in flight is below the new limit. A call
    /// that races with the change itself may still be admitted under the old limit.
    ///
    /// # Errors
    /// A [`ConfigError`] when `max_concurrent` is zero or above `isize::MAX / 4`; the limit is
    /// then left as it was.
    pub fn set_max_concurrent(&self, max_concurrent: usize) -> Result<(), ConfigError> {
        check::count("bulkhead", "max_concurrent", max_concurrent, MAX_CAPACITY)?;
        self.shared.set_capacity(max_concurrent);
        Ok(())
    }

    /// How long a call that finds the bulkhead full may wait for a permit (zero: rejected at
    /// once).
    pub fn max_wait(&self) -> Duration {
        self.shared.max_wait()
    }

    /// Changes how long a call that finds the bulkhead full may wait for a permit, at run
    /// time, for calls that queue from now on; calls already waiting keep the wait they had.
    /// Zero rejects at once, as reject mode does, until a non-zero wait is set again.
    ///
    /// Only a bulkhead built with a non-zero
    /// [`max_wait`](super::BulkheadBuilder::max_wait) (wait mode) can wait: the two modes
    /// count permits differently, so the mode is fixed when the bulkhead is built. Build with
    /// a non-zero `max_wait` and set it to zero here to start in wait mode without waiting.
    ///
    /// # Errors
    /// A [`ConfigError`] when `max_wait` is longer than a day
    /// ([`MAX_DELAY`](crate::error::MAX_DELAY)), or non-zero on a bulkhead built in reject
    /// mode; the wait is then left as it was.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use seawall::bulkhead::BulkheadLayer;
    ///
    /// let layer = BulkheadLayer::builder()
    ///     .max_wait(Duration::from_millis(100))
    ///     .build()
    ///     .unwrap();
    /// let handle = layer.handle();
    /// handle.set_max_wait(Duration::from_secs(2)).unwrap();
    /// assert_eq!(handle.max_wait(), Duration::from_secs(2));
    /// assert!(handle.set_max_wait(Duration::from_secs(2 * 86_400)).is_err());
    /// ```
    pub fn set_max_wait(&self, max_wait: Duration) -> Result<(), ConfigError> {
        if max_wait > MAX_DELAY {
            return Err(ConfigError::new(
                "bulkhead",
                "max_wait",
                max_wait,
                "0s <= x <= 1 day (86400s)",
            ));
        }
        if !self.shared.waits() {
            if max_wait.is_zero() {
                return Ok(());
            }
            return Err(ConfigError::new(
                "bulkhead",
                "max_wait",
                max_wait,
                "0s on a bulkhead built without `max_wait` (build with one to wait)",
            ));
        }
        self.shared.set_max_wait(max_wait);
        Ok(())
    }
}
