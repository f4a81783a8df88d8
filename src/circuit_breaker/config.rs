//! The builder and the validated configuration.

use super::handle::State;
use super::layer::CircuitBreakerLayer;
use crate::classify::ErrorsAsFailures;
use crate::error::{check, ConfigError};
use crate::events::{EventSource, MAX_CAPACITY};
use std::time::Duration;

const LAYER: &str = "circuit_breaker";

/// Most probes, and the longest run of consecutive failures, a breaker can count (they share a
/// 13-bit field of the atomic state word).
pub(crate) const MAX_SMALL_COUNT: u32 = 4095;
/// Largest count-based window (two rings of this many `u64` per breaker).
const MAX_COUNT_WINDOW: u32 = 100_000;
/// How long half-open waits for its probes before reopening: as long as the longest default
/// open period. Resilience4j's `maxWaitDurationInHalfOpenState` (0 there: forever).
pub(crate) const DEFAULT_HALF_OPEN_MAX_WAIT: Duration = Duration::from_secs(60);
/// The first open duration: Polly's break duration.
const DEFAULT_OPEN: Duration = Duration::from_secs(5);
/// The longest the default growth reaches: Resilience4j's `waitDurationInOpenState`.
const DEFAULT_MAX_OPEN: Duration = Duration::from_secs(60);
/// Breakers that tripped together don't probe together (Finagle jitters its backoff).
const DEFAULT_JITTER: f64 = 0.2;
/// Most buckets of a time-based window.
const MAX_BUCKETS: u32 = 1_000;

/// The sliding window a failure-rate (or slow-call-rate) policy looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Window {
    /// The last `size` calls.
    Count { size: u32 },
    /// The last `length`, kept as `buckets` buckets of `length / buckets` each.
    Time { bucket: Duration, buckets: u32 },
}

/// What trips the breaker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Policy {
    /// `n` failures in a row.
    Consecutive { n: u32 },
    /// The failure rate (and, if set, the slow-call rate) over a window.
    Rate {
        failure_rate: f64,
        window: Window,
        minimum_calls: u32,
        slow: Option<SlowCalls>,
    },
}

/// Slow-call detection: calls taking at least `duration` are slow; the breaker trips when the
/// slow share of the window reaches `rate`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct SlowCalls {
    pub(crate) duration: Duration,
    pub(crate) rate: f64,
}

/// How long the breaker stays open.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct OpenDuration {
    pub(crate) base: Duration,
    pub(crate) multiplier: f64,
    pub(crate) max: Duration,
    pub(crate) jitter: f64,
}

/// The validated configuration of one breaker.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Config {
    pub(crate) policy: Policy,
    pub(crate) open: OpenDuration,
    pub(crate) half_open_probes: u32,
    /// Adaptive throttling's `K`, when the breaker throttles instead of opening.
    pub(crate) throttle: Option<f64>,
    /// How long half-open may wait for its probes, and the state it then moves to.
    pub(crate) half_open_max_wait: Option<(Duration, u64)>,
    /// Record and report, never reject.
    pub(crate) metrics_only: bool,
    pub(crate) seed: Option<u64>,
    pub(crate) events_capacity: usize,
    pub(crate) bus: Option<EventSource>,
}

impl Config {
    pub(crate) fn slow(&self) -> Option<SlowCalls> {
        match self.policy {
            Policy::Rate { slow, .. } => slow,
            Policy::Consecutive { .. } => None,
        }
    }
}

