//! The breaker's state machine and its shared state.
//!
//! One `AtomicU64` word holds the state, a small counter per state and an epoch:
//!
//! ```text
//! bits  0..3   state: CLOSED, OPEN, HALF_OPEN, FORCED_OPEN, DISABLED
//! bits  3..16  a: CLOSED: consecutive failures; HALF_OPEN: probe slots taken
//! bits 32..64  epoch: +1 on every change of state
//! ```
//!
//! **Invariants.** (1) Changes of state take the `control` mutex and publish a new word with a
//! new epoch; counters change by compare-and-swap on the word, only within one state and epoch.
//! (2) Half-open admits at most `half_open_probes` probes per epoch: a slot is taken by a CAS
//! that checks `a < probes`, and given back (a CAS that decrements) only by a probe that ends
//! without an outcome (dropped, or ignored), so no slot is lost and none is counted twice.
//! (3) Every call remembers the epoch it was admitted in; an outcome from an earlier epoch no
//! longer counts. The loom models `breaker_state` check (2) and that a trip happens exactly
//! once per closed period.
//!
//! Half-open judges its probes as Resilience4j does: once their outcomes decide it, the
//! breaker reopens when the probes' failure (or slow-call) rate reaches the threshold and
//! closes otherwise. Probe outcomes are tallied under the `control` mutex (probes are few).
//!
//! Per-call counters live in [`Striped`] cells, exact at any thread count
//! ([`crate::stripe`]).

use super::config::{Config, Policy, Window};
use super::handle::{Metrics, State, StateChange};
use super::window::{CountWindow, Tally, TimeWindow};
use crate::classify::Outcome;
use crate::error::CircuitOpen;
use crate::events::EventKind;
use crate::splitmix::{mix, GAMMA};
use crate::stripe::{self, CachePadded, Counter, Striped};
use crate::sync::atomic::{AtomicU64, Ordering};
use crate::sync::{lock, Mutex};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::fmt;
use std::time::Duration;
use tokio::sync::broadcast;
use tokio::time::Instant;

/// The layer's name in events.
const TARGET_LAYER: &str = "circuit_breaker";
const TARGET: &str = "seawall::circuit_breaker";

pub(crate) const CLOSED: u64 = 0;
pub(crate) const OPEN: u64 = 1;
pub(crate) const HALF_OPEN: u64 = 2;
pub(crate) const FORCED_OPEN: u64 = 3;
pub(crate) const DISABLED: u64 = 4;

const STATE_BITS: u64 = 0b111;
const A_SHIFT: u32 = 3;
const FIELD: u64 = 0x1FFF;
const EPOCH_SHIFT: u32 = 32;
const A_ONE: u64 = 1 << A_SHIFT;

/// The probes' failure rate that reopens a half-open breaker whose policy has no rate
/// (consecutive failures): a majority of failed probes. With one probe (the preset), the
/// probe decides alone, as in Polly.
const CONSECUTIVE_PROBE_RATE: f64 = 0.5;

#[inline]
fn state_of(w: u64) -> u64 {
    w & STATE_BITS
}
#[inline]
fn field_a(w: u64) -> u32 {
    ((w >> A_SHIFT) & FIELD) as u32
}
#[inline]
fn epoch_of(w: u64) -> u32 {
    (w >> EPOCH_SHIFT) as u32
}
#[inline]
fn same_phase(w: u64, state: u64, epoch: u32) -> bool {
    state_of(w) == state && epoch_of(w) == epoch
}

fn state_name(s: u64) -> State {
    match s {
        CLOSED => State::Closed,
        OPEN => State::Open,
        HALF_OPEN => State::HalfOpen,
        FORCED_OPEN => State::ForcedOpen,
        _ => State::Disabled,
    }
}

/// What a call was admitted as; its outcome is recorded accordingly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// A call in the closed state of the given epoch: counts towards tripping.
    Closed(u32),
    /// A half-open probe of the given epoch: holds a probe slot.
    Probe(u32),
    /// The breaker is disabled: only the metrics see it.
    Untracked,
}

