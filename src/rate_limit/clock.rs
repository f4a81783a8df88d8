//! The limiter's clock: `tokio::time`'s notion of now, read for the price of a TSC read.
//!
//! Every decision needs the current time: the GCRA's new theoretical arrival time is
//! `max(tat, now) + T`, and no bound on `now` short of reading a clock keeps that exact.
//! `tokio::time::Instant::now()` is a `clock_gettime` (about 31 ns on the reference VM), twice
//! the cost of a whole governor `check()`. So the clock has two sources:
//!
//! - **Live time** (the usual case): a TSC read through `quanta`, converted to
//!   nanoseconds and anchored to `tokio::time::Instant`. At most once per millisecond of TSC
//!   time, one caller reads tokio's clock as well, re-anchors (so NTP slewing never makes the two
//!   drift apart) and checks that tokio's clock still moves with the TSC.
//! - **Paused time** (`tokio::time::pause`, `#[tokio::test(start_paused = true)]`): tokio's
//!   clock no longer moves with the TSC. Once the clock sees that, at build time or at one of its
//!   checks, it reads `tokio::time::Instant::now()` on every call from then on, so `advance` and
//!   auto-advance drive the limiter exactly. A limiter that saw paused time keeps this mode.
//!
//! Pause detection at build: tokio's clock is read twice around a 2 µs spin on `std`'s clock;
//! a paused clock returns the same instant both times. The first live limiter of a process
//! calibrates the TSC against the OS clock (`quanta`, once, up to 200 ms, as governor's
//! default clock does). Build the layer inside the paused
//! runtime (or pause before building it) for exact tests from the first call; a pause that
//! comes later is seen at the next check, within a millisecond of real time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::time::Instant;

/// How often, in TSC time, the fast source is checked against tokio's clock.
const CHECK_EVERY: Duration = Duration::from_millis(1);
/// Disagreement allowed between the two sources at a check, on top of 0.5 % of the time since
/// the last check (NTP slews `CLOCK_MONOTONIC` by at most 0.05 %; a paused clock disagrees by
/// 100 %).
const TOLERANCE_NS: u64 = 50_000;
/// A check whose two TSC reads are further apart than this was preempted: it is not trusted.
const CLEAN_READ_NS: u64 = 10_000;

pub(crate) struct Clock {
    base: Instant,
    tsc: quanta::Clock,
    raw_base: u64,
    /// Nanoseconds since `base` at `raw_base`, corrected at every check (wrapping `i64`).
    offset: AtomicU64,
    /// The raw TSC value at which the next check is due.
    next_check: AtomicU64,
    /// Raw TSC value of the last check.
    last_check: AtomicU64,
    check_every: u64,
    /// Nanoseconds per 2^SCALE_SHIFT raw ticks.
    scale: u64,
    paused: AtomicBool,
}

const SCALE_SHIFT: u32 = 32;

impl Clock {
    pub(crate) fn new() -> Self {
        if tokio_clock_is_paused(Instant::now()) {
            // Paused for good (the mode is sticky): the TSC will never be read, so skip its
            // calibration (up to 200 ms, once per process).
            return Self::with_source(quanta::Clock::mock().0, Some(true));
        }
        Self::with_source(quanta::Clock::new(), Some(false))
    }

    /// A clock on `tsc`; `paused` overrides the detection (tests drive a mock TSC with it).
    pub(crate) fn with_source(tsc: quanta::Clock, paused: Option<bool>) -> Self {
        let base = Instant::now();
        let raw_base = tsc.raw();
        // quanta's calibration as a fixed-point factor: nanoseconds per 2^32 ticks.
        let span: u64 = 1 << SCALE_SHIFT;
        let span_ns = tsc.delta_as_nanos(0, span).max(1);
        // Raw ticks per CHECK_EVERY: the inverse.
        let check_every = ((span as u128 * CHECK_EVERY.as_nanos()) / span_ns as u128)
            .clamp(1, u64::MAX as u128) as u64;
        let paused = paused.unwrap_or_else(|| tokio_clock_is_paused(base));
        if paused {
            tracing::debug!(target: "seawall::rate_limit", "tokio time is paused; reading tokio's clock on every call");
        }
        Self {
            base,
            tsc,
            raw_base,
            offset: AtomicU64::new(0),
            next_check: AtomicU64::new(if paused {
                0
            } else {
                raw_base.wrapping_add(check_every)
            }),
            scale: span_ns,
            last_check: AtomicU64::new(raw_base),
            check_every,
            paused: AtomicBool::new(paused),
        }
    }

    /// Nanoseconds since the clock was built, in `tokio::time`'s terms.
    #[inline]
    pub(crate) fn now(&self) -> u64 {
        let raw = self.tsc.raw();
        // `next_check` is 0 once paused time was seen, so one comparison covers both.
        let due = self.next_check.load(Relaxed);
        if raw >= due {
            return self.slow(raw, due);
        }
        self.fast(raw)
    }

    /// The tokio instant `nanos` after the base.
    pub(crate) fn instant(&self, nanos: u64) -> Instant {
        self.base + Duration::from_nanos(nanos)
    }

