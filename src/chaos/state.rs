//! The state one chaos layer value shares with its services and handles: the switch, the fault
//! mix as the draw reads it, the seeded random stream and the counters.
//!
//! Every field is its own atomic, read without a lock. A call that races with
//! [`Shared::set_faults`] may draw against a mix of old and new settings; each value it reads
//! is one that was set, and no mix read that way can make the draw fail. Whatever was set
//! before [`Shared::set_enabled`] turned the layer on is seen by every call that sees it on
//! (release store, acquire load).

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering::*};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::faults::{Faults, Thresholds, ONE};
use crate::splitmix::{mix, GAMMA};

/// What one call gets: an optional delay, then an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Draw {
    pub(crate) delay: Option<Duration>,
    pub(crate) outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Pass,
    Error,
    Status(u16),
    Hang,
    Disconnect,
}

#[derive(Debug)]
pub(crate) struct Shared {
    enabled: AtomicBool,
    /// Whether the layer can answer with a status (built with `http()`); a generic layer's
    /// status threshold stays 0.
    pub(crate) http: bool,
    /// The next state of the SplitMix64 stream; each call takes two numbers from it.
    stream: AtomicU64,
    latency: AtomicU64,
    latency_low: AtomicU64,
    latency_span: AtomicU64,
    error: AtomicU64,
    status: AtomicU64,
    status_code: AtomicU16,
    hang: AtomicU64,
    disconnect: AtomicU64,
    pub(crate) counters: Counters,
    /// The mix as it was set, for the handle; its lock also orders concurrent `set_faults`.
    faults: Mutex<Faults>,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) drawn: AtomicU64,
    pub(crate) delayed: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) statuses: AtomicU64,
    pub(crate) hangs: AtomicU64,
    pub(crate) disconnects: AtomicU64,
}

impl Shared {
    /// `faults` must be valid for `http`.
    pub(crate) fn new(faults: Faults, http: bool, seed: u64, enabled: bool) -> Self {
        let shared = Self {
            enabled: AtomicBool::new(false),
            http,
            stream: AtomicU64::new(seed),
            latency: AtomicU64::new(0),
            latency_low: AtomicU64::new(0),
            latency_span: AtomicU64::new(0),
            error: AtomicU64::new(0),
            status: AtomicU64::new(0),
            status_code: AtomicU16::new(0),
            hang: AtomicU64::new(0),
            disconnect: AtomicU64::new(0),
            counters: Counters::default(),
            faults: Mutex::new(faults),
        };
        shared.store(faults.thresholds());
        shared.set_enabled(enabled);
        shared
    }

    #[inline]
    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled.load(Acquire)
    }

    pub(crate) fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Release);
    }

    pub(crate) fn faults(&self) -> Faults {
        *self.lock()
    }

    /// `faults` must be valid for this layer (`validate(self.http)`).
    pub(crate) fn set_faults(&self, faults: Faults) {
        let mut current = self.lock();
        self.store(faults.thresholds());
        *current = faults;
    }

    pub(crate) fn reseed(&self, seed: u64) {
        self.stream.store(seed, Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, Faults> {
        // The mix is a plain value written whole: a panic elsewhere cannot leave it half set.
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn store(&self, t: Thresholds) {
        debug_assert!(
            self.http || t.status == 0,
            "a generic layer injects no status"
        );
        self.latency.store(t.latency, Relaxed);
        self.latency_low.store(t.latency_low, Relaxed);
        self.latency_span.store(t.latency_span, Relaxed);
        self.error.store(t.error, Relaxed);
        self.status.store(t.status, Relaxed);
        self.status_code.store(t.status_code, Relaxed);
        self.hang.store(t.hang, Relaxed);
        self.disconnect.store(t.disconnect, Relaxed);
    }

    /// Draws one call's fate, or `None` when the layer is off (then nothing is drawn or
    /// counted).
    #[inline]
    pub(crate) fn draw(&self) -> Option<Draw> {
        if !self.is_enabled() {
            return None;
        }
        Some(self.draw_enabled())
    }

    fn draw_enabled(&self) -> Draw {
        let z = self.stream.fetch_add(GAMMA.wrapping_mul(2), Relaxed);
        let a = mix(z.wrapping_add(GAMMA));
        let b = mix(z.wrapping_add(GAMMA.wrapping_mul(2)));
        // Two independent 32-bit numbers from `a`, one 64-bit number from `b`.
        let (latency_roll, outcome_roll) = (a >> 32, a & (ONE - 1));
        let c = &self.counters;
        c.drawn.fetch_add(1, Relaxed);

        // The outcomes share the range 0..ONE in a fixed order, each bound the sum of the
        // probabilities up to it; a roll past the last bound passes.
        let error = self.error.load(Relaxed);
        let status = error + self.status.load(Relaxed);
        let hang = status + self.hang.load(Relaxed);
        let disconnect = hang + self.disconnect.load(Relaxed);
        let (outcome, counter) = if outcome_roll < error {
            (Outcome::Error, Some(&c.errors))
        } else if outcome_roll < status {
            (
                Outcome::Status(self.status_code.load(Relaxed)),
                Some(&c.statuses),
            )
        } else if outcome_roll < hang {
            (Outcome::Hang, Some(&c.hangs))
        } else if outcome_roll < disconnect {
            (Outcome::Disconnect, Some(&c.disconnects))
        } else {
            (Outcome::Pass, None)
        };
        if let Some(counter) = counter {
            counter.fetch_add(1, Relaxed);
        }

        // A hang never answers: a delay before it would change nothing, and is not counted.
        let delay =
            (latency_roll < self.latency.load(Relaxed) && outcome != Outcome::Hang).then(|| {
                let span = self.latency_span.load(Relaxed);
                // `b` scaled into 0..=span without a division (Lemire's multiply-shift).
                let extra = ((u128::from(b) * (u128::from(span) + 1)) >> 64) as u64;
                c.delayed.fetch_add(1, Relaxed);
                Duration::from_nanos(self.latency_low.load(Relaxed).saturating_add(extra))
            });
        Draw { delay, outcome }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disabled_layer_draws_nothing_and_keeps_its_stream() {
        let shared = Shared::new(Faults::none().error(1.0), false, 1, false);
        assert_eq!(shared.draw(), None);
        assert_eq!(shared.counters.drawn.load(Relaxed), 0);
        assert_eq!(shared.stream.load(Relaxed), 1);
    }

    #[test]
    fn probability_one_always_and_zero_never() {
        let shared = Shared::new(Faults::none().hang(1.0), false, 3, true);
        for _ in 0..1000 {
            assert_eq!(shared.draw().unwrap().outcome, Outcome::Hang);
        }
        shared.set_faults(Faults::none());
        for _ in 0..1000 {
            assert_eq!(
                shared.draw().unwrap(),
                Draw {
                    delay: None,
                    outcome: Outcome::Pass
                }
            );
        }
    }
}
