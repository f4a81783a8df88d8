//! The state every clone of a rate limit shares: the default bucket, the key table, the
//! parameters (changeable live) and the exact allowed / limited counts.
//!
//! A decision reads the clock, then decides on one bucket with [`gcra::acquire`] (one
//! compare-and-swap), then counts its outcome in the calling thread's stripe
//! ([`crate::stripe`]: every count is exact at any thread count). The loom models in
//! `src/loom_models/rate_limit.rs` drive [`Shared::acquire_with`] with the time and the thread
//! number as parameters.

use super::clock::{nanos, Clock};
use super::gcra::{self, Outcome, Params};
use super::key::KeyExtractor;
use super::store::{Keyed, Store};
use crate::error::{ConfigError, RateLimited};
use crate::events::EventSource;
use crate::stripe::{self, CachePadded, Counter, Striped};
use crate::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::fmt;
use std::time::Duration;

const LAYER: &str = "rate_limit";

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

/// A validated configuration: what [`Shared::new`] starts from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    pub(crate) n: u32,
    pub(crate) per: Duration,
    pub(crate) burst: u32,
    /// The emission interval, from [`validate`].
    pub(crate) t: u64,
    pub(crate) max_wait: Option<Duration>,
    pub(crate) max_keys: usize,
}

/// The configuration, changeable at run time. A decision reads `t` and `burst` apart, and
/// [`Shared::set_rate_at`] swaps `t` before it rescales each bucket; so a decision that races a
/// change may pair the new rate with the old burst, or judge a bucket by the interval it is not
/// (yet) expressed in. Around the change that bucket then admits one call more or fewer than
/// either rate alone would (the loom model `a_rate_change_racing_checks_is_off_by_at_most_one_call`
/// checks this bound for two threads racing a change); decisions after it are exact again.
#[derive(Debug)]
struct ParamsCell {
    t: AtomicU64,
    burst: AtomicU64,
    n: AtomicU32,
    per: AtomicU64,
    max_wait: u64,
}

/// One stripe of the allowed / limited counts (see [`crate::stripe`]).
#[derive(Debug, Default)]
struct Stats {
    allowed: Counter,
    limited: Counter,
}

