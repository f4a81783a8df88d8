use super::clock::{nanos, Clock};
use super::gcra::{self, Outcome, Params};
use super::handle::RateLimitHandle;
use super::key::{Global, KeyExtractor};
use super::service::RateLimit;
use super::store::{Keyed, Store};
use crate::error::{ConfigError, RateLimited};
use crate::events::EventSource;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tower_layer::Layer;

const LAYER: &str = "rate_limit";

/// Default for [`RateLimitBuilder::max_keys`]: about what the 10 MB `limit_req_zone` of
/// nginx's documentation holds (16,000 states per megabyte).
pub const DEFAULT_MAX_KEYS: usize = 160_000;

/// Builds a [`RateLimitLayer`]: see [`RateLimitLayer::builder`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RateLimitBuilder<K = Global> {
    rate: Option<(u32, Duration)>,
    burst: Option<u32>,
    max_wait: Option<Duration>,
    max_keys: usize,
    events: Option<EventSource>,
    key: K,
}

impl RateLimitBuilder<Global> {
    fn new() -> Self {
        Self {
            rate: None,
            burst: None,
            max_wait: None,
            max_keys: DEFAULT_MAX_KEYS,
            events: None,
            key: Global,
        }
    }
}

impl<K> RateLimitBuilder<K> {
    /// `n` calls per `per`: the sustained rate, one call every `per / n` (rounded up to the
    /// nanosecond, so the limit is never exceeded by rounding). Required.
    pub fn rate(mut self, n: u32, per: Duration) -> Self {
        self.rate = Some((n, per));
        self
    }

    /// How many calls may come at once after a quiet spell. Default: `n` of
    /// [`rate`](Self::rate), as governor's `Quota::per_second(n)` and tower's `RateLimit`
    /// (`n` calls per period) allow.
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// Wait mode: a call over the limit waits, inside its response future, until it conforms,
    /// if that is at most `max_wait` away; otherwise it is rejected at once (it could not make
    /// it in time, so waiting would only hold it). Its slot is booked when it starts to wait;
    /// a waiting call whose future is dropped leaves its slot spent.
    /// Default: no waiting, reject at once (governor's `check()`).
    pub fn wait_up_to(mut self, max_wait: Duration) -> Self {
        self.max_wait = Some(max_wait);
        self
    }

    /// Most keys held at once (keyed limiters). Default [`DEFAULT_MAX_KEYS`]. When the table is
    /// full, idle keys (whose allowance is whole again) are dropped, which loses nothing; if
    /// none is idle, a new key's requests use the default bucket until room is made.
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// Gives each key its own allowance, found by `key` ([`HeaderKey`](super::HeaderKey),
    /// [`ExtensionKey`](super::ExtensionKey), [`key_fn`](super::key_fn), or your own
    /// [`Extract`](super::Extract)). Requests without a key share the default bucket.
    pub fn key<K2: KeyExtractor>(self, key: K2) -> RateLimitBuilder<K2> {
        RateLimitBuilder {
            rate: self.rate,
            burst: self.burst,
            max_wait: self.max_wait,
            max_keys: self.max_keys,
            events: self.events,
            key,
        }
    }

    /// Also publish rejections to an [`EventBus`](crate::events::EventBus), as events of
    /// `source` (one stream for every layer; see [`crate::events`]).
    pub fn events(mut self, source: EventSource) -> Self {
        self.events = Some(source);
        self
    }

