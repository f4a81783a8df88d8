//! Runtime control and observation of one breaker.

use super::state::{Core, CLOSED, DISABLED, FORCED_OPEN};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// The state of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Calls go through; outcomes are counted towards tripping.
    Closed,
    /// Calls are rejected with [`CircuitOpen`](crate::error::CircuitOpen) until the open
    /// duration has passed; the first call after it half-opens the breaker.
    Open,
    /// A limited number of probe calls go through; the rest are rejected.
    HalfOpen,
    /// Opened by [`CircuitBreakerHandle::force_open`]: rejects every call until told otherwise.
    ForcedOpen,
    /// Turned off by [`CircuitBreakerHandle::disable`]: every call goes through, none is
    /// counted towards tripping (the metrics still count them).
    Disabled,
}

impl State {
    /// The state's name in `SCREAMING_CASE`, as in the classic pattern (`"HALF_OPEN"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            State::Closed => "CLOSED",
            State::Open => "OPEN",
            State::HalfOpen => "HALF_OPEN",
            State::ForcedOpen => "FORCED_OPEN",
            State::Disabled => "DISABLED",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change of state, sent to every [`subscribe`](CircuitBreakerHandle::subscribe)r.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StateChange {
    /// The state before.
    pub from: State,
    /// The state after.
    pub to: State,
    /// When the breaker opened: how long it stays open.
    pub open_for: Option<Duration>,
}

/// A snapshot of a breaker's counters, from [`CircuitBreakerHandle::metrics`].
///
/// Counters are cumulative since the layer was built or last [`reset`](CircuitBreakerHandle::reset).
/// Under concurrency the counters of different stripes are read one after another, so a
/// snapshot is not one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct Metrics {
    /// The state.
    pub state: State,
    /// Calls that went through and ended with a success or a failure (ignored ones excluded).
    pub calls: u64,
    /// Calls classified as failures.
    pub failures: u64,
    /// Calls slower than the slow-call threshold (0 when slow-call detection is off).
    pub slow_calls: u64,
    /// Calls rejected without being made (in [metrics-only](super::Builder::metrics_only)
    /// mode: the calls it would have rejected, which went through).
    pub rejections: u64,
    /// Calls whose outcome the classifier ignored.
    pub ignored: u64,
    /// The current run of failures (consecutive-failures policy, closed state; else 0).
    pub consecutive_failures: u32,
    /// Calls in the current window (for the consecutive-failures policy: `calls`).
    pub window_calls: u64,
    /// Failure rate of the current window, `0.0..=1.0` (for the consecutive-failures policy:
    /// `failures / calls` since the start).
    pub failure_rate: f64,
    /// Slow-call rate of the current window, `0.0..=1.0`.
    pub slow_call_rate: f64,
    /// With [adaptive throttling](super::Builder::adaptive_throttling): the probability that
    /// the next call is rejected, `0.0..=1.0` (0 for other policies).
    pub rejection_probability: f64,
    /// While open: how long until the next call half-opens the breaker.
    pub retry_after: Option<Duration>,
}

/// Controls and observes one breaker: every service built by the layer value it came from, and
/// every clone of them.
///
/// # Clone
/// Cheap; every clone controls the same breaker.
#[derive(Clone)]
pub struct CircuitBreakerHandle {
    core: Arc<Core>,
}

impl fmt::Debug for CircuitBreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerHandle")
            .field("state", &self.state())
            .finish()
    }
}

impl CircuitBreakerHandle {
    pub(crate) fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    /// The current state.
    ///
    /// True without traffic: once the open duration is over the breaker reports (and is)
    /// [`State::HalfOpen`], and once half-open has waited longer than
    /// [`Builder::max_wait_in_half_open`](super::Builder::max_wait_in_half_open) it moves on.
    pub fn state(&self) -> State {
        self.core.state()
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> Metrics {
        self.core.metrics()
    }

    /// Opens the breaker until [`force_closed`](Self::force_closed), [`reset`](Self::reset) or
    /// [`disable`](Self::disable). Rejections carry no `retry_after`.
    pub fn force_open(&self) {
        self.core.transition(None, FORCED_OPEN);
    }

    /// Closes the breaker now, with an empty window. It trips again as configured.
    pub fn force_closed(&self) {
        self.core.transition(None, CLOSED);
    }

    /// Closes the breaker with an empty window, forgets past trips (the open duration starts
    /// over from its base) and sets the metrics' counters back to zero.
    pub fn reset(&self) {
        self.core.reset();
    }

    /// Lets every call through and stops counting outcomes towards tripping, until
    /// [`force_closed`](Self::force_closed), [`reset`](Self::reset) or
    /// [`force_open`](Self::force_open).
    pub fn disable(&self) {
        self.core.transition(None, DISABLED);
    }

    /// Opens the breaker for `duration` (at most a day), as an operator's decision: it then
    /// half-opens as if it had tripped (the open duration's growth does not count it).
    ///
    /// # Errors
    /// [`IllegalTransition`] from [`State::ForcedOpen`] or [`State::Disabled`]: release those
    /// first ([`force_closed`](Self::force_closed) or [`reset`](Self::reset)); and for a
    /// duration of zero or above a day.
    pub fn open_for(&self, duration: Duration) -> Result<(), IllegalTransition> {
        let open = IllegalTransition::to(State::Open);
        if duration.is_zero() || duration > crate::error::MAX_DELAY {
            return Err(open(self.state()));
        }
        self.core.open_for(duration).map_err(open)
    }

    /// Half-opens the breaker now: its probes go through without waiting out the open
    /// duration.
    ///
    /// # Errors
    /// [`IllegalTransition`] unless the breaker is [`State::Open`] or [`State::ForcedOpen`].
    pub fn half_open(&self) -> Result<(), IllegalTransition> {
        self.core
            .half_open()
            .map_err(IllegalTransition::to(State::HalfOpen))
    }

    /// Subscribes to changes of state. Each receiver sees every change made after it
    /// subscribed; one that lags more than the configured capacity behind gets
    /// [`RecvError::Lagged`](broadcast::error::RecvError::Lagged) and then the newest changes.
    ///
    /// The transition to half-open happens when the open duration is over: on a timer of the
    /// tokio runtime that opened the breaker, or without one at the next call or
    /// [`state`](Self::state).
    pub fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.core.subscribe()
    }
}

/// A manual transition that makes no sense from the breaker's state, from
/// [`CircuitBreakerHandle::open_for`] or [`CircuitBreakerHandle::half_open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker: cannot move from {from} to {to} by hand")]
pub struct IllegalTransition {
    from: State,
    to: State,
}

impl IllegalTransition {
    fn to(to: State) -> impl Fn(State) -> Self {
        move |from| Self { from, to }
    }

    /// The state the breaker was in.
    pub fn from(&self) -> State {
        self.from
    }

    /// The state asked for.
    pub fn to_state(&self) -> State {
        self.to
    }
}
