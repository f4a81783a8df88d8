//! The lock-free state machine.
//!
//! One `AtomicU64` word holds the state, a small counter per state and an epoch:
//!
//! ```text
//! bits  0..3   state: CLOSED, OPEN, HALF_OPEN, FORCED_OPEN, DISABLED
//! bits  3..16  a: CLOSED: consecutive failures; HALF_OPEN: probe slots taken
//! bits 16..29  b: HALF_OPEN: probes that succeeded
//! bits 32..64  epoch: +1 on every change of state
//! ```
//!
//! Counters change by compare-and-swap on the word, only when they change (a success in the
//! closed state with no failure streak writes nothing). Changes of state take a mutex (they are
//! rare: opening, half-opening, closing, forcing), prepare what the new state needs (the time it
//! opens until, a fresh window) and then publish the new word. Every call remembers the epoch it
//! was admitted in; an outcome from an earlier epoch no longer counts.
//!
//! Per-call counters live in stripes ([`Shard`]), one cache line pair per stripe, picked by the
//! calling thread, so two threads sharing one breaker don't write the same line.

use super::config::{Config, Policy, Window};
use super::handle::{Metrics, State, StateChange};
use crate::classify::Outcome;
use crate::error::CircuitOpen;
use crate::events::EventKind;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::broadcast;

/// The layer's name in events.
const TARGET_LAYER: &str = "circuit_breaker";
use tokio::time::Instant;

const TARGET: &str = "seawall::circuit_breaker";

pub(crate) const CLOSED: u64 = 0;
pub(crate) const OPEN: u64 = 1;
pub(crate) const HALF_OPEN: u64 = 2;
pub(crate) const FORCED_OPEN: u64 = 3;
pub(crate) const DISABLED: u64 = 4;

const STATE_BITS: u64 = 0b111;
const A_SHIFT: u32 = 3;
const B_SHIFT: u32 = 16;
const FIELD: u64 = 0x1FFF;
const EPOCH_SHIFT: u32 = 32;
const A_ONE: u64 = 1 << A_SHIFT;
const B_ONE: u64 = 1 << B_SHIFT;

