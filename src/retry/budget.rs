//! A retry budget: a token bucket shared by every clone, in the spirit of Finagle's
//! `RetryBudget` and Envoy's retry budgets.
//!
//! Deposits are one atomic add on a cumulative counter; the time is read only when the budget
//! *looks* at the counter (at each withdrawal, and on the deposits that make a look due), and
//! the deposits made since the previous look are then credited to a slot of a ring of ten that
//! covers the TTL. The loom model `retry_budget` checks the ring against concurrent deposits and
//! withdrawals.
//!
//! **Invariant.** Under the ring's lock, `seen` is the value of the deposit counter at the last
//! look: every deposit below it has been credited to exactly one slot (or found already
//! expired), every one above it is still to be credited. A grant is recorded in the slot it
//! was taken in, and is granted only if the window's reserve and deposits cover it.

use crate::error::ConfigError;
use crate::sync::atomic::{AtomicU64, Ordering::Relaxed};
use crate::sync::{lock, Mutex};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Fixed-point scale: one retry costs `SCALE` units, one deposit is worth
/// `floor(ratio * SCALE)` units. Rounding down means a budget never grants more than its ratio
/// (tower's `TpsBudget` rounds the cost of a retry down instead, and over-grants: tower#857).
const SCALE: u128 = 1_000_000;
/// Number of slots the TTL window is divided into (as Finagle and tower do).
const SLOTS: usize = 10;
/// Most deposits between two looks that a deposit makes due.
const MAX_UNSTAMPED: u64 = 64;

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
/// [`deposit`](Self::deposit) is one relaxed atomic add and one load of a word on the same
/// cache line; it takes no lock and reads no clock, except on the deposits that make a look
/// due: every deposit into a slot that is still empty, then every as many deposits as the
/// current slot holds, and at most every 64 deposits. Such a deposit *tries* the lock (never
/// waiting) and reads the clock. The retry layer batches even the add: each service clone
/// deposits its calls 64 at a time, and when it is dropped. [`try_withdraw`](Self::try_withdraw),
/// on the retry path, reads the clock and locks.
///
/// # Accuracy
///
/// A deposit counts for `ttl`, give or take one slot (`ttl / 10`), and never longer than
/// `ttl` plus one slot. The budget knows when deposits were made only to within the time
/// between two looks: deposits made between two looks at most one slot apart are stamped with
/// the later look's slot. After a longer pause between looks (an idle period), the deposits
/// made since the earlier look are stamped with *its* slot: they may be older than the pause,
/// so they count from before it, and may expire early rather than ever count as fresh credit.
/// At a steady rate a look comes at least once per slot (a deposit is due to look once the
/// deposits since the last look match what the current slot holds), so only the deposits
/// right after a pause are stamped early: at most 64 per pause (the deposit that makes a look
/// due is stamped at that look). A deposit is never counted twice, and a retry is never
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
    /// The value of `deposits` at which a deposit looks (beside `deposits`: one cache line).
    next_look: AtomicU64,
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
    /// Deposits credited to this slot.
    deposits: u64,
    /// Retries granted in this slot.
    withdrawals: u64,
}

#[derive(Debug)]
struct Ring {
    start: Option<Instant>,
    slots: [Slot; SLOTS],
    /// The deposit counter at the last look: every deposit below it is credited.
    seen: u64,
    /// The time and the slot number of the last look.
    last: Option<(Instant, u64)>,
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
        self.deposit_with(n, Instant::now);
    }

    /// [`deposit_n`](Self::deposit_n), reading the time from `clock` if it looks.
    #[inline]
    pub(crate) fn deposit_with(&self, n: u64, clock: impl FnOnce() -> Instant) {
        if n == 0 {
            return;
        }
        let inner = &*self.inner;
        let before = inner.deposits.fetch_add(n, Relaxed);
        if before.wrapping_add(n) >= inner.next_look.load(Relaxed) {
            self.look_after_deposit(before, n, clock);
        }
    }

    /// A deposit of `n` that made a look due, the counter at `before` just before it. Skipped
    /// if another thread is looking: its look, or the next one, credits this deposit.
    #[cold]
    #[inline(never)]
    fn look_after_deposit(&self, before: u64, n: u64, clock: impl FnOnce() -> Instant) {
        let inner = &*self.inner;
        let Ok(mut ring) = inner.ring.try_lock() else {
            return;
        };
        let count = inner.deposits.load(Relaxed);
        // This deposit is made now, if no look has credited it yet.
        let mine = if before >= ring.seen { n } else { 0 };
        ring.look(clock(), count, mine, inner);
    }

    /// Takes one retry from the budget: `true` when the retry may go ahead.
    ///
    /// Reads the clock and takes a short lock; it is only called when a retry is wanted.
    pub fn try_withdraw(&self) -> bool {
        self.try_withdraw_with(Instant::now)
    }

    /// [`try_withdraw`](Self::try_withdraw) at the time `clock` reads (under the lock).
    pub(crate) fn try_withdraw_with(&self, clock: impl FnOnce() -> Instant) -> bool {
        let inner = &*self.inner;
        let mut ring = lock(&inner.ring);
        let count = inner.deposits.load(Relaxed);
        let epoch = ring.look(clock(), count, 0, inner);
        let (available, withdrawals) = ring.window(epoch, inner);
        if available >= (u128::from(withdrawals) + 1) * SCALE {
            ring.current(epoch).withdrawals += 1;
            true
        } else {
            false
        }
    }

    /// How many retries the budget would grant now, rounded down.
    pub fn available(&self) -> u64 {
        self.available_with(Instant::now)
    }

    /// [`available`](Self::available) at the time `clock` reads (under the lock).
    pub(crate) fn available_with(&self, clock: impl FnOnce() -> Instant) -> u64 {
        let inner = &*self.inner;
        let mut ring = lock(&inner.ring);
        let count = inner.deposits.load(Relaxed);
        let epoch = ring.look(clock(), count, 0, inner);
        let (available, withdrawals) = ring.window(epoch, inner);
        let spent = u128::from(withdrawals) * SCALE;
        u64::try_from(available.saturating_sub(spent) / SCALE).unwrap_or(u64::MAX)
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
            .field("deposits", &self.inner.deposits.load(Relaxed))
            .finish()
    }
}