/// The state every clone shares.
pub(crate) struct Shared<K: KeyExtractor> {
    params: ParamsCell,
    pub(crate) clock: Clock,
    default: CachePadded<AtomicU64>,
    pub(crate) store: Store<K::Owned>,
    stats: Striped<Stats>,
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
/// for `RateLimit-*` headers, computed only when asked for. `now` is the limiter's clock
/// reading the decision used.
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
    /// The state of a new limit: every bucket full, every count zero, `stripes` stripes of
    /// counts ([`stripe::stripe_count`] in a layer).
    pub(crate) fn new(
        settings: Settings,
        key: K,
        events: Option<EventSource>,
        clock: Clock,
        stripes: usize,
    ) -> Self {
        Self {
            params: ParamsCell {
                t: AtomicU64::new(settings.t),
                burst: AtomicU64::new(u64::from(settings.burst)),
                n: AtomicU32::new(settings.n),
                per: AtomicU64::new(nanos(settings.per)),
                max_wait: settings.max_wait.map_or(0, nanos),
            },
            clock,
            default: CachePadded(AtomicU64::new(0)),
            store: Store::new(settings.max_keys),
            stats: Striped::new(stripes, |_| Stats::default()),
            events,
            key,
        }
    }

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
        self.acquire_with(key, stripe::thread_number(), || self.clock.now())
    }

    /// [`acquire`](Self::acquire) by the thread numbered `thread`, reading the time from
    /// `clock` (once, or twice before a rejection).
    #[inline(always)]
    pub(crate) fn acquire_with(
        &self,
        key: Option<&K::Key>,
        thread: usize,
        clock: impl Fn() -> u64,
    ) -> Decision {
        let now = clock();
        let p = self.params();
        match self.decide(key, now, p) {
            Outcome::Allowed { tat } => {
                self.count(thread, |s| &s.allowed);
                Decision::Now(Quota { tat, now })
            }
            // Out of line: waiting and rejecting (with a second clock read and decision)
            // would make the happy path too big to inline.
            outcome => self.acquire_slow(key, thread, clock, now, p, outcome),
        }
    }

    /// One more in the counter `which` picks, in the stripe of thread `thread`.
    #[inline(always)]
    fn count(&self, thread: usize, which: impl Fn(&Stats) -> &Counter) {
        let local = self.stats.cell_of(thread);
        which(local.cell).add(local.owner, 1);
    }

    /// A call that was not admitted at once: it waits, or (after one more look) is rejected.
    #[cold]
    #[inline(never)]
    fn acquire_slow(
        &self,
        key: Option<&K::Key>,
        thread: usize,
        clock: impl Fn() -> u64,
        now: u64,
        p: Params,
        outcome: Outcome,
    ) -> Decision {
        let mut outcome = outcome;
        let mut now = now;
        if let Outcome::Denied { .. } = outcome {
            // A thread preempted between reading the clock and reading the bucket compares a
            // stale time with a fresh bucket. Before rejecting, look at the clock once more.
            let again = clock();
            if again > now {
                now = again;
                outcome = self.decide(key, now, p);
            }
        }
        match outcome {
            Outcome::Allowed { tat } => {
                self.count(thread, |s| &s.allowed);
                Decision::Now(Quota { tat, now })
            }
            Outcome::Delayed { tat, at } => {
                self.count(thread, |s| &s.allowed);
                tracing::trace!(
                    target: "seawall::rate_limit",
                    wait = ?Duration::from_nanos(at - now),
                    "over the limit; waiting for a slot"
                );
                Decision::At(at, Quota { tat, now })
            }
            Outcome::Denied { tat, at } => {
                self.count(thread, |s| &s.limited);
                self.denied(now, tat, at, p)
            }
        }
    }

    #[inline]
    fn decide(&self, key: Option<&K::Key>, now: u64, p: Params) -> Outcome {
        match key {
            None => gcra::acquire(&self.default, now, p),
            Some(key) => match self.store.acquire(key, now, p) {
                Keyed::Decided(outcome) => outcome,
                Keyed::Full => gcra::acquire(&self.default, now, p),
            },
        }
    }

    #[cold]
    #[inline(never)]
    fn denied(&self, now: u64, tat: u64, at: u64, p: Params) -> Decision {
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
            None => self.default.load(Relaxed),
            Some(k) => self.store.tat(k),
        }
    }

    /// Calls admitted so far, exactly (waiting ones included).
    pub(crate) fn allowed(&self) -> u64 {
        stripe::sum(&self.stats, |s| &s.allowed)
    }

    /// Calls rejected so far, exactly.
    pub(crate) fn limited(&self) -> u64 {
        stripe::sum(&self.stats, |s| &s.limited)
    }

    pub(crate) fn rate(&self) -> (u32, Duration) {
        (
            self.params.n.load(Relaxed),
            Duration::from_nanos(self.params.per.load(Relaxed)),
        )
    }

    pub(crate) fn set_rate(&self, n: u32, per: Duration) -> Result<(), ConfigError> {
        self.set_rate_at(n, per, self.clock.now())
    }

    /// [`set_rate`](Self::set_rate) at `now` on the limiter's clock.
    pub(crate) fn set_rate_at(&self, n: u32, per: Duration, now: u64) -> Result<(), ConfigError> {
        let burst = self.params.burst.load(Relaxed) as u32;
        let t = validate(n, per, burst)?;
        let old = self.params.t.swap(t, Relaxed);
        self.params.n.store(n, Relaxed);
        self.params.per.store(nanos(per), Relaxed);
        // What each bucket has spent is kept as calls, and refills at the new rate: its debt,
        // `tat - now`, is rescaled from the old interval to the new one.
        let rescale = |tat: &AtomicU64| {
            let _ = tat.fetch_update(Relaxed, Relaxed, |v| {
                let debt = v.checked_sub(now)?;
                let debt = (u128::from(debt) * u128::from(t) / u128::from(old)) as u64;
                Some(now + debt)
            });
        };
        rescale(&self.default);
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

#[cfg(all(test, not(seawall_loom)))]
mod tests {
    use super::*;
    use crate::rate_limit::key::Global;
    use std::sync::Arc;

    fn shared(stripes: usize) -> Shared<Global> {
        let t = validate(u32::MAX, Duration::from_secs(1), u32::MAX).unwrap();
        let settings = Settings {
            n: u32::MAX,
            per: Duration::from_secs(1),
            burst: u32::MAX,
            t,
            max_wait: None,
            max_keys: 1,
        };
        Shared::new(settings, Global, None, Clock::new(), stripes)
    }

    #[test]
    fn counts_from_more_threads_than_stripes_add_up_exactly() {
        // Four stripes, 35 threads: most threads share a stripe with its owner.
        let shared = Arc::new(shared(4));
        let threads: Vec<_> = (0..35)
            .map(|_| {
                let shared = Arc::clone(&shared);
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
        assert_eq!(shared.allowed(), 35 * 1_000);
        assert_eq!(shared.limited(), 0);
    }
}