#[inline]
fn state_of(w: u64) -> u64 {
    w & STATE_BITS
}
#[inline]
fn field_a(w: u64) -> u32 {
    ((w >> A_SHIFT) & FIELD) as u32
}
#[inline]
fn field_b(w: u64) -> u32 {
    ((w >> B_SHIFT) & FIELD) as u32
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

/// A value on its own pair of cache lines (adjacent-line prefetch pulls pairs on x86).
#[repr(align(128))]
#[derive(Debug, Default)]
struct Padded<T>(T);

/// Adds one to a per-stripe counter with a plain load and store: no locked instruction, which
/// costs 5-25 ns on these machines. A stripe is written by the threads mapped to it, normally
/// one; two threads sharing a stripe and writing at the same instant may lose one count.
#[inline]
fn bump(counter: &AtomicU64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(1),
        Ordering::Relaxed,
    );
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

/// One time bucket of one stripe.
#[derive(Debug, Default)]
struct Bucket {
    /// `epoch tag << 48 | bucket number`: a bucket of another closed period or another turn
    /// of the ring is stale and starts over when written.
    id: AtomicU64,
    calls: AtomicU32,
    failures: AtomicU32,
    slow: AtomicU32,
}

const BUCKET_MASK: u64 = (1 << 48) - 1;

/// The per-call counters of one stripe.
#[repr(align(128))]
#[derive(Debug, Default)]
pub(crate) struct Shard {
    /// Calls recorded in a closed window (the count window's sequence is their sum).
    closed_calls: AtomicU64,
    /// Other completed calls (probes, disabled, late outcomes of an earlier epoch).
    other_calls: AtomicU64,
    ignored: AtomicU64,
    failures: AtomicU64,
    slow: AtomicU64,
    rejections: AtomicU64,
    /// Time window: the bucket number this stripe last wrote, `<< 16`, with its place in the
    /// ring (at most `MAX_BUCKETS`, under 2^16). Saves the two divisions that find a bucket
    /// while calls keep falling in the same one; written only when the bucket changes.
    bucket_hint: AtomicU64,
    buckets: Box<[Bucket]>,
}

/// The sequence numbers of the last failures (or slow calls) of a count window.
#[derive(Debug)]
struct Log {
    ring: Box<[AtomicU64]>,
    head: Padded<AtomicU64>,
}

impl Log {
    fn new(len: usize) -> Self {
        Self {
            ring: (0..len).map(|_| AtomicU64::new(0)).collect(),
            head: Padded::default(),
        }
    }

    fn push(&self, seq: u64) {
        if self.ring.is_empty() {
            return;
        }
        let i = self.head.0.fetch_add(1, Ordering::AcqRel);
        self.ring[(i % self.ring.len() as u64) as usize].store(seq, Ordering::Release);
    }

    /// How many logged sequence numbers are above `low`, newest first; stops at the first one
    /// that is not (sequence numbers are logged in order, give or take concurrent pushes).
    fn count_above(&self, low: u64) -> u64 {
        let len = self.ring.len() as u64;
        if len == 0 {
            return 0;
        }
        let head = self.head.0.load(Ordering::Acquire);
        let oldest = head.saturating_sub(len);
        let mut n = 0;
        let mut k = head;
        while k > oldest {
            k -= 1;
            if self.ring[(k % len) as usize].load(Ordering::Acquire) > low {
                n += 1;
            } else {
                break;
            }
        }
        n
    }
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

/// What changes of state need, behind the mutex.
#[derive(Debug)]
struct Control {
    /// Trips since the breaker last closed: the open duration grows with it.
    trips: u32,
    rng: SmallRng,
    /// Totals at the last `reset`, subtracted from the metrics.
    metrics_base: Totals,
}

/// The shared state of one breaker.
pub(crate) struct Core {
    word: Padded<AtomicU64>,
    /// Microseconds since `base` until which the breaker stays open (written before the word
    /// that publishes OPEN).
    open_until: AtomicU64,
    /// Count window: the sequence (sum of `closed_calls`) when the window was last cleared.
    window_base: AtomicU64,
    base: Instant,
    cfg: Config,
    /// `Some` when a count window is used.
    failure_log: Log,
    slow_log: Log,
    /// Slow-call threshold, if slow calls are detected.
    slow_after: Option<Duration>,
    /// Time window: bucket width in microseconds and number of buckets.
    bucket_us: u64,
    buckets: u64,
    shards: Box<[Shard]>,
    control: Mutex<Control>,
    events: broadcast::Sender<StateChange>,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("state", &self.state())
            .field("config", &self.cfg)
            .field("stripes", &self.shards.len())
            .finish_non_exhaustive()
    }
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

/// A small number, distinct for each of the first threads that ask, used to pick a stripe.
pub(crate) fn next_thread_index() -> usize {
    NEXT_THREAD.fetch_add(1, Ordering::Relaxed)
}

/// How many stripes a breaker gets: twice the cores, a power of two, 4..=64.
pub(crate) fn stripe_count() -> usize {
    let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
    (cores * 2).next_power_of_two().clamp(4, 64)
}

impl Core {
    pub(crate) fn new(cfg: Config, stripes: usize) -> Self {
        let (log_len, bucket_us, buckets) = match cfg.policy {
            Policy::Rate {
                window: Window::Count { size },
                ..
            } => (size as usize, 0, 0),
            Policy::Rate {
                window: Window::Time { bucket, buckets },
                ..
            } => (0, bucket.as_micros().max(1) as u64, u64::from(buckets)),
            Policy::Consecutive { .. } => (0, 0, 0),
        };
        let shards = (0..stripes)
            .map(|_| Shard {
                buckets: (0..buckets).map(|_| Bucket::default()).collect(),
                ..Shard::default()
            })
            .collect();
        let rng = match cfg.seed {
            Some(seed) => SmallRng::seed_from_u64(seed),
            None => SmallRng::from_rng(&mut rand::rng()),
        };
        let (events, _) = broadcast::channel(cfg.events_capacity);
        Self {
            word: Padded(AtomicU64::new(CLOSED)),
            open_until: AtomicU64::new(0),
            window_base: AtomicU64::new(0),
            base: Instant::now(),
            slow_after: cfg.slow().map(|s| s.duration),
            failure_log: Log::new(log_len),
            slow_log: Log::new(if cfg.slow().is_some() { log_len } else { 0 }),
            bucket_us,
            buckets,
            shards,
            control: Mutex::new(Control {
                trips: 0,
                rng,
                metrics_base: Totals::default(),
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
        self.bucket_us != 0 || (started && self.slow_after.is_some())
    }

    #[inline]
    fn micros(&self, t: Instant) -> u64 {
        let d = t.saturating_duration_since(self.base);
        d.as_secs() * 1_000_000 + u64::from(d.subsec_micros())
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.events.subscribe()
    }

    // ----- admission ---------------------------------------------------------------------

    /// Decides whether a call may go through. Reads no clock unless the breaker is open.
    #[inline]
    pub(crate) fn admit(&self, shard: usize) -> Result<Admission, CircuitOpen> {
        let w = self.word.0.load(Ordering::Acquire);
        if state_of(w) == CLOSED {
            return Ok(Admission::Closed(epoch_of(w)));
        }
        self.admit_slow(shard, w)
    }

    #[cold]
    fn admit_slow(&self, shard: usize, mut w: u64) -> Result<Admission, CircuitOpen> {
        loop {
            match state_of(w) {
                CLOSED => return Ok(Admission::Closed(epoch_of(w))),
                DISABLED => return Ok(Admission::Untracked),
                HALF_OPEN => {
                    if field_a(w) >= self.cfg.half_open_probes {
                        return Err(self.reject(shard, None));
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
                    let now = self.micros(Instant::now());
                    let until = self.open_until.load(Ordering::Acquire);
                    if now < until {
                        return Err(self.reject(shard, Some(Duration::from_micros(until - now))));
                    }
                    self.transition(Some(w), HALF_OPEN);
                    w = self.word.0.load(Ordering::Acquire);
                }
                _ => return Err(self.reject(shard, None)),
            }
        }
    }

    fn reject(&self, shard: usize, retry_after: Option<Duration>) -> CircuitOpen {
        bump(&self.shards[shard].rejections);
        tracing::debug!(target: TARGET, ?retry_after, "call rejected: circuit open");
        if let Some(bus) = &self.cfg.bus {
            bus.publish(TARGET_LAYER, EventKind::Rejected { retry_after });
        }
        CircuitOpen::new(retry_after)
    }

    // ----- recording ---------------------------------------------------------------------

    /// Records a finished call. `started` is when the call was first seen waiting, if timed.
    ///
    /// Always inlined, with one case in line: a success admitted in the closed state, still
    /// closed in the same epoch with no failure streak (the word is then exactly the epoch),
    /// that needs no clock (no time window, not timed). It counts one call on the stripe, as
    /// [`Core::record`] would, and nothing else. Every other case is out of line.
    #[inline(always)]
    pub(crate) fn finish(
        &self,
        shard: usize,
        admission: Admission,
        outcome: Outcome,
        started: Option<Instant>,
    ) {
        if let Admission::Closed(epoch) = admission {
            if outcome == Outcome::Success && started.is_none() && self.bucket_us == 0 {
                let w = self.word.0.load(Ordering::Acquire);
                if w == u64::from(epoch) << EPOCH_SHIFT {
                    if let Some(sh) = self.shards.get(shard) {
                        bump(&sh.closed_calls);
                        return;
                    }
                }
            }
        }
        self.finish_slow(shard, admission, outcome, started);
    }

    #[inline(never)]
    fn finish_slow(
        &self,
        shard: usize,
        admission: Admission,
        outcome: Outcome,
        started: Option<Instant>,
    ) {
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
        self.record(shard, admission, outcome, slow, now);
    }

    #[inline]
    fn record(
        &self,
        shard: usize,
        admission: Admission,
        outcome: Outcome,
        slow: bool,
        now: Option<Instant>,
    ) {
        let sh = &self.shards[shard];
        if outcome == Outcome::Ignored {
            sh.ignored.fetch_add(1, Ordering::Relaxed);
            if let Admission::Probe(epoch) = admission {
                self.release_probe(epoch);
            }
            return;
        }
        let failed = outcome.is_failure();
        if failed {
            sh.failures.fetch_add(1, Ordering::Relaxed);
        }
        if slow {
            sh.slow.fetch_add(1, Ordering::Relaxed);
        }
        match admission {
            Admission::Untracked => {
                bump(&sh.other_calls);
            }
            Admission::Probe(epoch) => {
                bump(&sh.other_calls);
                self.record_probe(epoch, failed || slow);
            }
            Admission::Closed(epoch) => {
                let w = self.word.0.load(Ordering::Acquire);
                if !same_phase(w, CLOSED, epoch) {
                    // Admitted before the breaker changed state: too late to count.
                    bump(&sh.other_calls);
                    return;
                }
                bump(&sh.closed_calls);
                match self.cfg.policy {
                    Policy::Consecutive { n } => self.record_consecutive(w, epoch, failed, n),
                    Policy::Rate {
                        window: Window::Count { size },
                        ..
                    } => {
                        if failed || slow {
                            self.record_count_window(w, failed, slow, size);
                        }
                    }
                    Policy::Rate {
                        window: Window::Time { .. },
                        ..
                    } => {
                        let now = now.map_or(0, |t| self.micros(t));
                        self.record_time_window(sh, w, failed, slow, now);
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

    /// The count window's current sequence number and the lowest one outside the window.
    fn count_window_bounds(&self, size: u32) -> (u64, u64) {
        let seq: u64 = self
            .shards
            .iter()
            .map(|s| s.closed_calls.load(Ordering::Acquire))
            .sum();
        let base = self.window_base.load(Ordering::Acquire);
        let low = seq.saturating_sub(u64::from(size)).max(base);
        (seq, low)
    }

    #[cold]
    fn record_count_window(&self, w: u64, failed: bool, slow: bool, size: u32) {
        let (seq, low) = self.count_window_bounds(size);
        if failed {
            self.failure_log.push(seq);
        }
        if slow {
            self.slow_log.push(seq);
        }
        let calls = seq.saturating_sub(low);
        let failures = self.failure_log.count_above(low);
        let slows = self.slow_log.count_above(low);
        if self.rate_trips(calls, failures, slows) {
            self.transition(Some(w), OPEN);
        }
    }

    fn rate_trips(&self, calls: u64, failures: u64, slows: u64) -> bool {
        let Policy::Rate {
            failure_rate,
            minimum_calls,
            slow,
            ..
        } = self.cfg.policy
        else {
            return false;
        };
        if calls == 0 || calls < u64::from(minimum_calls) {
            return false;
        }
        let calls = calls as f64;
        (failures > 0 && failures as f64 / calls >= failure_rate)
            || matches!(slow, Some(s) if slows > 0 && slows as f64 / calls >= s.rate)
    }

    fn bucket_id(&self, w: u64, now_us: u64) -> (u64, u64) {
        let bucket = (now_us / self.bucket_us) & BUCKET_MASK;
        let tag = u64::from(epoch_of(w) & 0xFFFF);
        (bucket, tag << 48 | bucket)
    }

    /// The bucket number of `now_us` (as [`Core::bucket_id`] finds it) and its place in the
    /// ring: the stripe's last bucket when `now_us` still falls in it (a multiply and two
    /// compares), else found with two divisions and remembered.
    #[inline]
    fn bucket_of(&self, sh: &Shard, now_us: u64) -> (u64, usize) {
        let hint = sh.bucket_hint.load(Ordering::Relaxed);
        let bucket = hint >> 16;
        if let Some(low) = bucket.checked_mul(self.bucket_us) {
            if now_us >= low && now_us - low < self.bucket_us {
                return (bucket, (hint & 0xFFFF) as usize);
            }
        }
        let bucket = (now_us / self.bucket_us) & BUCKET_MASK;
        let ring = bucket % self.buckets;
        sh.bucket_hint.store(bucket << 16 | ring, Ordering::Relaxed);
        (bucket, ring as usize)
    }

    fn record_time_window(&self, sh: &Shard, w: u64, failed: bool, slow: bool, now_us: u64) {
        let (bucket, ring) = self.bucket_of(sh, now_us);
        let id = u64::from(epoch_of(w) & 0xFFFF) << 48 | bucket;
        let slot = &sh.buckets[ring];
        if slot.id.load(Ordering::Acquire) != id {
            slot.calls.store(0, Ordering::Relaxed);
            slot.failures.store(0, Ordering::Relaxed);
            slot.slow.store(0, Ordering::Relaxed);
            slot.id.store(id, Ordering::Release);
        }
        slot.calls.store(
            slot.calls.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
        if failed {
            slot.failures.fetch_add(1, Ordering::Relaxed);
        }
        if slow {
            slot.slow.fetch_add(1, Ordering::Relaxed);
        }
        if failed || slow {
            let (calls, failures, slows) = self.time_window_sums(w, now_us);
            if self.rate_trips(calls, failures, slows) {
                self.transition(Some(w), OPEN);
            }
        }
    }

    /// Calls, failures and slow calls of the time window ending at `now_us`.
    fn time_window_sums(&self, w: u64, now_us: u64) -> (u64, u64, u64) {
        let (bucket, id) = self.bucket_id(w, now_us);
        let tag = id >> 48;
        let (mut calls, mut failures, mut slows) = (0u64, 0u64, 0u64);
        for sh in self.shards.iter() {
            for slot in sh.buckets.iter() {
                let id = slot.id.load(Ordering::Acquire);
                let b = id & BUCKET_MASK;
                if id >> 48 == tag && b <= bucket && b + self.buckets > bucket {
                    calls += u64::from(slot.calls.load(Ordering::Relaxed));
                    failures += u64::from(slot.failures.load(Ordering::Relaxed));
                    slows += u64::from(slot.slow.load(Ordering::Relaxed));
                }
            }
        }
        (calls, failures, slows)
    }

    fn record_probe(&self, epoch: u32, bad: bool) {
        let mut w = self.word.0.load(Ordering::Acquire);
        loop {
            if !same_phase(w, HALF_OPEN, epoch) {
                return;
            }
            if bad {
                self.transition(Some(w), OPEN);
                return;
            }
            if field_b(w) + 1 >= self.cfg.half_open_probes {
                self.transition(Some(w), CLOSED);
                return;
            }
            match self.word.0.compare_exchange_weak(
                w,
                w + B_ONE,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(now) => w = now,
            }
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
        Duration::from_secs_f64(secs).max(Duration::from_micros(1))
    }

    /// Moves to state `to`. With `expect`, only if the breaker is still in `expect`'s state and
    /// epoch (someone else may have moved it first); returns whether it moved.
    pub(crate) fn transition(&self, expect: Option<u64>, to: u64) -> bool {
        let mut control = self.control.lock().unwrap_or_else(PoisonError::into_inner);
        let mut cur = self.word.0.load(Ordering::Acquire);
        if let Some(e) = expect {
            if !same_phase(cur, state_of(e), epoch_of(e)) {
                return false;
            }
        }
        let from = state_of(cur);
        let mut open_for = None;
        match to {
            OPEN => {
                control.trips = control.trips.saturating_add(1);
                let d = self.open_duration(&mut control);
                let now = self.micros(Instant::now());
                self.open_until
                    .store(now.saturating_add(d.as_micros() as u64), Ordering::Release);
                open_for = Some(d);
            }
            CLOSED => {
                control.trips = 0;
                // A fresh count window; a time window is fresh through the new epoch's tag.
                let (seq, _) = self.count_window_bounds(0);
                self.window_base.store(seq, Ordering::Release);
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
        if from != to {
            let (from, to) = (state_name(from), state_name(to));
            match open_for {
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
        drop(control);
        true
    }

    pub(crate) fn reset_metrics(&self) {
        let totals = self.totals();
        self.control
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .metrics_base = totals;
    }

    // ----- observation -------------------------------------------------------------------

    pub(crate) fn state(&self) -> State {
        state_name(state_of(self.word.0.load(Ordering::Acquire)))
    }

    fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for s in self.shards.iter() {
            t.calls +=
                s.closed_calls.load(Ordering::Relaxed) + s.other_calls.load(Ordering::Relaxed);
            t.ignored += s.ignored.load(Ordering::Relaxed);
            t.failures += s.failures.load(Ordering::Relaxed);
            t.slow += s.slow.load(Ordering::Relaxed);
            t.rejections += s.rejections.load(Ordering::Relaxed);
        }
        t
    }

    pub(crate) fn metrics(&self) -> Metrics {
        let w = self.word.0.load(Ordering::Acquire);
        let base = self
            .control
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .metrics_base;
        let t = self.totals();
        let calls = t.calls.saturating_sub(base.calls);
        let failures = t.failures.saturating_sub(base.failures);
        let rate = |n: u64, d: u64| if d == 0 { 0.0 } else { n as f64 / d as f64 };
        let (window_calls, failure_rate, slow_call_rate) = match self.cfg.policy {
            Policy::Consecutive { .. } => (calls, rate(failures, calls), 0.0),
            Policy::Rate {
                window: Window::Count { size },
                ..
            } => {
                let (seq, low) = self.count_window_bounds(size);
                let n = seq.saturating_sub(low);
                (
                    n,
                    rate(self.failure_log.count_above(low), n),
                    rate(self.slow_log.count_above(low), n),
                )
            }
            Policy::Rate {
                window: Window::Time { .. },
                ..
            } => {
                let (n, f, s) = self.time_window_sums(w, self.micros(Instant::now()));
                (n, rate(f, n), rate(s, n))
            }
        };
        let retry_after = if state_of(w) == OPEN {
            let now = self.micros(Instant::now());
            Some(Duration::from_micros(
                self.open_until.load(Ordering::Acquire).saturating_sub(now),
            ))
        } else {
            None
        };
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
            window_calls,
            failure_rate,
            slow_call_rate,
            retry_after,
        }
    }
}