    /// Checks the configuration and builds the layer.
    ///
    /// # Errors
    /// A [`ConfigError`] when the rate is unset, `n` or `per` or `burst` or `max_keys` is
    /// zero, `wait_up_to` is zero, or `per / n * burst` does not fit in 2^62 ns (146 years).
    pub fn build(self) -> Result<RateLimitLayer<K>, ConfigError>
    where
        K: KeyExtractor,
    {
        let (n, per) = self
            .rate
            .ok_or_else(|| ConfigError::new(LAYER, "rate", "unset", "n >= 1 per period > 0s"))?;
        let burst = self.burst.unwrap_or(n);
        let t = validate(n, per, burst)?;
        crate::error::check::nonzero(LAYER, "max_keys", self.max_keys as u64)?;
        if let Some(w) = self.max_wait {
            crate::error::check::positive(LAYER, "wait_up_to", w)?;
        }
        let shared = Shared {
            params: ParamsCell {
                t: AtomicU64::new(t),
                burst: AtomicU64::new(u64::from(burst)),
                n: AtomicU32::new(n),
                per: AtomicU64::new(nanos(per)),
                max_wait: self.max_wait.map_or(0, nanos),
            },
            clock: Clock::new(),
            default: Padded(AtomicU64::new(0)),
            store: Store::new(self.max_keys),
            stats: Stats::default(),
            events: self.events,
            key: self.key,
        };
        tracing::debug!(
            target: "seawall::rate_limit",
            rate = n, per = ?per, burst, max_keys = self.max_keys, max_wait = ?self.max_wait,
            "rate limit built"
        );
        Ok(RateLimitLayer {
            shared: Arc::new(shared),
        })
    }
}

/// The emission interval for `n` per `per` with `burst`, or why not.
pub(crate) fn validate(n: u32, per: Duration, burst: u32) -> Result<u64, ConfigError> {
    crate::error::check::nonzero(LAYER, "rate", u64::from(n))?;
    crate::error::check::positive(LAYER, "per", per)?;
    crate::error::check::nonzero(LAYER, "burst", u64::from(burst))?;
    let t = per.as_nanos().div_ceil(u128::from(n));
    if t.saturating_mul(u128::from(burst)) > 1 << 62 {
        return Err(ConfigError::new(
            LAYER,
            "burst",
            burst,
            "burst * per / rate <= 2^62 ns (146 years)",
        ));
    }
    Ok(t as u64)
}

/// A rate limit, as a [`tower::Layer`]: GCRA, lock-free, optionally one allowance per key.
///
/// Built with [`RateLimitLayer::builder`]; see [the module docs](super) for an example.
///
/// # Clone
/// Every service this layer value builds, and every clone of the layer and of those services,
/// draws from the same allowance (one `Arc`). A second, independent limit is a second
/// `build()`.
pub struct RateLimitLayer<K: KeyExtractor = Global> {
    pub(crate) shared: Arc<Shared<K>>,
}

impl RateLimitLayer<Global> {
    /// A builder; [`rate`](RateLimitBuilder::rate) is required.
    pub fn builder() -> RateLimitBuilder<Global> {
        RateLimitBuilder::new()
    }
}

impl<K: KeyExtractor> RateLimitLayer<K> {
    /// A handle on the limit's state, for metrics and live changes.
    pub fn handle(&self) -> RateLimitHandle<K> {
        RateLimitHandle::new(Arc::clone(&self.shared))
    }
}

impl<K: KeyExtractor> Clone for RateLimitLayer<K> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K: KeyExtractor + fmt::Debug> fmt::Debug for RateLimitLayer<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S, K: KeyExtractor> Layer<S> for RateLimitLayer<K> {
    type Service = RateLimit<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::new(inner, self)
    }
}

// ---- shared state -------------------------------------------------------------------------

#[repr(align(128))]
#[derive(Debug, Default)]
pub(crate) struct Padded<T>(pub(crate) T);

/// The configuration, changeable at run time. A decision reads `t` and `burst` apart: one that
/// races a change may pair the new rate with the old burst, once.
#[derive(Debug)]
pub(crate) struct ParamsCell {
    t: AtomicU64,
    burst: AtomicU64,
    n: AtomicU32,
    per: AtomicU64,
    max_wait: u64,
}

