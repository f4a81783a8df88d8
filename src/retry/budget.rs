//! A retry budget: a token bucket shared by every clone, in the spirit of Finagle's
//! `RetryBudget` and Envoy's retry budgets.

use crate::error::ConfigError;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// Fixed-point scale: one retry costs `SCALE` units, one deposit is worth
/// `floor(ratio * SCALE)` units. Rounding down means a budget never grants more than its ratio
/// (tower's `TpsBudget` rounds the cost of a retry down instead, and over-grants: tower#857).
const SCALE: u128 = 1_000_000;
/// Number of slots the TTL window is divided into (as Finagle and tower do).
const SLOTS: usize = 10;
/// Deposits are stamped with the time at least once every `2^COMMIT_SHIFT` deposits.
const COMMIT_SHIFT: u32 = 8;

/// A retry budget shared by every clone: retries may be at most `ratio` of recent requests,
/// plus a floor of `min_per_sec` retries per second.
///
/// Each request deposits `ratio` of a token; each retry withdraws one whole token. Deposits
/// count for `ttl` (in ten slots, as Finagle's `RetryBudget` and tower's `TpsBudget` do); the
/// floor is a standing reserve of `min_per_sec * ttl` tokens, so a service that has just started
/// or sees little traffic can still retry. When the budget is empty a retry is refused and the
/// last response or error is returned as it is.
///
/// Defaults follow Finagle's `RetryBudget` (and tower's `TpsBudget::default`): `ratio` 0.2
/// (20% of requests), `min_per_sec` 10, `ttl` 10 s.
///
/// # Cost
///
/// [`deposit`](Self::deposit) is one relaxed atomic add; it reads no clock and takes no lock,
/// except that once every 256 deposits it reads the clock and *tries* the lock (never waiting)
/// to stamp the deposits with the time. The retry layer batches even that add: each service
/// clone deposits its calls 64 at a time, and when it is dropped. Only
/// [`try_withdraw`](Self::try_withdraw), on the retry path, reads the clock and locks.
///
/// # Accuracy
///
/// A deposit is stamped with the time of the slot in which the budget next looks at the
/// deposit counter (at the next withdrawal, or within 256 deposits), so a deposit may count
/// for up to that much longer than `ttl`. It is never counted twice, and a retry is never
/// granted beyond `floor(ratio * deposits) + reserve` within one window.
///
/// # Clone
///
/// Clones share one bucket; one budget may be given to several layers.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use seawall::retry::RetryBudget;
///
/// let budget = RetryBudget::builder()
///     .ratio(0.5)
///     .min_per_sec(0)
///     .ttl(Duration::from_secs(10))
///     .build()
///     .unwrap();
/// for _ in 0..4 {
///     budget.deposit();
/// }
/// # tokio_test_block_on(async {
/// assert!(budget.try_withdraw());
/// assert!(budget.try_withdraw());
/// assert!(!budget.try_withdraw()); // 4 requests * 0.5 = 2 retries
/// # });
/// # fn tokio_test_block_on(f: impl std::future::Future<Output = ()>) {
/// #     tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Clone)]
pub struct RetryBudget {
    inner: Arc<Inner>,
}

struct Inner {
    /// Cumulative number of deposits.
    deposits: AtomicU64,
    /// Units one deposit is worth.
    deposit_units: u128,
    /// Standing reserve, in retries.
    reserve: u64,
    ratio: f64,
    min_per_sec: u32,
    ttl: Duration,
    slot_len: Duration,
    ring: Mutex<Ring>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// Absolute slot number since `start`; `None` when never used.
    epoch: Option<u64>,
    /// Cumulative deposits when the slot was opened: deposits after it belong to this slot or
    /// a later one.
    base: u64,
    /// Retries granted in this slot.
    withdrawals: u64,
}

#[derive(Debug)]
struct Ring {
    start: Option<Instant>,
    slots: [Slot; SLOTS],
    /// The cumulative deposit count last seen.
    last_seen: u64,
}

impl RetryBudget {
    /// A builder with the defaults (ratio 0.2, 10 retries per second, TTL 10 s).
    pub fn builder() -> RetryBudgetBuilder {
        RetryBudgetBuilder::default()
    }

    /// Counts one request: it adds `ratio` of a retry to the budget.
    pub fn deposit(&self) {
        self.deposit_n(1);
    }