/// Builds a [`CircuitBreakerLayer`], validating every value.
///
/// Start from [`CircuitBreakerLayer::builder`] (Resilience4j's defaults) or from a preset
/// ([`CircuitBreakerLayer::consecutive_failures`]).
///
/// # Defaults and their anchors
///
/// | setting | default | anchor |
/// |---|---|---|
/// | trip policy | failure rate ≥ 50 % | Resilience4j `failureRateThreshold` |
/// | window | last 100 calls (count-based) | Resilience4j `slidingWindowSize`, `COUNT_BASED` |
/// | minimum calls | 100 | Resilience4j `minimumNumberOfCalls` |
/// | slow-call detection | off | (Resilience4j's 60 s / 100 % never trips in practice) |
/// | open duration | 5 s | Polly's break duration |
/// | open duration growth | doubles on each trip in a row, up to 60 s; forgotten after 60 s closed | Envoy's outlier ejection (base time x ejections), capped at Resilience4j's `waitDurationInOpenState` |
/// | jitter | up to 20 % shorter | Finagle's jittered backoff |
/// | probes in half-open | 10 | Resilience4j `permittedNumberOfCallsInHalfOpenState` |
/// | maximum wait in half-open | 60 s, then open | Resilience4j `maxWaitDurationInHalfOpenState` (its default waits forever) |
/// | metrics only | off | Resilience4j's `DISABLED` / `METRICS_ONLY` states |
/// | classifier | [`ErrorsAsFailures`] | tower: an `Err` is a failure |
///
/// # Errors
///
/// [`build`](Self::build) returns a [`ConfigError`] naming the field for: zero sizes, counts or
/// durations; an open duration, a maximum open duration or a time window longer than a day
/// ([`MAX_DELAY`](crate::error::MAX_DELAY)); an event capacity above
/// [`MAX_CAPACITY`](crate::events::MAX_CAPACITY) (4096); rates outside `0.0 < x <= 1.0` or NaN;
/// a growth multiplier below 1, infinite or NaN; a maximum open duration below the base; jitter
/// outside `0.0 <= x < 1.0`; a policy given twice (consecutive failures and a failure rate);
/// slow-call detection without a window.
#[derive(Debug, Clone)]
pub struct Builder<C = ErrorsAsFailures> {
    consecutive: Option<u32>,
    failure_rate: Option<f64>,
    count_window: Option<u32>,
    time_window: Option<(Duration, u32)>,
    minimum_calls: u32,
    slow: Option<(Duration, f64)>,
    open_duration: Duration,
    growth: Option<(f64, Duration)>,
    jitter: f64,
    seed: Option<u64>,
    probes: u32,
    throttle: Option<f64>,
    half_open_max_wait: (Duration, State),
    metrics_only: bool,
    events_capacity: usize,
    bus: Option<EventSource>,
    classifier: C,
}

impl Default for Builder<ErrorsAsFailures> {
    fn default() -> Self {
        Self {
            consecutive: None,
            failure_rate: None,
            count_window: None,
            time_window: None,
            minimum_calls: 100,
            slow: None,
            open_duration: DEFAULT_OPEN,
            growth: None,
            jitter: DEFAULT_JITTER,
            seed: None,
            probes: 10,
            throttle: None,
            half_open_max_wait: (DEFAULT_HALF_OPEN_MAX_WAIT, State::Open),
            metrics_only: false,
            events_capacity: 64,
            bus: None,
            classifier: ErrorsAsFailures,
        }
    }
}