/// Allowed / limited counts, striped per thread so that counting does not make every call
/// write one shared cache line. Up to `OWNED` live threads each own a stripe and bump it with a
/// plain load and store (one writer: exact, and no locked instruction); any further thread
/// shares one more stripe through `fetch_add`.
#[derive(Debug, Default)]
struct Stats {
    owned: [Padded<Stripe>; OWNED],
    shared: Padded<Stripe>,
}

const OWNED: usize = 16;
/// This thread has no stripe index yet.
const UNASSIGNED: u32 = u32::MAX;

#[derive(Debug, Default)]
struct Stripe {
    allowed: AtomicU64,
    limited: AtomicU64,
}

thread_local! {
    /// This thread's stripe index: `< OWNED` when it owns one, `OWNED` when it uses the
    /// shared one, [`UNASSIGNED`] before its first count. Const-initialised and without a
    /// destructor, so reading it is one thread-local load.
    static STRIPE: Cell<u32> = const { Cell::new(UNASSIGNED) };
}

/// This thread's stripe index, assigning one on first use.
#[cfg(test)]
fn stripe() -> u32 {
    match STRIPE.with(Cell::get) {
        UNASSIGNED => assign_stripe(),
        i => i,
    }
}

static FREE_STRIPES: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Gives an owned stripe index back when its thread ends.
struct ReleaseStripe(u32);

impl Drop for ReleaseStripe {
    fn drop(&mut self) {
        FREE_STRIPES
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(self.0);
    }
}

/// Gives this thread a stripe index: owned indices are process-wide (one per live thread,
/// whatever the limiter) and go back to a free list when their thread ends, so thread churn
/// (a blocking pool, short-lived threads) does not use them up.
#[cold]
#[inline(never)]
fn assign_stripe() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    thread_local! {
        static RELEASE: RefCell<Option<ReleaseStripe>> = const { RefCell::new(None) };
    }
    let reused = FREE_STRIPES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .pop();
    let i = reused.unwrap_or_else(|| NEXT.fetch_add(1, Relaxed).min(OWNED as u32));
    let i = if i < OWNED as u32 {
        // Own it only if it can be given back; a thread already tearing down its locals
        // uses the shared stripe instead.
        let held = RELEASE.try_with(|r| *r.borrow_mut() = Some(ReleaseStripe(i)));
        if held.is_ok() {
            i
        } else {
            FREE_STRIPES
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(i);
            OWNED as u32
        }
    } else {
        OWNED as u32
    };
    STRIPE.with(|s| s.set(i));
    i
}

impl Stats {
    /// One more in the counter `f` picks, in this thread's stripe. The common case (an
    /// owned stripe) is one thread-local load, one compare and one increment.
    #[inline]
    fn bump(&self, f: impl Fn(&Stripe) -> &AtomicU64) {
        let i = STRIPE.with(Cell::get);
        match self.owned.get(i as usize) {
            Some(stripe) => {
                let counter = f(&stripe.0);
                counter.store(counter.load(Relaxed) + 1, Relaxed);
            }
            None => self.bump_slow(i, f),
        }
    }

    #[cold]
    #[inline(never)]
    fn bump_slow(&self, i: u32, f: impl Fn(&Stripe) -> &AtomicU64) {
        let i = if i == UNASSIGNED { assign_stripe() } else { i };
        match self.owned.get(i as usize) {
            Some(stripe) => {
                let counter = f(&stripe.0);
                counter.store(counter.load(Relaxed) + 1, Relaxed);
            }
            None => {
                f(&self.shared.0).fetch_add(1, Relaxed);
            }
        }
    }

    #[inline]
    fn allowed(&self) {
        self.bump(|s| &s.allowed);
    }

    fn limited(&self) {
        self.bump(|s| &s.limited);
    }

    fn sum(&self, f: impl Fn(&Stripe) -> &AtomicU64) -> u64 {
        let owned: u64 = self.owned.iter().map(|s| f(&s.0).load(Relaxed)).sum();
        owned + f(&self.shared.0).load(Relaxed)
    }
}