    /// Counts `n` requests at once.
    pub fn deposit_n(&self, n: u64) {
        if n == 0 {
            return;
        }
        let inner = &*self.inner;
        let before = inner.deposits.fetch_add(n, Ordering::Relaxed);
        let after = before.wrapping_add(n);
        if before >> COMMIT_SHIFT != after >> COMMIT_SHIFT {
            // Stamp the deposits so far with the time, if nobody else is doing it right now.
            if let Ok(mut ring) = inner.ring.try_lock() {
                let now = Instant::now();
                ring.observe(now, after, inner.slot_len);
            }
        }
    }

    /// Takes one retry from the budget: `true` when the retry may go ahead.
    ///
    /// Reads the clock and takes a short lock; it is only called when a retry is wanted.
    pub fn try_withdraw(&self) -> bool {
        let (mut ring, epoch, available, withdrawals) = self.current();
        let needed = (u128::from(withdrawals) + 1) * SCALE;
        if available >= needed {
            ring.slots[epoch as usize % SLOTS].withdrawals += 1;
            true
        } else {
            false
        }
    }

    /// How many retries the budget would grant now, rounded down.
    pub fn available(&self) -> u64 {
        let (_ring, _epoch, available, withdrawals) = self.current();
        let spent = u128::from(withdrawals) * SCALE;
        u64::try_from(available.saturating_sub(spent) / SCALE).unwrap_or(u64::MAX)
    }

    /// Locks the ring and brings it up to now: the ring, the current epoch, the units the
    /// window grants (reserve plus unexpired deposits) and the retries it has already taken.
    fn current(&self) -> (MutexGuard<'_, Ring>, u64, u128, u64) {
        let inner = &*self.inner;
        let mut ring = inner.ring.lock().unwrap_or_else(PoisonError::into_inner);
        let seen = inner.deposits.load(Ordering::Relaxed);
        let epoch = ring.observe(Instant::now(), seen, inner.slot_len);
        let (deposits, withdrawals) = ring.window(epoch);
        let available =
            u128::from(inner.reserve) * SCALE + u128::from(deposits) * inner.deposit_units;
        (ring, epoch, available, withdrawals)
    }

    /// The share of requests that may be retried.
    pub fn ratio(&self) -> f64 {
        self.inner.ratio
    }

    /// The floor, in retries per second.
    pub fn min_per_sec(&self) -> u32 {
        self.inner.min_per_sec
    }

    /// How long a deposit counts.
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudgetBuilder::default()
            .build()
            .expect("the defaults are valid")
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryBudget")
            .field("ratio", &self.inner.ratio)
            .field("min_per_sec", &self.inner.min_per_sec)
            .field("ttl", &self.inner.ttl)
            .field("deposits", &self.inner.deposits.load(Ordering::Relaxed))
            .finish()
    }
}

impl Ring {
    /// Looks at the deposit counter at `now`: opens the current slot if needed. Returns the
    /// current slot number.
    fn observe(&mut self, now: Instant, seen: u64, slot_len: Duration) -> u64 {
        let start = *self.start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start).as_nanos();
        let epoch = u64::try_from(elapsed / slot_len.as_nanos().max(1)).unwrap_or(u64::MAX);
        let slot = &mut self.slots[epoch as usize % SLOTS];
        if slot.epoch != Some(epoch) {
            *slot = Slot {
                epoch: Some(epoch),
                base: self.last_seen,
                withdrawals: 0,
            };
        }
        self.last_seen = self.last_seen.max(seen);
        epoch
    }

    /// Deposits and withdrawals within the window that ends in slot `epoch`.
    fn window(&self, epoch: u64) -> (u64, u64) {
        let live = |s: &&Slot| matches!(s.epoch, Some(e) if e <= epoch && e + SLOTS as u64 > epoch);
        let base = self
            .slots
            .iter()
            .filter(live)
            .map(|s| s.base)
            .min()
            .unwrap_or(self.last_seen);
        let withdrawals = self.slots.iter().filter(live).map(|s| s.withdrawals).sum();
        (self.last_seen.saturating_sub(base), withdrawals)
    }
}

/// Builds a [`RetryBudget`]; see there for the defaults.
#[derive(Debug, Clone)]
pub struct RetryBudgetBuilder {
    ratio: f64,
    min_per_sec: u32,
    ttl: Duration,
}