impl<C> Builder<C> {
    /// Trip after `n` failures in a row (successes reset the count; ignored outcomes don't).
    ///
    /// Replaces the failure-rate policy; setting both is a [`ConfigError`]. `1..=4095`.
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.consecutive = Some(n);
        self
    }

    /// Trip when the share of failures in the window reaches `threshold` (`0.0 < x <= 1.0`),
    /// once the window holds at least [`minimum_calls`](Self::minimum_calls). Default `0.5`.
    pub fn failure_rate(mut self, threshold: f64) -> Self {
        self.failure_rate = Some(threshold);
        self
    }

    /// Look at the last `size` calls (count-based window; the default, with 100 calls).
    pub fn count_window(mut self, size: u32) -> Self {
        self.count_window = Some(size);
        self.time_window = None;
        self
    }

    /// Look at the calls of the last `length`, kept in `buckets` buckets of `length / buckets`
    /// each: the window slides one bucket at a time. Costs one clock read per call. `length`
    /// is at most a day, `buckets` `1..=1000`, and a bucket at least 1 µs.
    pub fn time_window(mut self, length: Duration, buckets: u32) -> Self {
        self.time_window = Some((length, buckets));
        self.count_window = None;
        self
    }

    /// The window must hold at least `n` calls before the breaker may trip on a rate.
    /// Default 100. For a count window, a value above the window size means the window size.
    pub fn minimum_calls(mut self, n: u32) -> Self {
        self.minimum_calls = n;
        self
    }

    /// Count calls that take at least `duration` as slow, and trip when the share of slow
    /// calls in the window reaches `rate` (`0.0 < x <= 1.0`). Off by default; needs a
    /// failure-rate window (count or time).
    ///
    /// A call is timed from the moment its future first returns `Pending` to the moment it
    /// completes; a future that completes on its first poll never waited and is not slow (and
    /// costs no clock read).
    pub fn slow_calls(mut self, duration: Duration, rate: f64) -> Self {
        self.slow = Some((duration, rate));
        self
    }

    /// How long the breaker stays open before letting probes through, `0s < x <= 1 day`
    /// ([`MAX_DELAY`](crate::error::MAX_DELAY)). Default 5 s (Polly).
    pub fn open_duration(mut self, duration: Duration) -> Self {
        self.open_duration = duration;
        self
    }

    /// Grow the open duration by `multiplier` (`>= 1.0`) on every trip that follows a trip
    /// (a failed half-open, or a close that did not last), up to `max` (from the open duration
    /// up to a day). The growth is forgotten once the breaker stays closed for `max`. Default
    /// `2.0` up to 60 s (or up to the open duration, if that is longer); `1.0` turns it off.
    pub fn open_duration_growth(mut self, multiplier: f64, max: Duration) -> Self {
        self.growth = Some((multiplier, max));
        self
    }

    /// Shorten each open duration by a random share of up to `fraction` (`0.0 <= x < 1.0`), so
    /// breakers that tripped together don't probe together. Default `0.2`.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction;
        self
    }

    /// Seed the jitter's random number generator (for reproducible tests). By default it is
    /// seeded from the thread-local generator.
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// How many probe calls half-open lets through (`1..=4095`). The breaker reopens once the
    /// failed (or slow) probes reach the failure-rate (or slow-call-rate) threshold's share of
    /// them, and closes once they can no longer reach it; a consecutive-failures policy uses
    /// half of the probes. Default 10 (Resilience4j `permittedNumberOfCallsInHalfOpenState`).
    pub fn half_open_probes(mut self, n: u32) -> Self {
        self.probes = n;
        self
    }

    /// Throttle instead of opening: client-side adaptive throttling, after Google's SRE book
    /// ("Handling Overload"). Each call is rejected locally with probability
    /// `max(0, (requests - k * accepts) / (requests + 1))` over the time window, where
    /// `requests` counts the calls that reached the dependency and `accepts` those that
    /// succeeded. So traffic falls in proportion to what the dependency can still answer:
    /// nothing is rejected while at least `1 / k` of the calls succeed, and while none does,
    /// about `sqrt(rate * window)` calls a window still reach it (at 300 calls a second and a
    /// 2 s window, 12 a second), which is how the recovery is seen. The breaker never opens by
    /// itself (the handle can still force it open); its rejections are
    /// [`CircuitOpen`](crate::error::CircuitOpen) with no `retry_after`, and its metrics show
    /// the current [`rejection_probability`](super::Metrics::rejection_probability).
    ///
    /// Unlike the book, locally rejected calls are not counted as requests: counted, they keep
    /// the probability near 1 after the dependency recovers (the calls let through, and so the
    /// accepts, only double once per window: about 16 s to recover at 300 calls a second with
    /// a 2 s window, against one window this way).
    ///
    /// `k` is `1.0..=10.0`; the book's `2.0` is a good start (a lower `k` rejects sooner). The
    /// window is the [`time_window`](Self::time_window) (a count window is refused); without
    /// one, the last 2 s in 20 buckets, short so that traffic comes back within about 2 s of
    /// a recovery (the book's 2 minutes suit a backend that sheds load, not one that failed).
    /// Rejection starts once the window holds [`minimum_calls`](Self::minimum_calls).
    pub fn adaptive_throttling(mut self, k: f64) -> Self {
        self.throttle = Some(k);
        self
    }

    /// How long half-open waits for its probes' outcomes before it moves to `then`
    /// ([`State::Open`] or [`State::Closed`]), so that a probe that never answers cannot hold
    /// the breaker half-open (rejecting everything else) forever; the stuck probe's late
    /// outcome is ignored. `Duration::ZERO` waits forever; otherwise at most a day. Default
    /// 60 s, then [`State::Open`] (Resilience4j's `maxWaitDurationInHalfOpenState` and
    /// `transitionToStateAfterWaitDuration`; its default waits forever).
    pub fn max_wait_in_half_open(mut self, max: Duration, then: State) -> Self {
        self.half_open_max_wait = (max, then);
        self
    }

    /// Metrics only: the breaker records, trips, half-opens and closes as configured, and
    /// reports it all (state-change events, metrics, health, a `WARN` "would open" trace
    /// event), but never rejects a call: the calls it would have rejected go through untracked
    /// and count in [`Metrics::rejections`](super::Metrics::rejections). So a team can watch
    /// what a new threshold would do before enforcing it. Off by default.
    pub fn metrics_only(mut self, on: bool) -> Self {
        self.metrics_only = on;
        self
    }

    /// How many state-change events a slow subscriber may lag behind before it misses some
    /// (see [`tokio::sync::broadcast`]), `1..=4096`
    /// ([`MAX_CAPACITY`](crate::events::MAX_CAPACITY)); the buffer is allocated when the
    /// breaker is built. Default 64.
    pub fn event_capacity(mut self, n: usize) -> Self {
        self.events_capacity = n;
        self
    }

    /// Also publish state changes and rejections to an [`EventBus`](crate::events::EventBus),
    /// as events of `source` (one stream for every layer; see [`crate::events`]).
    pub fn events(mut self, source: EventSource) -> Self {
        self.bus = Some(source);
        self
    }

    /// What counts as a failure. Default [`ErrorsAsFailures`]; HTTP users want
    /// [`ServerErrorsAsFailures`](crate::classify::ServerErrorsAsFailures) (a `500` trips, a
    /// `404` does not). Any `Fn(&Result<Res, E>) -> Outcome` works.
    pub fn classifier<C2>(self, classifier: C2) -> Builder<C2> {
        Builder {
            consecutive: self.consecutive,
            failure_rate: self.failure_rate,
            count_window: self.count_window,
            time_window: self.time_window,
            minimum_calls: self.minimum_calls,
            slow: self.slow,
            open_duration: self.open_duration,
            growth: self.growth,
            jitter: self.jitter,
            seed: self.seed,
            probes: self.probes,
            throttle: self.throttle,
            half_open_max_wait: self.half_open_max_wait,
            metrics_only: self.metrics_only,
            events_capacity: self.events_capacity,
            bus: self.bus,
            classifier,
        }
    }

    /// Validates the configuration and builds the layer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first invalid field; see [`Builder`].
    pub fn build(self) -> Result<CircuitBreakerLayer<C>, ConfigError> {
        let config = self.validate()?;
        Ok(CircuitBreakerLayer::from_config(config, self.classifier))
    }

    pub(crate) fn validate(&self) -> Result<Config, ConfigError> {
        let policy = match self.consecutive {
            Some(n) => {
                if self.failure_rate.is_some()
                    || self.count_window.is_some()
                    || self.time_window.is_some()
                    || self.throttle.is_some()
                {
                    return Err(ConfigError::new(
                        LAYER,
                        "consecutive_failures",
                        n,
                        "either consecutive_failures or failure_rate/count_window/time_window, not both",
                    ));
                }
                if self.slow.is_some() {
                    return Err(ConfigError::new(
                        LAYER,
                        "slow_calls",
                        self.slow,
                        "slow-call detection needs a count_window or time_window policy",
                    ));
                }
                small_count("consecutive_failures", n)?;
                Policy::Consecutive { n }
            }
            None => {
                if let Some(k) = self.throttle {
                    if !(1.0..=10.0).contains(&k) {
                        return Err(ConfigError::new(
                            LAYER,
                            "adaptive_throttling",
                            k,
                            "1.0 <= k <= 10.0",
                        ));
                    }
                    if self.count_window.is_some() {
                        return Err(ConfigError::new(
                            LAYER,
                            "adaptive_throttling",
                            k,
                            "a time_window (adaptive throttling looks at the last seconds)",
                        ));
                    }
                }
                let failure_rate = self.failure_rate.unwrap_or(0.5);
                check::ratio(LAYER, "failure_rate", failure_rate)?;
                check::nonzero(LAYER, "minimum_calls", self.minimum_calls.into())?;
                let time_window = self
                    .time_window
                    .or(self.throttle.map(|_| (Duration::from_secs(2), 20)));
                let (window, minimum_calls) = match time_window {
                    Some((length, buckets)) => {
                        check::delay(LAYER, "time_window", length)?;
                        if buckets == 0 || buckets > MAX_BUCKETS {
                            return Err(ConfigError::new(
                                LAYER,
                                "time_window",
                                buckets,
                                format!("1..={MAX_BUCKETS} buckets"),
                            ));
                        }
                        let bucket = length / buckets;
                        if bucket < Duration::from_micros(1) {
                            return Err(ConfigError::new(
                                LAYER,
                                "time_window",
                                length,
                                "a bucket (length / buckets) of at least 1µs",
                            ));
                        }
                        (Window::Time { bucket, buckets }, self.minimum_calls)
                    }
                    None => {
                        let size = self.count_window.unwrap_or(100);
                        if size == 0 || size > MAX_COUNT_WINDOW {
                            return Err(ConfigError::new(
                                LAYER,
                                "count_window",
                                size,
                                format!("1..={MAX_COUNT_WINDOW}"),
                            ));
                        }
                        (Window::Count { size }, self.minimum_calls.min(size))
                    }
                };
                let slow = match self.slow {
                    Some((duration, rate)) => {
                        check::positive(LAYER, "slow_calls", duration)?;
                        check::ratio(LAYER, "slow_calls", rate)?;
                        Some(SlowCalls { duration, rate })
                    }
                    None => None,
                };
                Policy::Rate {
                    failure_rate,
                    window,
                    minimum_calls,
                    slow,
                }
            }
        };
        check::delay(LAYER, "open_duration", self.open_duration)?;
        let (multiplier, max) = match self.growth {
            Some((multiplier, max)) => {
                if !(multiplier.is_finite() && multiplier >= 1.0) {
                    return Err(ConfigError::new(
                        LAYER,
                        "open_duration_growth",
                        multiplier,
                        "a finite multiplier >= 1.0",
                    ));
                }
                check::delay(LAYER, "open_duration_growth", max)?;
                check::ordered(
                    LAYER,
                    "open_duration",
                    self.open_duration,
                    "open_duration_growth",
                    max,
                )?;
                (multiplier, max)
            }
            // The default: doubling up to a minute (or the open duration, if longer).
            None => (2.0, self.open_duration.max(DEFAULT_MAX_OPEN)),
        };
        if !(self.jitter >= 0.0 && self.jitter < 1.0) {
            return Err(ConfigError::new(
                LAYER,
                "jitter",
                self.jitter,
                "0.0 <= x < 1.0",
            ));
        }
        small_count("half_open_probes", self.probes)?;
        let half_open_max_wait = match self.half_open_max_wait {
            (max, _) if max.is_zero() => None,
            (max, then) => {
                check::delay(LAYER, "max_wait_in_half_open", max)?;
                let then = match then {
                    State::Open => super::state::OPEN,
                    State::Closed => super::state::CLOSED,
                    other => {
                        return Err(ConfigError::new(
                            LAYER,
                            "max_wait_in_half_open",
                            other,
                            "State::Open or State::Closed",
                        ))
                    }
                };
                Some((max, then))
            }
        };
        check::count(LAYER, "event_capacity", self.events_capacity, MAX_CAPACITY)?;
        Ok(Config {
            policy,
            open: OpenDuration {
                base: self.open_duration,
                multiplier,
                max,
                jitter: self.jitter,
            },
            half_open_probes: self.probes,
            throttle: self.throttle,
            half_open_max_wait,
            metrics_only: self.metrics_only,
            seed: self.seed,
            events_capacity: self.events_capacity,
            bus: self.bus.clone(),
        })
    }
}

