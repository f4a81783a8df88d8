//! The circuit breaker's settings.

use super::duration::human_duration;
use super::set;
use crate::circuit_breaker::State;
use crate::circuit_breaker::{Builder, CircuitBreakerLayer};
use crate::error::ConfigError;
use serde::{Deserialize, Serialize};
use std::time::Duration;

human_duration!(
    open_duration: "open_duration",
    length: "time_window.length",
    slow: "slow_calls.duration",
    growth_max: "open_duration_growth.max",
    half_open_wait: "max_wait_in_half_open",
);

/// The settings of a [`CircuitBreakerLayer`], as a config document holds them.
///
/// Every field mirrors the [`Builder`] method of the same name; a field left out keeps the
/// builder's default (see [`Builder`] for the defaults and their anchors: 50 % of the last 100
/// calls, open 5 s growing to 60 s, 10 probes). Pick the trip policy with `consecutive_failures`, or with
/// `failure_rate` and one window, `count_window` or `time_window`.
///
/// ```
/// use seawall::config::CircuitBreakerConfig;
/// use seawall::circuit_breaker::State;
///
/// let config: CircuitBreakerConfig = toml::from_str(r#"
///     failure_rate = 0.25
///     time_window = { length = "10s", buckets = 10 }
///     minimum_calls = 20
///     slow_calls = { duration = "2s", rate = 0.5 }
///     open_duration = "30s"
///     open_duration_growth = { multiplier = 2.0, max = "5m" }
///     jitter = 0.1
/// "#).unwrap();
/// let breaker = config.build().unwrap();
/// assert_eq!(breaker.handle().state(), State::Closed);
/// ```
///
/// The classifier and the event bus are code, not settings: take [`builder`](Self::builder)
/// and set them there (an HTTP client wants
/// [`ServerErrorsAsFailures`](crate::classify::ServerErrorsAsFailures)).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct CircuitBreakerConfig {
    /// Trip after this many failures in a row ([`Builder::consecutive_failures`]). Not with
    /// `failure_rate`, `count_window` or `time_window`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    /// Trip when this share of the window failed ([`Builder::failure_rate`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_rate: Option<f64>,
    /// Look at the last this many calls ([`Builder::count_window`]). Not with `time_window`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count_window: Option<u32>,
    /// Look at the calls of a stretch of time ([`Builder::time_window`]). Not with
    /// `count_window`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_window: Option<TimeWindow>,
    /// Calls the window must hold before a rate may trip ([`Builder::minimum_calls`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimum_calls: Option<u32>,
    /// Slow-call detection ([`Builder::slow_calls`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slow_calls: Option<SlowCalls>,
    /// How long the breaker stays open ([`Builder::open_duration`]).
    #[serde(skip_serializing_if = "Option::is_none", with = "human::open_duration")]
    pub open_duration: Option<Duration>,
    /// Growth of the open duration on repeated trips ([`Builder::open_duration_growth`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_duration_growth: Option<OpenDurationGrowth>,
    /// The largest share by which an open duration is shortened at random
    /// ([`Builder::jitter`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter: Option<f64>,
    /// The seed of the jitter's random numbers ([`Builder::jitter_seed`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter_seed: Option<u64>,
    /// Probe calls let through when half-open ([`Builder::half_open_probes`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub half_open_probes: Option<u32>,
    /// How far a slow event subscriber may lag ([`Builder::event_capacity`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_capacity: Option<usize>,
    /// Throttle instead of opening, with this `k` ([`Builder::adaptive_throttling`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adaptive_throttling: Option<f64>,
    /// How long half-open waits for its probes (`"0s"`: forever)
    /// ([`Builder::max_wait_in_half_open`]).
    #[serde(
        skip_serializing_if = "Option::is_none",
        with = "human::half_open_wait"
    )]
    pub max_wait_in_half_open: Option<Duration>,
    /// After that wait, close instead of reopening ([`Builder::max_wait_in_half_open`]'s
    /// `then`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub close_after_max_wait: Option<bool>,
    /// Record and report, never reject ([`Builder::metrics_only`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_only: Option<bool>,
}