/// The per-call counters of one stripe; the metrics are their sums.
#[derive(Debug, Default)]
struct Counters {
    /// Calls that ended with a success or a failure.
    calls: Counter,
    ignored: Counter,
    failures: Counter,
    slow: Counter,
    rejections: Counter,
}

/// The window of a rate policy.
#[derive(Debug)]
enum Rates {
    // Boxed: its sequence sits on cache lines of its own.
    Count(Box<CountWindow>),
    Time(TimeWindow),
    /// Consecutive failures: no window.
    None,
}

/// Adaptive throttling: the current rejection probability, kept up to date by every outcome
/// that can change it, and a random stream to draw against it.
#[derive(Debug)]
struct Throttle {
    k: f64,
    minimum_calls: u64,
    /// The probability's `f64` bits; 0 while nothing is rejected.
    p: AtomicU64,
    /// A SplitMix64 stream: each draw advances it by one `fetch_add`.
    rng: AtomicU64,
}

impl Throttle {
    #[inline]
    fn probability(&self) -> f64 {
        f64::from_bits(self.p.load(Ordering::Relaxed))
    }

    fn update(&self, t: Tally) {
        let p = if t.calls < self.minimum_calls {
            0.0
        } else {
            rejection_probability(t.calls, t.calls - t.failures, self.k)
        };
        self.p.store(p.to_bits(), Ordering::Relaxed);
    }

    /// A uniform draw in `[0, 1)`.
    fn draw(&self) -> f64 {
        let z = self
            .rng
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA);
        (mix(z) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Google SRE's client-side throttling: the probability of rejecting a request locally, given
/// the requests and the accepts of the window, `max(0, (requests - k * accepts) / (requests +
/// 1))`.
pub(crate) fn rejection_probability(requests: u64, accepts: u64, k: f64) -> f64 {
    let (requests, accepts) = (requests as f64, accepts as f64);
    ((requests - k * accepts) / (requests + 1.0)).clamp(0.0, 1.0)
}

/// Counts summed over the stripes.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    calls: u64,
    ignored: u64,
    failures: u64,
    slow: u64,
    rejections: u64,
}

/// The probes of the current half-open epoch that ended with an outcome.
#[derive(Debug, Default, Clone, Copy)]
struct Probes {
    epoch: u32,
    done: u32,
    failed: u32,
    slow: u32,
}

/// What changes of state need, behind the mutex.
#[derive(Debug)]
struct Control {
    /// Trips in a row (each reopening from half-open counts): the open duration grows with
    /// them. Forgotten once the breaker has stayed closed for the longest open duration.
    trips: u32,
    /// When the breaker last closed.
    closed_at: Option<Instant>,
    rng: SmallRng,
    /// Totals at the last `reset`, subtracted from the metrics.
    metrics_base: Totals,
    probes: Probes,
    /// The window that opened the breaker, shown by the metrics until it closes again.
    tripped_on: Option<Tally>,
}

/// The shared state of one breaker.
pub(crate) struct Core {
    word: CachePadded<AtomicU64>,
    /// Microseconds since `base` until which the breaker stays open (written before the word
    /// that publishes OPEN).
    open_until: AtomicU64,
    /// Microseconds since `base` when the breaker last half-opened (written before the word
    /// that publishes HALF_OPEN).
    half_open_since: AtomicU64,
    /// This breaker, for the timer that half-opens it (set once the `Arc` exists).
    me: std::sync::OnceLock<std::sync::Weak<Core>>,
    base: Instant,
    cfg: Config,
    rates: Rates,
    /// Slow-call threshold, if slow calls are detected.
    slow_after: Option<Duration>,
    throttle: Option<Throttle>,
    counters: Striped<Counters>,
    control: Mutex<Control>,
    events: broadcast::Sender<StateChange>,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("state", &self.state())
            .field("config", &self.cfg)
            .field("stripes", &self.counters.len())
            .finish_non_exhaustive()
    }
}