/// The state every clone shares.
pub(crate) struct Shared<K: KeyExtractor> {
    params: ParamsCell,
    pub(crate) clock: Clock,
    default: Padded<AtomicU64>,
    pub(crate) store: Store<K::Owned>,
    stats: Stats,
    events: Option<EventSource>,
    pub(crate) key: K,
}

impl<K: KeyExtractor + fmt::Debug> fmt::Debug for Shared<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("params", &self.params)
            .field("clock", &self.clock)
            .field("keys", &self.store.len())
            .field("max_keys", &self.store.max_keys())
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// One decision, with what the rate-limit headers need.
#[derive(Debug)]
#[cfg_attr(not(feature = "http"), allow(dead_code))] // quotas are read by the HTTP face only
pub(crate) enum Decision {
    /// Go ahead.
    Now(Quota),
    /// Go ahead at this time (ns on the limiter's clock).
    At(u64, Quota),
    /// Rejected (boxed: the error the call returns, and one pointer to carry around).
    Denied(Box<RateLimited>),
}

/// The bucket a call drew from, right after the call: with the limiter's [`Params`], enough
/// for `RateLimit-*` headers, computed only when asked for.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Quota {
    pub(crate) tat: u64,
    pub(crate) now: u64,
}

#[allow(dead_code)] // read by the HTTP face only
impl Quota {
    pub(crate) fn remaining(&self, p: &Params) -> u64 {
        p.remaining(self.tat, self.now)
    }
    pub(crate) fn reset(&self, p: &Params) -> Duration {
        Duration::from_nanos(p.reset(self.tat, self.now))
    }
}

impl<K: KeyExtractor> Shared<K> {
    #[inline]
    pub(crate) fn params(&self) -> Params {
        Params {
            t: self.params.t.load(Relaxed),
            burst: self.params.burst.load(Relaxed),
            max_wait: self.params.max_wait,
        }
    }

    /// Decides one call whose key is `key` (`None`: the default bucket).
    // Always inlined, as `RateLimit::call`: the happy path is the clock, the CAS and a count.
    #[inline(always)]
    pub(crate) fn acquire(&self, key: Option<&K::Key>) -> Decision {
        let now = self.clock.now();
        let p = self.params();
        match self.decide(key, now, p) {
            Outcome::Allowed { tat } => {
                self.stats.allowed();
                Decision::Now(Quota { tat, now })
            }
            // Out of line: waiting and rejecting (with a second clock read and decision)
            // would make the happy path too big to inline.
            outcome => self.acquire_slow(key, now, p, outcome),
        }
    }

    /// A call that was not admitted at once: it waits, or (after one more look) is rejected.
    #[cold]
    #[inline(never)]
    fn acquire_slow(
        &self,
        key: Option<&K::Key>,
        now: u64,
        p: Params,
        outcome: Outcome,
    ) -> Decision {
        let mut outcome = outcome;
        let mut now = now;
        if let Outcome::Denied { .. } = outcome {
            // A thread preempted between reading the clock and reading the bucket compares a
            // stale time with a fresh bucket. Before rejecting, look at the clock once more.
            let again = self.clock.now();
            if again > now {
                now = again;
                outcome = self.decide(key, now, p);
            }
        }
        match outcome {
            Outcome::Allowed { tat } => {
                self.stats.allowed();
                Decision::Now(Quota { tat, now })
            }
            Outcome::Delayed { tat, at } => {
                self.stats.allowed();
                tracing::trace!(
                    target: "seawall::rate_limit",
                    wait = ?Duration::from_nanos(at - now),
                    "over the limit; waiting for a slot"
                );
                Decision::At(at, Quota { tat, now })
            }
            Outcome::Denied { tat, at } => self.denied(now, tat, at, p),
        }
    }

    #[inline]
    fn decide(&self, key: Option<&K::Key>, now: u64, p: Params) -> Outcome {
        match key {
            None => gcra::acquire(&self.default.0, now, p),
            Some(key) => match self.store.acquire(key, now, p) {
                Keyed::Decided(outcome) => outcome,
                Keyed::Full => gcra::acquire(&self.default.0, now, p),
            },
        }
    }

