//! Backoff delays and the four jitter strategies of the AWS Architecture Blog's
//! ["Exponential Backoff And Jitter"](https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/).

use crate::splitmix::{mix, GAMMA};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How a backoff delay is randomised, named after the AWS Architecture Blog's
/// ["Exponential Backoff And Jitter"](https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/).
///
/// With `base` the initial delay, `cap` the maximum delay, `n` the retry number counted from 0,
/// `exp = min(cap, base * multiplier^n + step * n)` (`step` is zero unless the backoff is
/// [linear](super::RetryLayerBuilder::linear_backoff)) and `random(a, b)` a uniform draw in
/// `[a, b]`:
///
/// | strategy | delay before retry `n` |
/// |---|---|
/// | [`Jitter::None`] | `exp` |
/// | [`Jitter::Full`] | `random(0, exp)` |
/// | [`Jitter::Equal`] | `exp / 2 + random(0, exp / 2)` |
/// | [`Jitter::Decorrelated`] | `min(cap, random(base, previous * 3))`, `previous` starting at `base` |
///
/// Decorrelated jitter grows by the blog's fixed factor of 3 and ignores `multiplier`.
/// Every delay lies in `[0, cap]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Jitter {
    /// Plain exponential backoff, no randomness.
    None,
    /// "Full Jitter": uniform in `[0, exp]`. The default: the blog's recommendation, and what
    /// the AWS SDKs use.
    #[default]
    Full,
    /// "Equal Jitter": half the exponential delay, plus a uniform draw over the other half.
    Equal,
    /// "Decorrelated Jitter": each delay is drawn from `[base, previous * 3]`, capped.
    Decorrelated,
}

/// The delay schedule: initial delay, multiplier, linear step, cap and jitter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Backoff {
    pub(crate) initial: Duration,
    pub(crate) multiplier: f64,
    /// Added once per retry: `Duration::ZERO` for exponential and fixed backoff.
    pub(crate) step: Duration,
    pub(crate) max: Duration,
    pub(crate) jitter: Jitter,
}

impl Backoff {
    /// The delay before retry number `n` (0 for the first retry), given the previous delay
    /// (used by decorrelated jitter; `None` before the first retry).
    pub(crate) fn delay(&self, n: u32, previous: Option<Duration>, rng: &mut SmallRng) -> Duration {
        let max = self.max;
        match self.jitter {
            Jitter::None => self.exponential(n),
            Jitter::Full => uniform(rng, Duration::ZERO, self.exponential(n)),
            Jitter::Equal => {
                let exp = self.exponential(n);
                let half = exp / 2;
                half + uniform(rng, Duration::ZERO, exp - half)
            }
            Jitter::Decorrelated => {
                let prev = previous.unwrap_or(self.initial).max(self.initial);
                let high = prev.saturating_mul(3);
                uniform(rng, self.initial, high).min(max)
            }
        }
    }

    /// `min(max, initial * multiplier^n + step * n)`: the delay before jitter, without
    /// overflow or a panic for any `n`.
    pub(crate) fn exponential(&self, n: u32) -> Duration {
        self.grown(n)
            .saturating_add(self.step.saturating_mul(n))
            .min(self.max)
    }

    /// `min(max, initial * multiplier^n)`.
    fn grown(&self, n: u32) -> Duration {
        let factor = self.multiplier.powi(n.min(i32::MAX as u32) as i32);
        if self.initial.is_zero() {
            // Not `0 * factor`: a factor that overflowed to infinity would make it NaN.
            return Duration::ZERO;
        }
        if factor == 1.0 {
            // Fixed and linear backoff: exact, with no round trip through floating point.
            return self.initial.min(self.max);
        }
        let secs = self.initial.as_secs_f64() * factor;
        if secs.is_finite() && secs < self.max.as_secs_f64() {
            Duration::from_secs_f64(secs).min(self.max)
        } else {
            self.max
        }
    }
}

/// A uniform draw in `[low, high]` at nanosecond resolution (`low` when `high <= low`).
fn uniform(rng: &mut SmallRng, low: Duration, high: Duration) -> Duration {
    if high <= low {
        return low;
    }
    let lo = u64::try_from(low.as_nanos()).unwrap_or(u64::MAX);
    let hi = u64::try_from(high.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.random_range(lo..=hi))
}

/// A seedable source of RNGs shared by every clone, touched only when a retry happens.
///
/// It is lock-free: a SplitMix64-style counter (one `fetch_add` per retry) seeds a fresh
/// `SmallRng` for each delay, so concurrent retries never wait on each other, and a seeded
/// layer driven by one request at a time gives the same delays on every run.
#[derive(Debug)]
pub(crate) struct SeedSource {
    next: AtomicU64,
}

impl SeedSource {
    pub(crate) const fn new(seed: u64) -> Self {
        Self {
            next: AtomicU64::new(seed),
        }
    }

    /// An RNG for one delay.
    pub(crate) fn rng(&self) -> SmallRng {
        let z = self
            .next
            .fetch_add(GAMMA, Ordering::Relaxed)
            .wrapping_add(GAMMA);
        SmallRng::seed_from_u64(mix(z))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff(jitter: Jitter) -> Backoff {
        Backoff {
            initial: Duration::from_millis(100),
            multiplier: 2.0,
            step: Duration::ZERO,
            max: Duration::from_secs(1),
            jitter,
        }
    }

    #[test]
    fn a_linear_step_adds_once_per_retry_exactly_and_is_capped() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            multiplier: 1.0,
            step: Duration::from_millis(30),
            max: Duration::from_millis(200),
            jitter: Jitter::None,
        };
        let got: Vec<_> = (0..5).map(|n| b.exponential(n).as_millis()).collect();
        assert_eq!(got, [100, 130, 160, 190, 200]);
        assert_eq!(b.exponential(u32::MAX), Duration::from_millis(200));
    }

    #[test]
    fn exponential_is_capped_and_never_overflows() {
        let b = backoff(Jitter::None);
        assert_eq!(b.exponential(0), Duration::from_millis(100));
        assert_eq!(b.exponential(3), Duration::from_millis(800));
        assert_eq!(b.exponential(4), Duration::from_secs(1));
        assert_eq!(b.exponential(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn a_zero_initial_delay_stays_zero_however_far_the_factor_grows() {
        let b = Backoff {
            initial: Duration::ZERO,
            multiplier: 1e300,
            step: Duration::ZERO,
            max: Duration::from_secs(1),
            jitter: Jitter::None,
        };
        assert_eq!(b.exponential(0), Duration::ZERO);
        assert_eq!(b.exponential(u32::MAX), Duration::ZERO);
    }

    #[test]
    fn jittered_delays_stay_in_their_ranges() {
        let src = SeedSource::new(7);
        for n in 0..20 {
            let exp = backoff(Jitter::None).exponential(n);
            let full = backoff(Jitter::Full).delay(n, None, &mut src.rng());
            assert!(full <= exp);
            let equal = backoff(Jitter::Equal).delay(n, None, &mut src.rng());
            assert!(equal >= exp / 2 && equal <= exp);
            let dec = backoff(Jitter::Decorrelated).delay(n, Some(exp), &mut src.rng());
            assert!(dec >= Duration::from_millis(100) && dec <= Duration::from_secs(1));
        }
    }

    #[test]
    fn same_seed_same_delays() {
        let a = SeedSource::new(42);
        let b = SeedSource::new(42);
        let bk = backoff(Jitter::Full);
        for n in 0..5 {
            assert_eq!(
                bk.delay(n, None, &mut a.rng()),
                bk.delay(n, None, &mut b.rng())
            );
        }
    }
}
