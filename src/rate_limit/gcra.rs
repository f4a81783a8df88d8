//! The generic cell rate algorithm on one `AtomicU64`.
//!
//! A bucket is its theoretical arrival time `tat`, in nanoseconds on the limiter's clock: the
//! time at which the bucket would be full again. With `t` the emission interval (period / rate)
//! and `tau = t * (burst - 1)` the tolerance, a call at `now` conforms when
//! `now >= tat - tau`; it then moves `tat` to `max(tat, now) + t`. A call that does not conform
//! leaves `tat` untouched, so a rejected call spends nothing. `tat = 0` is a full bucket, which
//! is also what an absent key means: an entry whose `tat <= now` carries no information and can
//! be dropped without changing any decision.

use crate::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The limiter's parameters at the time of one decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Params {
    /// Emission interval in nanoseconds (>= 1).
    pub(crate) t: u64,
    /// Burst (>= 1).
    pub(crate) burst: u64,
    /// Longest wait in nanoseconds; 0 rejects at once.
    pub(crate) max_wait: u64,
}

impl Params {
    #[inline]
    pub(crate) fn tau(&self) -> u64 {
        self.t.saturating_mul(self.burst - 1)
    }

    /// Calls that would conform at `now` given `tat`.
    #[inline]
    pub(crate) fn remaining(&self, tat: u64, now: u64) -> u64 {
        let tat = tat.max(now);
        match (now.saturating_add(self.tau())).checked_sub(tat) {
            Some(slack) => (slack / self.t + 1).min(self.burst),
            None => 0,
        }
    }

    /// Nanoseconds from `now` until the bucket is full again.
    #[inline]
    pub(crate) fn reset(&self, tat: u64, now: u64) -> u64 {
        tat.saturating_sub(now)
    }
}

/// What one call got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Admitted now; `tat` is the bucket after it.
    Allowed { tat: u64 },
    /// Admitted at `at` (a slot is booked); `tat` is the bucket after it.
    Delayed { tat: u64, at: u64 },
    /// Not admitted, nothing spent; it would conform from `at`. `tat` is the bucket as it is.
    Denied { tat: u64, at: u64 },
}

/// Decides one call at `now` against the bucket `state`, lock-free.
#[inline]
pub(crate) fn acquire(state: &AtomicU64, now: u64, p: Params) -> Outcome {
    let tau = p.tau();
    let mut tat = state.load(Relaxed);
    loop {
        let earliest = tat.saturating_sub(tau);
        let wait = earliest.saturating_sub(now);
        if wait > p.max_wait || (wait > 0 && p.max_wait == 0) {
            return Outcome::Denied { tat, at: earliest };
        }
        let next = tat.max(now).saturating_add(p.t);
        // Relaxed is enough: the bucket is this one word, and a read-modify-write always sees
        // the latest value in the word's modification order.
        match state.compare_exchange_weak(tat, next, Relaxed, Relaxed) {
            Ok(_) if wait == 0 => return Outcome::Allowed { tat: next },
            Ok(_) => {
                return Outcome::Delayed {
                    tat: next,
                    at: earliest,
                }
            }
            Err(actual) => tat = actual,
        }
    }
}

#[cfg(all(test, not(seawall_loom)))]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn p(t: u64, burst: u64) -> Params {
        Params {
            t,
            burst,
            max_wait: 0,
        }
    }

    #[test]
    fn a_full_bucket_admits_burst_then_denies_without_spending() {
        let s = AtomicU64::new(0);
        let p = p(SEC, 3);
        let now = 10 * SEC;
        for left in [2, 1, 0] {
            let Outcome::Allowed { tat } = acquire(&s, now, p) else {
                panic!("denied")
            };
            assert_eq!(p.remaining(tat, now), left);
        }
        let before = s.load(Relaxed);
        assert_eq!(
            acquire(&s, now, p),
            Outcome::Denied {
                tat: before,
                at: now + SEC
            }
        );
        assert_eq!(s.load(Relaxed), before);
    }

    #[test]
    fn waiting_books_a_slot_within_max_wait_only() {
        let s = AtomicU64::new(0);
        let p = Params {
            t: SEC,
            burst: 1,
            max_wait: SEC,
        };
        assert!(matches!(acquire(&s, 0, p), Outcome::Allowed { .. }));
        assert_eq!(
            acquire(&s, 0, p),
            Outcome::Delayed {
                tat: 2 * SEC,
                at: SEC
            }
        );
        assert!(matches!(acquire(&s, 0, p), Outcome::Denied { at, .. } if at == 2 * SEC));
    }

    #[test]
    fn remaining_and_reset_of_a_fresh_bucket() {
        let p = p(SEC / 10, 5);
        assert_eq!(p.remaining(0, 7 * SEC), 5);
        assert_eq!(p.reset(0, 7 * SEC), 0);
        assert_eq!(p.remaining(7 * SEC + 5 * SEC / 10, 7 * SEC), 0);
    }
}