    #[cold]
    #[inline(never)]
    fn denied(&self, now: u64, tat: u64, at: u64, p: Params) -> Decision {
        self.stats.limited();
        let retry_after = Duration::from_nanos(at.saturating_sub(now));
        let reset = Duration::from_nanos(p.reset(tat, now));
        let limit = u32::try_from(p.burst).unwrap_or(u32::MAX);
        tracing::debug!(
            target: "seawall::rate_limit",
            retry_after = ?retry_after,
            "rate limited"
        );
        if let Some(events) = &self.events {
            events.publish(
                "rate_limit",
                crate::events::EventKind::Rejected {
                    retry_after: Some(retry_after),
                },
            );
        }
        Decision::Denied(Box::new(
            RateLimited::new(retry_after).with_quota(limit, reset),
        ))
    }

    /// The bucket of `key` (`None`: the default one) as it is.
    pub(crate) fn tat(&self, key: Option<&K::Key>) -> u64 {
        match key {
            None => self.default.0.load(Relaxed),
            Some(k) => self.store.tat(k),
        }
    }

    pub(crate) fn allowed(&self) -> u64 {
        self.stats.sum(|s| &s.allowed)
    }

    pub(crate) fn limited(&self) -> u64 {
        self.stats.sum(|s| &s.limited)
    }

    pub(crate) fn rate(&self) -> (u32, Duration) {
        (
            self.params.n.load(Relaxed),
            Duration::from_nanos(self.params.per.load(Relaxed)),
        )
    }

    pub(crate) fn set_rate(&self, n: u32, per: Duration) -> Result<(), ConfigError> {
        let burst = self.params.burst.load(Relaxed) as u32;
        let t = validate(n, per, burst)?;
        let old = self.params.t.swap(t, Relaxed);
        self.params.n.store(n, Relaxed);
        self.params.per.store(nanos(per), Relaxed);
        // What each bucket has spent is kept as calls, and refills at the new rate: its debt,
        // `tat - now`, is rescaled from the old interval to the new one.
        let now = self.clock.now();
        let rescale = |tat: &AtomicU64| {
            let _ = tat.fetch_update(Relaxed, Relaxed, |v| {
                let debt = v.checked_sub(now)?;
                let debt = (u128::from(debt) * u128::from(t) / u128::from(old)) as u64;
                Some(now + debt)
            });
        };
        rescale(&self.default.0);
        self.store.for_each(rescale);
        tracing::info!(target: "seawall::rate_limit", rate = n, per = ?per, "rate changed");
        Ok(())
    }

    pub(crate) fn set_burst(&self, burst: u32) -> Result<(), ConfigError> {
        let (n, per) = self.rate();
        validate(n, per, burst)?;
        self.params.burst.store(u64::from(burst), Relaxed);
        tracing::info!(target: "seawall::rate_limit", burst, "burst changed");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripes_of_ended_threads_are_reused() {
        for _ in 0..3 * OWNED {
            std::thread::spawn(stripe).join().unwrap();
        }
        assert!(std::thread::spawn(stripe).join().unwrap() < OWNED as u32);
    }

    #[test]
    fn counts_from_many_threads_add_up_exactly() {
        let layer = RateLimitLayer::builder()
            .rate(u32::MAX, Duration::from_secs(1))
            .burst(u32::MAX)
            .build()
            .unwrap();
        let threads: Vec<_> = (0..2 * OWNED + 3)
            .map(|_| {
                let shared = Arc::clone(&layer.shared);
                std::thread::spawn(move || {
                    for _ in 0..1_000 {
                        assert!(matches!(shared.acquire(None), Decision::Now(_)));
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(layer.handle().allowed(), (2 * OWNED as u64 + 3) * 1_000);
    }
}