impl Core {
    pub(crate) fn new(cfg: Config, stripes: usize) -> Self {
        let rates = match cfg.policy {
            Policy::Rate {
                window: Window::Count { size },
                ..
            } => Rates::Count(Box::new(CountWindow::new(size))),
            Policy::Rate {
                window: Window::Time { bucket, buckets },
                ..
            } => Rates::Time(TimeWindow::new(
                u64::try_from(bucket.as_micros()).unwrap_or(u64::MAX),
                buckets,
                stripes,
            )),
            Policy::Consecutive { .. } => Rates::None,
        };
        let rng = match cfg.seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_rng(&mut rand::rng()),
        };
        let (events, _) = broadcast::channel(cfg.events_capacity);
        let throttle = cfg.throttle.map(|k| Throttle {
            k,
            minimum_calls: match cfg.policy {
                Policy::Rate { minimum_calls, .. } => u64::from(minimum_calls),
                Policy::Consecutive { .. } => 1,
            },
            p: AtomicU64::new(0),
            rng: AtomicU64::new(cfg.seed.unwrap_or_else(rand::random)),
        });
        Self {
            throttle,
            word: CachePadded(AtomicU64::new(CLOSED)),
            open_until: AtomicU64::new(0),
            half_open_since: AtomicU64::new(0),
            me: std::sync::OnceLock::new(),
            base: Instant::now(),
            slow_after: cfg.slow().map(|s| s.duration),
            rates,
            counters: Striped::new(stripes, |_| Counters::default()),
            control: Mutex::new(Control {
                trips: 0,
                closed_at: None,
                rng,
                metrics_base: Totals::default(),
                probes: Probes::default(),
                tripped_on: None,
            }),
            events,
            cfg,
        }
    }

    /// Whether calls are timed (slow-call detection is on).
    #[inline]
    pub(crate) fn times_calls(&self) -> bool {
        self.slow_after.is_some()
    }

    /// Whether recording an outcome needs the time: a time window, or timing a call that
    /// waited.
    #[inline]
    fn needs_clock(&self, started: bool) -> bool {
        matches!(self.rates, Rates::Time(_)) || (started && self.slow_after.is_some())
    }

    #[inline]
    fn micros(&self, t: Instant) -> u64 {
        let d = t.saturating_duration_since(self.base);
        d.as_secs()
            .saturating_mul(1_000_000)
            .saturating_add(u64::from(d.subsec_micros()))
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.events.subscribe()
    }

    // ----- admission ---------------------------------------------------------------------

    /// Decides whether a call may go through. Reads no clock unless the breaker is open.
    #[inline]
    pub(crate) fn admit(&self) -> Result<Admission, CircuitOpen> {
        let w = self.word.0.load(Ordering::Acquire);
        if state_of(w) == CLOSED {
            if let Some(throttle) = &self.throttle {
                if throttle.probability() > 0.0 {
                    return self.admit_throttled(w, throttle);
                }
            }
            return Ok(Admission::Closed(epoch_of(w)));
        }
        self.admit_slow(w)
    }

    /// A closed, throttling breaker: rejects with the current probability. A rejection is
    /// not recorded in the window (see [`Builder::adaptive_throttling`]).
    ///
    /// [`Builder::adaptive_throttling`]: super::Builder::adaptive_throttling
    #[cold]
    fn admit_throttled(&self, w: u64, throttle: &Throttle) -> Result<Admission, CircuitOpen> {
        if throttle.draw() >= throttle.probability() {
            return Ok(Admission::Closed(epoch_of(w)));
        }
        if self.cfg.metrics_only {
            // Let through, and recorded as the call it is: the throttle's window sees what
            // an unthrottled client would send.
            self.count_rejection();
            return Ok(Admission::Closed(epoch_of(w)));
        }
        Err(self.reject(None))
    }

    #[cold]
    fn admit_slow(&self, mut w: u64) -> Result<Admission, CircuitOpen> {
        loop {
            match state_of(w) {
                CLOSED => return Ok(Admission::Closed(epoch_of(w))),
                DISABLED => return Ok(Admission::Untracked),
                HALF_OPEN => {
                    if field_a(w) >= self.cfg.half_open_probes {
                        if self.half_open_expired(w) {
                            w = self.word.0.load(Ordering::Acquire);
                            continue;
                        }
                        return self.refuse(None);
                    }
                    match self.word.0.compare_exchange_weak(
                        w,
                        w + A_ONE,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => return Ok(Admission::Probe(epoch_of(w))),
                        Err(now) => w = now,
                    }
                }
                OPEN => {
                    let left = self.open_left();
                    if !left.is_zero() {
                        return self.refuse(Some(left));
                    }
                    self.transition(Some(w), HALF_OPEN);
                    w = self.word.0.load(Ordering::Acquire);
                }
                _ => return self.refuse(None),
            }
        }
    }

    /// A call the breaker would reject: rejected, or in metrics-only mode let through
    /// untracked, counted as a rejection all the same.
    fn refuse(&self, retry_after: Option<Duration>) -> Result<Admission, CircuitOpen> {
        if self.cfg.metrics_only {
            self.count_rejection();
            tracing::debug!(target: TARGET, ?retry_after, "call let through: circuit open, metrics only");
            return Ok(Admission::Untracked);
        }
        Err(self.reject(retry_after))
    }

    fn count_rejection(&self) {
        let local = self.counters.local();
        local.cell.rejections.add(local.owner, 1);
    }

    /// How long an open breaker stays open from now (zero once its time is up).
    fn open_left(&self) -> Duration {
        let now = self.micros(Instant::now());
        Duration::from_micros(self.open_until.load(Ordering::Acquire).saturating_sub(now))
    }

    fn reject(&self, retry_after: Option<Duration>) -> CircuitOpen {
        self.count_rejection();
        tracing::debug!(target: TARGET, ?retry_after, "call rejected: circuit open");
        if let Some(bus) = &self.cfg.bus {
            bus.publish(TARGET_LAYER, EventKind::Rejected { retry_after });
        }
        CircuitOpen::new(retry_after)
    }

    // ----- recording ---------------------------------------------------------------------

    /// Records a finished call. `started` is when the call was first seen waiting, if timed.
    ///
    /// Always inlined, with one case in line: a success admitted in the closed state of a
    /// consecutive-failures breaker, still closed in the same epoch with no failure streak
    /// (the word is then exactly the epoch), not timed. It counts one call and nothing else.
    /// Every other case is out of line. Guarded by `benches/circuit_breaker.rs`.
    #[inline(always)]
    pub(crate) fn finish(&self, admission: Admission, outcome: Outcome, started: Option<Instant>) {
        if let Admission::Closed(epoch) = admission {
            if outcome == Outcome::Success
                && started.is_none()
                && matches!(self.rates, Rates::None)
                && self.word.0.load(Ordering::Acquire) == u64::from(epoch) << EPOCH_SHIFT
            {
                let local = self.counters.local();
                local.cell.calls.add(local.owner, 1);
                return;
            }
        }
        self.finish_slow(admission, outcome, started);
    }

    #[inline(never)]
    fn finish_slow(&self, admission: Admission, outcome: Outcome, started: Option<Instant>) {
        let now = if self.needs_clock(started.is_some()) {
            Some(Instant::now())
        } else {
            None
        };
        let slow = match (self.slow_after, started, now) {
            (Some(after), Some(started), Some(now)) => {
                now.saturating_duration_since(started) >= after
            }
            _ => false,
        };
        self.record(admission, outcome, slow, now);
    }

    fn record(&self, admission: Admission, outcome: Outcome, slow: bool, now: Option<Instant>) {
        let local = self.counters.local();
        let (c, owner) = (local.cell, local.owner);
        if outcome == Outcome::Ignored {
            c.ignored.add(owner, 1);
            if let Admission::Probe(epoch) = admission {
                self.release_probe(epoch);
            }
            return;
        }
        let failed = outcome.is_failure();
        c.calls.add(owner, 1);
        if failed {
            c.failures.add(owner, 1);
        }
        if slow {
            c.slow.add(owner, 1);
        }
        match admission {
            Admission::Untracked => {}
            Admission::Probe(epoch) => self.record_probe(epoch, failed, slow),
            Admission::Closed(epoch) => {
                let w = self.word.0.load(Ordering::Acquire);
                if !same_phase(w, CLOSED, epoch) {
                    // Admitted before the breaker changed state: too late to count.
                    return;
                }
                let tally = match (&self.rates, self.cfg.policy) {
                    (Rates::None, Policy::Consecutive { n }) => {
                        self.record_consecutive(w, epoch, failed, n);
                        None
                    }
                    (Rates::Count(window), _) => window.record(failed, slow),
                    (Rates::Time(window), _) => {
                        let now = now.map_or(0, |t| self.micros(t));
                        let tally =
                            window.record(stripe::thread_number(), epoch, now, failed, slow);
                        match &self.throttle {
                            None => tally,
                            Some(throttle) => {
                                // A success lowers a probability above 0; a failure may raise
                                // it. The breaker itself never trips.
                                let tally = tally.or_else(|| {
                                    (throttle.probability() > 0.0).then(|| window.tally(epoch, now))
                                });
                                if let Some(tally) = tally {
                                    throttle.update(tally);
                                }
                                None
                            }
                        }
                    }
                    (Rates::None, Policy::Rate { .. }) => None,
                };
                if let Some(tally) = tally {
                    if self.rate_trips(tally) {
                        self.trip(w, tally);
                    }
                }
            }
        }
    }

    #[inline]
    fn record_consecutive(&self, mut w: u64, epoch: u32, failed: bool, n: u32) {
        loop {
            if !same_phase(w, CLOSED, epoch) {
                return;
            }
            let next = if failed {
                if field_a(w) + 1 >= n {
                    self.transition(Some(w), OPEN);
                    return;
                }
                w + A_ONE
            } else {
                if field_a(w) == 0 {
                    // The common case: nothing to write.
                    return;
                }
                w & !(FIELD << A_SHIFT)
            };
            match self
                .word
                .0
                .compare_exchange_weak(w, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(now) => w = now,
            }
        }
    }

    /// Whether a closed window's rates trip the breaker.
    fn rate_trips(&self, t: Tally) -> bool {
        let Policy::Rate {
            failure_rate,
            minimum_calls,
            slow,
            ..
        } = self.cfg.policy
        else {
            return false;
        };
        if t.calls == 0 || t.calls < u64::from(minimum_calls) {
            return false;
        }
        reaches(t.failures, t.calls, failure_rate)
            || matches!(slow, Some(s) if reaches(t.slow, t.calls, s.rate))
    }

    /// Opens the breaker from the closed state `w`, remembering the window that tripped it.
    fn trip(&self, w: u64, tally: Tally) {
        let mut control = lock(&self.control);
        if !same_phase(self.word.0.load(Ordering::Acquire), CLOSED, epoch_of(w)) {
            return;
        }
        if let Some(bus) = &self.cfg.bus {
            let rate = |n: u64| n as f64 / tally.calls.max(1) as f64;
            bus.publish(
                TARGET_LAYER,
                EventKind::FailureRateExceeded {
                    failure_rate: rate(tally.failures),
                    slow_call_rate: rate(tally.slow),
                },
            );
        }
        if self.transition_locked(&mut control, Some(w), OPEN) {
            control.tripped_on = Some(tally);
        }
    }

    /// Tallies a probe's outcome and decides half-open as soon as the outcomes so far settle
    /// it: reopen once the failed (or slow) probes reach the threshold's share of all probes
    /// whatever the others do; close once they cannot.
    fn record_probe(&self, epoch: u32, failed: bool, slow: bool) {
        let mut control = lock(&self.control);
        let w = self.word.0.load(Ordering::Acquire);
        if !same_phase(w, HALF_OPEN, epoch) {
            return;
        }
        if control.probes.epoch != epoch {
            control.probes = Probes {
                epoch,
                ..Probes::default()
            };
        }
        let p = &mut control.probes;
        p.done += 1;
        p.failed += u32::from(failed);
        p.slow += u32::from(slow);
        let n = u64::from(self.cfg.half_open_probes);
        let left = n.saturating_sub(u64::from(p.done));
        let (failed, slow) = (u64::from(p.failed), u64::from(p.slow));
        let (failure_rate, slow_rate) = match self.cfg.policy {
            Policy::Rate {
                failure_rate, slow, ..
            } => (failure_rate, slow.map(|s| s.rate)),
            Policy::Consecutive { .. } => (CONSECUTIVE_PROBE_RATE, None),
        };
        let tally = Tally {
            calls: u64::from(p.done),
            failures: failed,
            slow,
        };
        let reopen =
            reaches(failed, n, failure_rate) || slow_rate.is_some_and(|r| reaches(slow, n, r));
        let close = !reaches(failed + left, n, failure_rate)
            && !slow_rate.is_some_and(|r| reaches(slow + left, n, r));
        if reopen {
            if self.transition_locked(&mut control, Some(w), OPEN) {
                control.tripped_on = Some(tally);
            }
        } else if close {
            self.transition_locked(&mut control, Some(w), CLOSED);
        }
    }

    /// Gives back the slot of a probe that ended without an outcome (dropped, or ignored).
    pub(crate) fn release_probe(&self, epoch: u32) {
        let mut w = self.word.0.load(Ordering::Acquire);
        while same_phase(w, HALF_OPEN, epoch) && field_a(w) > 0 {
            match self.word.0.compare_exchange_weak(
                w,
                w - A_ONE,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(now) => w = now,
            }
        }
    }

    // ----- changes of state --------------------------------------------------------------

    fn open_duration(&self, control: &mut Control) -> Duration {
        let open = &self.cfg.open;
        let grown = open.base.as_secs_f64()
            * open
                .multiplier
                .powi(control.trips.saturating_sub(1).min(1_000) as i32);
        let mut secs = grown.min(open.max.as_secs_f64());
        if open.jitter > 0.0 {
            secs *= 1.0 - open.jitter * control.rng.random::<f64>();
        }
        // `try_from`: a NaN or an overflow (refused by the builder) must not panic here.
        Duration::try_from_secs_f64(secs)
            .unwrap_or(open.max)
            .max(Duration::from_micros(1))
    }

    /// Moves to state `to`. With `expect`, only if the breaker is still in `expect`'s state and
    /// epoch (someone else may have moved it first); returns whether it moved.
    pub(crate) fn transition(&self, expect: Option<u64>, to: u64) -> bool {
        let mut control = lock(&self.control);
        self.transition_locked(&mut control, expect, to)
    }

    fn transition_locked(&self, control: &mut Control, expect: Option<u64>, to: u64) -> bool {
        self.move_to(control, expect, to, None)
    }

    /// [`transition`](Self::transition), and for OPEN, open for `manual` (an operator's
    /// period, not a trip: the growth does not count it) instead of the configured duration.
    fn move_to(
        &self,
        control: &mut Control,
        expect: Option<u64>,
        to: u64,
        manual: Option<Duration>,
    ) -> bool {
        let mut cur = self.word.0.load(Ordering::Acquire);
        if let Some(e) = expect {
            if !same_phase(cur, state_of(e), epoch_of(e)) {
                return false;
            }
        }
        let from = state_of(cur);
        let mut open_for = None;
        let now = Instant::now();
        match to {
            OPEN => {
                let healthy_for = control.closed_at.map(|t| now.saturating_duration_since(t));
                let d = match manual {
                    Some(d) => d,
                    None => {
                        if from == CLOSED && healthy_for.is_some_and(|d| d >= self.cfg.open.max) {
                            control.trips = 0;
                        }
                        control.trips = control.trips.saturating_add(1);
                        self.open_duration(control)
                    }
                };
                let until = self
                    .micros(now)
                    .saturating_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
                self.open_until.store(until, Ordering::Release);
                open_for = Some(d);
            }
            HALF_OPEN => {
                self.half_open_since
                    .store(self.micros(now), Ordering::Release);
            }
            CLOSED => {
                control.closed_at = Some(now);
                control.tripped_on = None;
                // A fresh count window; a time window is fresh through the new epoch's tag.
                if let Rates::Count(window) = &self.rates {
                    window.clear();
                }
            }
            _ => {}
        }
        let next = (u64::from(epoch_of(cur).wrapping_add(1)) << EPOCH_SHIFT) | to;
        // Only counters change outside the mutex; retry over them.
        while let Err(now) =
            self.word
                .0
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Acquire)
        {
            cur = now;
        }
        if let Some(d) = open_for {
            self.half_open_after(next, d);
        }
        if from != to {
            let (from, to) = (state_name(from), state_name(to));
            match open_for {
                Some(d) if self.cfg.metrics_only => {
                    tracing::warn!(target: TARGET, %from, %to, open_for = ?d, "circuit breaker would open (metrics only: not enforced)")
                }
                Some(d) => {
                    tracing::warn!(target: TARGET, %from, %to, open_for = ?d, "circuit breaker opened")
                }
                None => tracing::info!(target: TARGET, %from, %to, "circuit breaker changed state"),
            }
            // No subscriber is fine.
            let _ = self.events.send(StateChange { from, to, open_for });
            if let Some(bus) = &self.cfg.bus {
                let (from, to) = (from.as_str(), to.as_str());
                bus.publish(TARGET_LAYER, EventKind::StateChanged { from, to, open_for });
            }
        }
        true
    }

    /// Forgets past trips (the open duration starts over) and zeroes the metrics.
    pub(crate) fn reset(&self) {
        let mut control = lock(&self.control);
        self.transition_locked(&mut control, None, CLOSED);
        control.trips = 0;
        control.metrics_base = self.totals();
    }

    // ----- observation -------------------------------------------------------------------

    /// The state, true without traffic: an open breaker whose open duration is over, or a
    /// half-open one past its maximum wait, moves on when asked.
    pub(crate) fn state(&self) -> State {
        let w = self.word.0.load(Ordering::Acquire);
        match state_of(w) {
            OPEN if self.open_left().is_zero() => {
                self.transition(Some(w), HALF_OPEN);
            }
            HALF_OPEN => {
                self.half_open_expired(w);
            }
            _ => return state_name(state_of(w)),
        }
        state_name(state_of(self.word.0.load(Ordering::Acquire)))
    }

    /// Gives the breaker a reference to itself, for the timer that half-opens it.
    pub(crate) fn set_self(self: &std::sync::Arc<Self>) {
        let _ = self.me.set(std::sync::Arc::downgrade(self));
    }

    /// Half-opens the breaker (still open as `open_word`) once `d` has passed, on a timer of
    /// the current tokio runtime: the state and the event come when the time is up, not at the
    /// next call. Without a runtime (or under loom), the next call or `state()` does it.
    fn half_open_after(&self, open_word: u64, d: Duration) {
        #[cfg(not(seawall_loom))]
        if let (Ok(runtime), Some(me)) = (tokio::runtime::Handle::try_current(), self.me.get()) {
            let me = me.clone();
            // The deadline is taken now: the task may first run later.
            let at = Instant::now() + d;
            runtime.spawn(async move {
                tokio::time::sleep_until(at).await;
                if let Some(core) = me.upgrade() {
                    core.transition(Some(open_word), HALF_OPEN);
                }
            });
        }
        #[cfg(seawall_loom)]
        let _ = (open_word, d);
    }

    /// Whether the half-open state `w` has outlived its maximum wait; if so, moves to the
    /// configured state, so that a probe that never answers cannot hold it forever (its late
    /// outcome belongs to an earlier epoch and is ignored).
    fn half_open_expired(&self, w: u64) -> bool {
        let Some((max, then)) = self.cfg.half_open_max_wait else {
            return false;
        };
        let since = self.half_open_since.load(Ordering::Acquire);
        let waited = self.micros(Instant::now()).saturating_sub(since);
        if u128::from(waited) < max.as_micros() {
            return false;
        }
        tracing::warn!(target: TARGET, max_wait = ?max, "half-open probes did not answer in time");
        self.transition(Some(w), then);
        true
    }

    /// Whether a call now would be rejected without reaching the inner service: open with
    /// time left, or forced open. Reads the clock only when not closed.
    #[inline]
    pub(crate) fn rejects_now(&self) -> bool {
        let w = self.word.0.load(Ordering::Acquire);
        match state_of(w) {
            CLOSED | DISABLED | HALF_OPEN => false,
            _ if self.cfg.metrics_only => false,
            FORCED_OPEN => true,
            _ => !self.open_left().is_zero(),
        }
    }

    /// The rejection of a call that [`rejects_now`](Self::rejects_now) said to refuse.
    #[cold]
    pub(crate) fn reject_now(&self) -> CircuitOpen {
        let w = self.word.0.load(Ordering::Acquire);
        let retry_after = (state_of(w) == OPEN).then(|| self.open_left());
        self.reject(retry_after)
    }

    /// An operator opens the breaker for `d`; it then half-opens as if it had tripped.
    /// Refused from FORCED_OPEN and DISABLED (release those first).
    pub(crate) fn open_for(&self, d: Duration) -> Result<(), State> {
        let mut control = lock(&self.control);
        let w = self.word.0.load(Ordering::Acquire);
        match state_of(w) {
            FORCED_OPEN | DISABLED => Err(state_name(state_of(w))),
            _ => {
                self.move_to(&mut control, Some(w), OPEN, Some(d));
                Ok(())
            }
        }
    }

    /// An operator half-opens the breaker now. Only from OPEN or FORCED_OPEN: a closed,
    /// half-open or disabled breaker has no probes to let through.
    pub(crate) fn half_open(&self) -> Result<(), State> {
        let mut control = lock(&self.control);
        let w = self.word.0.load(Ordering::Acquire);
        match state_of(w) {
            OPEN | FORCED_OPEN => {
                self.move_to(&mut control, Some(w), HALF_OPEN, None);
                Ok(())
            }
            s => Err(state_name(s)),
        }
    }

    fn totals(&self) -> Totals {
        let sum = |f: fn(&Counters) -> &Counter| stripe::sum(&self.counters, f);
        Totals {
            calls: sum(|c| &c.calls),
            ignored: sum(|c| &c.ignored),
            failures: sum(|c| &c.failures),
            slow: sum(|c| &c.slow),
            rejections: sum(|c| &c.rejections),
        }
    }

    /// The counters, and the window: the live one while closed, the one that opened the
    /// breaker while it is open or half-open.
    pub(crate) fn metrics(&self) -> Metrics {
        let (base, tripped_on) = {
            let control = lock(&self.control);
            (control.metrics_base, control.tripped_on)
        };
        let w = self.word.0.load(Ordering::Acquire);
        let t = self.totals();
        let calls = t.calls.saturating_sub(base.calls);
        let failures = t.failures.saturating_sub(base.failures);
        let window = match (&self.rates, state_of(w)) {
            // No window: the counts since the start.
            (Rates::None, _) => Tally {
                calls,
                failures,
                slow: 0,
            },
            (Rates::Count(window), CLOSED) => window.tally(),
            (Rates::Time(window), CLOSED) => window.tally(epoch_of(w), self.micros(Instant::now())),
            (_, _) => tripped_on.unwrap_or_default(),
        };
        let rate = |n: u64, d: u64| if d == 0 { 0.0 } else { n as f64 / d as f64 };
        let retry_after = (state_of(w) == OPEN).then(|| self.open_left());
        Metrics {
            state: state_name(state_of(w)),
            calls,
            failures,
            slow_calls: t.slow.saturating_sub(base.slow),
            rejections: t.rejections.saturating_sub(base.rejections),
            ignored: t.ignored.saturating_sub(base.ignored),
            consecutive_failures: if state_of(w) == CLOSED {
                match self.cfg.policy {
                    Policy::Consecutive { .. } => field_a(w),
                    Policy::Rate { .. } => 0,
                }
            } else {
                0
            },
            rejection_probability: self.throttle.as_ref().map_or(0.0, Throttle::probability),
            window_calls: window.calls,
            failure_rate: rate(window.failures, window.calls),
            slow_call_rate: rate(window.slow, window.calls),
            retry_after,
        }
    }
}

/// Whether `n` of `of` reaches the share `rate` (`n / of >= rate`).
fn reaches(n: u64, of: u64, rate: f64) -> bool {
    of > 0 && n > 0 && n as f64 / of as f64 >= rate
}