    /// Whether the clock reads tokio's clock on every call (it saw paused time).
    pub(crate) fn is_exact(&self) -> bool {
        self.paused.load(Relaxed)
    }

    /// Raw TSC ticks since `raw_base` in nanoseconds: quanta's calibration, applied inline
    /// (one multiply and shift, no call).
    #[inline]
    fn scaled(&self, raw: u64) -> u64 {
        let ticks = raw.saturating_sub(self.raw_base);
        ((u128::from(ticks) * u128::from(self.scale)) >> SCALE_SHIFT) as u64
    }

    #[inline]
    fn fast(&self, raw: u64) -> u64 {
        self.offset.load(Relaxed).wrapping_add(self.scaled(raw))
    }

    fn tokio_now(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.base))
    }

    #[cold]
    #[inline(never)]
    fn slow(&self, raw: u64, due: u64) -> u64 {
        if self.paused.load(Relaxed) {
            return self.tokio_now();
        }
        self.check(raw, due)
    }

    /// Reads tokio's clock, and either re-anchors the fast source to it or, when the two
    /// disagree, switches to tokio's clock for good. Returns tokio's time: it is the truth.
    fn check(&self, raw: u64, due: u64) -> u64 {
        // Push the next check out first, so that other callers keep to the fast path. Only
        // from the value seen: a concurrent switch to paused time (0) must stay.
        let next = raw.wrapping_add(self.check_every);
        if self
            .next_check
            .compare_exchange(due, next, Relaxed, Relaxed)
            .is_err()
        {
            return self.now_after_race();
        }
        let truth = self.tokio_now();
        let raw_after = self.tsc.raw();
        if self.tsc.delta_as_nanos(raw, raw_after) > CLEAN_READ_NS {
            // Preempted between the reads: the comparison would mean nothing. Check again soon.
            let _ = self
                .next_check
                .compare_exchange(next, raw_after, Relaxed, Relaxed);
            return truth;
        }
        let estimate = self.fast(raw);
        let since_last = self.tsc.delta_as_nanos(self.last_check.load(Relaxed), raw);
        let tolerance = TOLERANCE_NS + since_last / 200;
        if truth.abs_diff(estimate) > tolerance {
            self.paused.store(true, Relaxed);
            self.next_check.store(0, Relaxed);
            tracing::debug!(
                target: "seawall::rate_limit",
                tokio_ns = truth,
                tsc_ns = estimate,
                "tokio time no longer follows the TSC (paused?); reading tokio's clock on every call"
            );
        } else {
            let offset = truth.wrapping_sub(self.scaled(raw));
            self.offset.store(offset, Relaxed);
            self.last_check.store(raw, Relaxed);
        }
        truth
    }

    /// Another caller is checking (or saw paused time): read tokio's clock this once.
    fn now_after_race(&self) -> u64 {
        self.tokio_now()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Clock")
            .field("base", &self.base)
            .field("tokio_every_call", &self.is_exact())
            .finish_non_exhaustive()
    }
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A paused tokio clock returns the same instant before and after real time has passed.
fn tokio_clock_is_paused(first: Instant) -> bool {
    let spin = std::time::Instant::now();
    while spin.elapsed() < Duration::from_micros(2) {
        std::hint::spin_loop();
    }
    Instant::now() == first
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paused_time_is_seen_at_build_and_followed_exactly() {
        let clock = Clock::new();
        assert!(clock.is_exact());
        assert_eq!(clock.now(), 0);
        tokio::time::advance(Duration::from_millis(1500)).await;
        assert_eq!(clock.now(), 1_500_000_000);
    }

    // Tokio's clock is paused here only so that the test controls it; the clock is told it is
    // live and its TSC is a mock, so both sides move only when the test says.
    #[tokio::test(start_paused = true)]
    async fn live_time_reads_the_tsc_and_reanchors_at_checks() {
        let (tsc, mock) = quanta::Clock::mock();
        let clock = Clock::with_source(tsc, Some(false));
        assert_eq!(clock.now(), 0);
        mock.increment(Duration::from_micros(400));
        assert_eq!(clock.now(), 400_000, "fast path between checks");
        // Tokio drifts 30 us ahead (within tolerance); the check re-anchors to tokio.
        mock.increment(Duration::from_micros(700));
        tokio::time::advance(Duration::from_micros(1130)).await;
        assert_eq!(clock.now(), 1_130_000);
        assert!(!clock.is_exact());
        mock.increment(Duration::from_micros(100));
        assert_eq!(clock.now(), 1_230_000, "anchored to tokio's time");
    }

    #[tokio::test(start_paused = true)]
    async fn a_clock_that_stops_following_the_tsc_is_read_on_every_call() {
        let (tsc, mock) = quanta::Clock::mock();
        let clock = Clock::with_source(tsc, Some(false));
        mock.increment(Duration::from_millis(2));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(clock.now(), 10_000_000_000);
        assert!(clock.is_exact());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(clock.now(), 11_000_000_000);
    }
}