impl CircuitBreakerConfig {
    /// Whether the document names no trip policy (no consecutive failures, rate, window or
    /// throttling): the client stack then applies its own.
    #[cfg(all(feature = "retry", feature = "bulkhead", feature = "correlation-id"))]
    pub(crate) fn names_no_policy(&self) -> bool {
        self.consecutive_failures.is_none()
            && self.failure_rate.is_none()
            && self.count_window.is_none()
            && self.time_window.is_none()
            && self.adaptive_throttling.is_none()
    }
}

/// A time-based window: `{ length = "10s", buckets = 10 }` ([`Builder::time_window`]). Both
/// fields are needed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TimeWindow {
    /// How far back the window looks.
    #[serde(with = "human::length")]
    pub length: Duration,
    /// How many buckets it is kept in (it slides one bucket at a time).
    pub buckets: u32,
}

/// Slow-call detection: `{ duration = "2s", rate = 0.5 }` ([`Builder::slow_calls`]). Both
/// fields are needed.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SlowCalls {
    /// Calls taking at least this long are slow.
    #[serde(with = "human::slow")]
    pub duration: Duration,
    /// Trip when this share of the window was slow.
    pub rate: f64,
}

/// Growth of the open duration: `{ multiplier = 2.0, max = "5m" }`
/// ([`Builder::open_duration_growth`]). Both fields are needed.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OpenDurationGrowth {
    /// The factor applied on each trip that follows a failed half-open.
    pub multiplier: f64,
    /// The longest open duration.
    #[serde(with = "human::growth_max")]
    pub max: Duration,
}

impl CircuitBreakerConfig {
    /// A [`Builder`] with these settings, to add what only code can give (a classifier, an
    /// event bus) before [`build`](Builder::build).
    ///
    /// # Errors
    /// A [`ConfigError`] naming `time_window` when both windows are set (a builder takes the
    /// last one it is given; a config document has no order). The builder checks the rest.
    pub fn builder(&self) -> Result<Builder, ConfigError> {
        if let (Some(_), Some(time_window)) = (self.count_window, &self.time_window) {
            return Err(ConfigError::new(
                "circuit_breaker",
                "time_window",
                time_window,
                "unset when count_window is set (one window, not both)",
            ));
        }
        let b = CircuitBreakerLayer::builder();
        let b = set(b, self.consecutive_failures, Builder::consecutive_failures);
        let b = set(b, self.failure_rate, Builder::failure_rate);
        let b = set(b, self.count_window, Builder::count_window);
        let b = set(b, self.time_window.clone(), |b, w| {
            b.time_window(w.length, w.buckets)
        });
        let b = set(b, self.minimum_calls, Builder::minimum_calls);
        let b = set(b, self.slow_calls.clone(), |b, s| {
            b.slow_calls(s.duration, s.rate)
        });
        let b = set(b, self.open_duration, Builder::open_duration);
        let b = set(b, self.open_duration_growth.clone(), |b, g| {
            b.open_duration_growth(g.multiplier, g.max)
        });
        let b = set(b, self.jitter, Builder::jitter);
        let b = set(b, self.jitter_seed, Builder::jitter_seed);
        let b = set(b, self.half_open_probes, Builder::half_open_probes);
        let b = set(b, self.event_capacity, Builder::event_capacity);
        let b = set(b, self.adaptive_throttling, Builder::adaptive_throttling);
        let b = set(b, self.metrics_only, Builder::metrics_only);
        let b = if self.max_wait_in_half_open.is_some() || self.close_after_max_wait.is_some() {
            let then = match self.close_after_max_wait {
                Some(true) => State::Closed,
                _ => State::Open,
            };
            let max = self
                .max_wait_in_half_open
                .unwrap_or(crate::circuit_breaker::config::DEFAULT_HALF_OPEN_MAX_WAIT);
            b.max_wait_in_half_open(max, then)
        } else {
            b
        };
        Ok(b)
    }

    /// Builds the breaker, with the default classifier
    /// ([`ErrorsAsFailures`](crate::classify::ErrorsAsFailures)).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the first invalid field: see [`builder`](Self::builder) and
    /// [`Builder::build`].
    pub fn build(&self) -> Result<CircuitBreakerLayer, ConfigError> {
        self.builder()?.build()
    }
}