impl Ring {
    /// Looks at the deposit counter, which reads `count`, at `now`: credits the deposits made
    /// since the last look (`mine` of them made now), sets when the next deposit looks, and
    /// returns the current slot number.
    fn look(&mut self, now: Instant, count: u64, mine: u64, inner: &Inner) -> u64 {
        let start = *self.start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start).as_nanos();
        let epoch = u64::try_from(elapsed / inner.slot_len.as_nanos().max(1)).unwrap_or(u64::MAX);
        // Threads read the clock before they get the lock: time seen here may go back a little.
        let (last_time, last_epoch) = self.last.unwrap_or((now, epoch));
        let epoch = epoch.max(last_epoch);
        // Loads under the lock see the counter's values in order.
        debug_assert!(count >= self.seen, "the deposit counter went back");
        let pending = count.saturating_sub(self.seen);
        let mine = mine.min(pending);
        // The others were made between the last look and now. Within one slot of it, stamp
        // them now; after a longer pause they may be as old as the last look: stamp them with
        // its slot, so that they never count for longer than their TTL.
        let stale_epoch = if now.saturating_duration_since(last_time) <= inner.slot_len {
            epoch
        } else {
            last_epoch
        };
        self.current(epoch);
        self.credit(stale_epoch, pending - mine, epoch);
        self.credit(epoch, mine, epoch);
        self.seen = count.max(self.seen);
        self.last = Some((now.max(last_time), epoch));
        let due = self
            .seen
            .saturating_add(self.deposits_until_next_look(elapsed, epoch, inner));
        inner.next_look.store(due, Relaxed);
        epoch
    }

    /// How many deposits from now the next one looks: about half a slot's worth at the rate
    /// of the current and the previous slot, so that at a steady rate looks come at most one
    /// slot apart; and, in the first slot, no more than have come so far (the rate of a few
    /// deposits in a short time says little).
    fn deposits_until_next_look(&self, elapsed: u128, epoch: u64, inner: &Inner) -> u64 {
        let slot_ns = inner.slot_len.as_nanos().max(1);
        let deposits = |e: u64| {
            let slot = &self.slots[(e % SLOTS as u64) as usize];
            if slot.epoch == Some(e) {
                slot.deposits
            } else {
                0
            }
        };
        let recent = deposits(epoch) + epoch.checked_sub(1).map_or(0, deposits);
        // The time the two slots have run (the first slot: the time since the start).
        let span = elapsed.saturating_sub(u128::from(epoch.saturating_sub(1)) * slot_ns);
        let half_a_slot = match span {
            0 => u128::from(recent),
            span => u128::from(recent) * slot_ns / (2 * span),
        };
        let n = half_a_slot.min(u128::from(recent));
        u64::try_from(n).unwrap_or(u64::MAX).clamp(1, MAX_UNSTAMPED)
    }

    /// The slot of the current slot number `epoch`, opened if it was not.
    fn current(&mut self, epoch: u64) -> &mut Slot {
        let slot = &mut self.slots[(epoch % SLOTS as u64) as usize];
        if slot.epoch != Some(epoch) {
            // The ring held an expired slot here (`epoch - SLOTS` or older).
            *slot = Slot {
                epoch: Some(epoch),
                ..Slot::default()
            };
        }
        slot
    }

    /// Credits `n` deposits to the slot numbered `epoch`, the current one being `now`. A slot
    /// out of the window has expired: its deposits count for nothing.
    fn credit(&mut self, epoch: u64, n: u64, now: u64) {
        if n == 0 || epoch.saturating_add(SLOTS as u64) <= now {
            return;
        }
        // A slot within the window: the ring's place for it holds it, or an expired one.
        self.current(epoch).deposits += n;
    }

    /// The units the window that ends in slot `epoch` grants (reserve and deposits), and the
    /// retries it has already granted.
    fn window(&self, epoch: u64, inner: &Inner) -> (u128, u64) {
        let live = |s: &&Slot| matches!(s.epoch, Some(e) if e <= epoch && e + SLOTS as u64 > epoch);
        let deposits: u64 = self.slots.iter().filter(live).map(|s| s.deposits).sum();
        let withdrawals = self.slots.iter().filter(live).map(|s| s.withdrawals).sum();
        let units = u128::from(inner.reserve) * SCALE + u128::from(deposits) * inner.deposit_units;
        (units, withdrawals)
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
                // The first deposit looks: it starts the ring.
                next_look: AtomicU64::new(1),
                deposit_units,
                reserve,
                ratio: self.ratio,
                min_per_sec: self.min_per_sec,
                ttl: self.ttl,
                slot_len: self.ttl / SLOTS as u32,
                ring: Mutex::new(Ring {
                    start: None,
                    slots: [Slot::default(); SLOTS],
                    seen: 0,
                    last: None,
                }),
            }),
        })
    }
}