impl Default for RetryBudgetBuilder {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_per_sec: 10,
            ttl: Duration::from_secs(10),
        }
    }
}

impl RetryBudgetBuilder {
    /// Retries allowed per request, `0.0..=1000.0` (0.2 means 20%; Finagle's range). Default 0.2.
    pub fn ratio(mut self, ratio: f64) -> Self {
        self.ratio = ratio;
        self
    }

    /// Retries per second allowed whatever the traffic (the reserve is `min_per_sec * ttl`).
    /// Default 10.
    pub fn min_per_sec(mut self, min_per_sec: u32) -> Self {
        self.min_per_sec = min_per_sec;
        self
    }

    /// How long a deposit counts, 1 s to 60 s (Finagle's range). Default 10 s.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// Checks the values and builds the budget.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field when `ratio` is NaN or outside `0.0..=1000.0`, or
    /// `ttl` is outside 1 s to 60 s.
    pub fn build(self) -> Result<RetryBudget, ConfigError> {
        if !(self.ratio >= 0.0 && self.ratio <= 1000.0) {
            return Err(ConfigError::new(
                "retry",
                "ratio",
                self.ratio,
                "0.0 <= x <= 1000.0",
            ));
        }
        if self.ttl < Duration::from_secs(1) || self.ttl > Duration::from_secs(60) {
            return Err(ConfigError::new("retry", "ttl", self.ttl, "1s <= x <= 60s"));
        }
        // floor(): never grant more than the ratio.
        let deposit_units = (self.ratio * SCALE as f64).floor() as u128;
        let reserve = u64::from(self.min_per_sec).saturating_mul(self.ttl.as_secs());
        Ok(RetryBudget {
            inner: Arc::new(Inner {
                deposits: AtomicU64::new(0),
                deposit_units,
                reserve,
                ratio: self.ratio,
                min_per_sec: self.min_per_sec,
                ttl: self.ttl,
                slot_len: self.ttl / SLOTS as u32,
                ring: Mutex::new(Ring {
                    start: None,
                    slots: [Slot::default(); SLOTS],
                    last_seen: 0,
                }),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(ratio: f64, min_per_sec: u32, ttl_secs: u64) -> RetryBudget {
        RetryBudget::builder()
            .ratio(ratio)
            .min_per_sec(min_per_sec)
            .ttl(Duration::from_secs(ttl_secs))
            .build()
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn fractional_ratio_is_not_rounded_up_unlike_tower_857() {
        let b = budget(0.6, 0, 1);
        for _ in 0..10 {
            b.deposit();
        }
        let granted = (0..10).filter(|_| b.try_withdraw()).count();
        assert_eq!(granted, 6);
    }

    #[tokio::test(start_paused = true)]
    async fn empty_budget_without_floor_grants_nothing() {
        let b = budget(0.2, 0, 1);
        assert!(!b.try_withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn reserve_is_min_per_sec_times_ttl() {
        let b = budget(0.2, 5, 2);
        let granted = (0..100).filter(|_| b.try_withdraw()).count();
        assert_eq!(granted, 10);
        assert_eq!(b.available(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn deposits_expire_after_ttl() {
        let b = budget(1.0, 0, 1);
        b.deposit();
        b.deposit();
        // Look at the counter now, so the deposits are stamped with this time.
        assert_eq!(b.available(), 2);
        tokio::time::advance(Duration::from_millis(1100)).await;
        assert!(!b.try_withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn withdrawals_expire_with_their_window() {
        let b = budget(0.2, 1, 1);
        assert!(b.try_withdraw());
        assert!(!b.try_withdraw());
        tokio::time::advance(Duration::from_millis(1100)).await;
        assert!(b.try_withdraw());
    }

    #[test]
    fn invalid_values_are_config_errors() {
        for r in [f64::NAN, -0.1, 1000.5, f64::INFINITY] {
            let e = RetryBudget::builder().ratio(r).build().unwrap_err();
            assert_eq!(e.field(), "ratio");
        }
        for t in [
            Duration::ZERO,
            Duration::from_millis(999),
            Duration::from_secs(61),
        ] {
            let e = RetryBudget::builder().ttl(t).build().unwrap_err();
            assert_eq!(e.field(), "ttl");
        }
    }
}