fn small_count(field: &'static str, n: u32) -> Result<(), ConfigError> {
    if n == 0 || n > MAX_SMALL_COUNT {
        return Err(ConfigError::new(
            LAYER,
            field,
            n,
            format!("1..={MAX_SMALL_COUNT}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field<C>(b: Builder<C>) -> &'static str {
        b.validate().unwrap_err().field()
    }

    #[test]
    fn defaults_follow_their_anchors() {
        let c = Builder::default().validate().unwrap();
        assert_eq!(
            c.policy,
            Policy::Rate {
                failure_rate: 0.5,
                window: Window::Count { size: 100 },
                minimum_calls: 100,
                slow: None
            }
        );
        assert_eq!(c.open.base, Duration::from_secs(5));
        assert_eq!(
            (c.open.multiplier, c.open.max),
            (2.0, Duration::from_secs(60))
        );
        assert_eq!(c.open.jitter, 0.2);
        assert_eq!(c.half_open_probes, 10);
    }

    #[test]
    fn bad_values_name_their_field() {
        let b = Builder::default;
        assert_eq!(field(b().consecutive_failures(0)), "consecutive_failures");
        assert_eq!(
            field(b().consecutive_failures(5000)),
            "consecutive_failures"
        );
        assert_eq!(
            field(b().consecutive_failures(3).failure_rate(0.5)),
            "consecutive_failures"
        );
        assert_eq!(field(b().failure_rate(f64::NAN)), "failure_rate");
        assert_eq!(field(b().failure_rate(1.5)), "failure_rate");
        assert_eq!(field(b().count_window(0)), "count_window");
        assert_eq!(field(b().minimum_calls(0)), "minimum_calls");
        assert_eq!(
            field(b().time_window(Duration::from_secs(10), 0)),
            "time_window"
        );
        assert_eq!(field(b().time_window(Duration::ZERO, 10)), "time_window");
        assert_eq!(
            field(b().slow_calls(Duration::from_secs(1), 0.0)),
            "slow_calls"
        );
        assert_eq!(
            field(
                b().consecutive_failures(3)
                    .slow_calls(Duration::from_secs(1), 0.5)
            ),
            "slow_calls"
        );
        assert_eq!(field(b().open_duration(Duration::ZERO)), "open_duration");
        assert_eq!(
            field(b().open_duration_growth(0.5, Duration::from_secs(600))),
            "open_duration_growth"
        );
        assert_eq!(
            field(b().open_duration_growth(2.0, Duration::from_secs(1))),
            "open_duration_growth"
        );
        assert_eq!(field(b().jitter(1.0)), "jitter");
        assert_eq!(field(b().jitter(f64::NAN)), "jitter");
        assert_eq!(field(b().half_open_probes(0)), "half_open_probes");
    }

    #[test]
    fn durations_beyond_a_day_and_huge_capacities_are_refused() {
        use crate::error::MAX_DELAY;
        let b = Builder::default;
        let over = MAX_DELAY + Duration::from_nanos(1);
        for huge in [over, Duration::from_secs(u64::MAX), Duration::MAX] {
            assert_eq!(field(b().open_duration(huge)), "open_duration");
            assert_eq!(
                field(b().open_duration_growth(2.0, huge)),
                "open_duration_growth"
            );
            assert_eq!(field(b().time_window(huge, 10)), "time_window");
        }
        assert_eq!(
            field(b().open_duration_growth(f64::INFINITY, MAX_DELAY)),
            "open_duration_growth"
        );
        for n in [0, MAX_CAPACITY + 1, 1 << 62, usize::MAX] {
            assert_eq!(field(b().event_capacity(n)), "event_capacity");
        }
        // The bounds themselves are accepted.
        b().open_duration(MAX_DELAY)
            .open_duration_growth(1e10, MAX_DELAY)
            .time_window(MAX_DELAY, 1000)
            .event_capacity(MAX_CAPACITY)
            .validate()
            .unwrap();
    }

    #[test]
    fn minimum_calls_above_a_count_window_means_the_window() {
        let c = Builder::default()
            .count_window(10)
            .minimum_calls(50)
            .validate()
            .unwrap();
        assert!(matches!(
            c.policy,
            Policy::Rate {
                minimum_calls: 10,
                ..
            }
        ));
    }
}