#[cfg(all(test, not(seawall_loom)))]
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

    const SLOT: Duration = Duration::from_millis(100);

    #[tokio::test(start_paused = true)]
    async fn deposits_made_before_an_idle_period_are_no_credit_after_ttl_and_one_slot() {
        // Deposits counted at a look and deposits still unstamped when the idle period starts
        // (any count up to past 64 leaves some of each).
        for k in [1, 2, 3, 7, 64, 100, 255, 300] {
            let (early, late) = (budget(1.0, 0, 1), budget(1.0, 0, 1));
            for _ in 0..k {
                early.deposit();
                late.deposit();
            }
            tokio::time::advance(Duration::from_secs(1) - SLOT).await;
            assert_eq!(
                early.available(),
                k,
                "{k} deposits count for ttl - one slot"
            );
            tokio::time::advance(2 * SLOT).await;
            assert_eq!(
                late.available(),
                0,
                "{k} deposits counted after ttl + one slot"
            );
            assert!(!late.try_withdraw());
        }
    }

    /// Deposits one every `every`, for `span`, checking every 250 ms that the budget counts
    /// at least those made within `ttl - one slot` and at most those within `ttl + one slot`.
    async fn deposit_steadily_and_check_the_window(every: Duration, span: Duration) {
        let b = budget(1.0, 0, 1);
        let ttl = Duration::from_secs(1);
        let start = Instant::now();
        let mut made: Vec<Instant> = Vec::new();
        let mut next_check = start + Duration::from_millis(250);
        while start.elapsed() < span {
            b.deposit();
            made.push(Instant::now());
            tokio::time::advance(every).await;
            let now = Instant::now();
            if now >= next_check {
                next_check += Duration::from_millis(250);
                let within = |age: Duration| made.iter().filter(|&&t| now - t < age).count();
                let counted = b.available() as usize;
                let (low, high) = (within(ttl - SLOT), within(ttl + SLOT));
                assert!(
                    (low..=high).contains(&counted),
                    "every {every:?}, at {:?}: {counted} counted, {low}..={high} expected",
                    now - start
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn at_a_steady_rate_deposits_count_for_ttl_give_or_take_one_slot() {
        for ms in [1, 7, 30, 150] {
            let every = Duration::from_millis(ms);
            deposit_steadily_and_check_the_window(every, Duration::from_secs(3)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn after_an_idle_period_at_most_64_fresh_deposits_are_stamped_early() {
        let b = budget(1.0, 0, 1);
        for _ in 0..1000 {
            b.deposit();
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        tokio::time::advance(Duration::from_secs(3)).await;
        for _ in 0..200 {
            b.deposit();
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        let counted = b.available();
        assert!(
            (200 - 64..=200).contains(&counted),
            "{counted} of 200 fresh deposits counted"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_deposited_after_an_idle_period_counts_in_full() {
        let b = budget(1.0, 0, 1);
        for _ in 0..10 {
            b.deposit_n(64);
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        tokio::time::advance(Duration::from_secs(3)).await;
        b.deposit_n(64);
        assert_eq!(b.available(), 64);
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
