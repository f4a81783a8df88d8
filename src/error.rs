//! Rejection types, the lookup that finds them in any error, and [`ConfigError`].
//!
//! Every seawall layer has `tower::BoxError` as its error type. When a layer refuses a call
//! itself, the error is one of the small structs here ([`CircuitOpen`], [`BulkheadFull`],
//! [`RateLimited`]); errors of the inner service pass through unchanged. Find a rejection with
//! `downcast_ref`, or with [`Rejection::find`], which also looks through wrapping errors'
//! [`source`](std::error::Error::source) chains and tells when the call may be tried again.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use seawall::error::{CircuitOpen, Rejection};
//! use tower::BoxError;
//!
//! let err: BoxError = CircuitOpen::new(Some(Duration::from_secs(5))).into();
//! let rejection = Rejection::find(&*err).expect("a seawall rejection");
//! assert!(matches!(rejection, Rejection::CircuitOpen(_)));
//! assert_eq!(rejection.retry_after(), Some(Duration::from_secs(5)));
//! assert!(err.downcast_ref::<CircuitOpen>().is_some());
//! ```

use std::borrow::Cow;
use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

/// The circuit is open: the call was not made.
///
/// `retry_after` is how long until the breaker lets a probe through, when that is known (it is
/// not when the breaker was forced open by hand).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitOpen {
    retry_after: Option<Duration>,
}

impl CircuitOpen {
    /// A rejection that may be retried after `retry_after`, if known.
    pub const fn new(retry_after: Option<Duration>) -> Self {
        Self { retry_after }
    }

    /// How long until the breaker half-opens, if known.
    pub const fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.retry_after {
            Some(d) => write!(f, "circuit open; retry after {d:?}"),
            None => f.write_str("circuit open"),
        }
    }
}

impl StdError for CircuitOpen {}

/// The bulkhead is full: the call was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkheadFull {
    retry_after: Option<Duration>,
}

impl BulkheadFull {
    /// A rejection that may be retried after `retry_after`, if a sensible value is known.
    pub const fn new(retry_after: Option<Duration>) -> Self {
        Self { retry_after }
    }

    /// A sensible time to wait before trying again, if known.
    pub const fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for BulkheadFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.retry_after {
            Some(d) => write!(f, "bulkhead full; retry after {d:?}"),
            None => f.write_str("bulkhead full"),
        }
    }
}

impl StdError for BulkheadFull {}

/// The rate limit is reached: the call was not made, and no quota was spent on it.
///
/// Besides `retry_after`, a rejection may carry the limit it hit (the burst) and how long
/// until that allowance is whole again, for `RateLimit-*` response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    retry_after: Duration,
    quota: Option<(u32, Duration)>,
}

impl RateLimited {
    /// A rejection that may be retried after `retry_after`.
    pub const fn new(retry_after: Duration) -> Self {
        Self {
            retry_after,
            quota: None,
        }
    }

    /// The same rejection, stating the `limit` it hit (calls allowed at once) and `reset`, the
    /// time until that allowance is whole again.
    pub const fn with_quota(mut self, limit: u32, reset: Duration) -> Self {
        self.quota = Some((limit, reset));
        self
    }

    /// How long until the limiter admits a call of this kind again.
    pub const fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// The limit that was hit (calls allowed at once), when the rejecting layer stated it.
    pub const fn limit(&self) -> Option<u32> {
        match self.quota {
            Some((limit, _)) => Some(limit),
            None => None,
        }
    }

    /// How long until the whole allowance is back, when the rejecting layer stated it.
    pub const fn reset(&self) -> Option<Duration> {
        match self.quota {
            Some((_, reset)) => Some(reset),
            None => None,
        }
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rate limited; retry after {:?}", self.retry_after)
    }
}

impl StdError for RateLimited {}

/// Which seawall rejection an error is, found by [`Rejection::find`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection<'a> {
    /// A circuit breaker refused the call.
    CircuitOpen(&'a CircuitOpen),
    /// A bulkhead refused the call.
    BulkheadFull(&'a BulkheadFull),
    /// A rate limiter refused the call.
    RateLimited(&'a RateLimited),
}

impl<'a> Rejection<'a> {
    /// Finds a seawall rejection in `err` or anywhere in its chain of
    /// [`source`](std::error::Error::source)s (so rejections wrapped by, say, tower's `Buffer`
    /// are found too). `None` when the error is not a rejection: the inner service failed.
    pub fn find(err: &'a (dyn StdError + 'static)) -> Option<Self> {
        let mut next: Option<&'a (dyn StdError + 'static)> = Some(err);
        while let Some(e) = next {
            if let Some(r) = e.downcast_ref::<CircuitOpen>() {
                return Some(Rejection::CircuitOpen(r));
            }
            if let Some(r) = e.downcast_ref::<BulkheadFull>() {
                return Some(Rejection::BulkheadFull(r));
            }
            if let Some(r) = e.downcast_ref::<RateLimited>() {
                return Some(Rejection::RateLimited(r));
            }
            next = e.source();
        }
        None
    }

    /// When the call may be tried again, where the rejecting layer knows.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Rejection::CircuitOpen(r) => r.retry_after(),
            Rejection::BulkheadFull(r) => r.retry_after(),
            Rejection::RateLimited(r) => Some(r.retry_after()),
        }
    }

    /// The rejecting layer's name, as used in `tracing` targets (`seawall::<layer>`).
    pub fn layer(&self) -> &'static str {
        match self {
            Rejection::CircuitOpen(_) => "circuit_breaker",
            Rejection::BulkheadFull(_) => "bulkhead",
            Rejection::RateLimited(_) => "rate_limit",
        }
    }
}

/// The longest duration a builder accepts for a wait, an open duration or a `retry_after` hint,
/// and the longest `Retry-After` the HTTP face writes: one day.
///
/// Longer values are refused with a [`ConfigError`] (and a longer computed delay is written as
/// this much): a day is far beyond any wait a caller sits through, and every deadline built
/// from it stays far from the limits of the clock's arithmetic.
pub const MAX_DELAY: Duration = Duration::from_secs(86_400);

/// A builder was given a value outside what the layer can work with.
///
/// The message names the layer, the field, the value given and what is allowed:
///
/// ```
/// use seawall::error::ConfigError;
/// # fn main() {
/// let err = ConfigError::new("circuit_breaker", "failure_rate_threshold", 1.5, "0.0 < x <= 1.0");
/// assert_eq!(err.field(), "failure_rate_threshold");
/// assert_eq!(
///     err.to_string(),
///     "invalid circuit_breaker config: `failure_rate_threshold` = 1.5; allowed: 0.0 < x <= 1.0"
/// );
///
/// // Where the settings came from a config document, the error says where in it.
/// let err = err.within("circuit_breaker").within("client");
/// assert_eq!(err.path(), "client.circuit_breaker.failure_rate_threshold");
/// assert_eq!(
///     err.to_string(),
///     "invalid circuit_breaker config: `client.circuit_breaker.failure_rate_threshold` = 1.5; \
///      allowed: 0.0 < x <= 1.0"
/// );
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    layer: &'static str,
    field: &'static str,
    value: String,
    allowed: Cow<'static, str>,
    /// Where the layer's settings sit in a config document (`client.retry`), if they came
    /// from one.
    scope: Option<Cow<'static, str>>,
}

impl ConfigError {
    /// A `field` of `layer`'s config was given `value`, outside what is `allowed`.
    pub fn new(
        layer: &'static str,
        field: &'static str,
        value: impl fmt::Debug,
        allowed: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            layer,
            field,
            value: format!("{value:?}"),
            allowed: allowed.into(),
            scope: None,
        }
    }

    /// The same error, for settings found under `section` of a config document: the
    /// [`path`](Self::path) gains `section` in front. Call it from the inside out, once per
    /// level of nesting (the types of `seawall::config`, feature `serde`, do it for the
    /// sections they own; do it for yours).
    #[must_use]
    pub fn within(mut self, section: impl Into<Cow<'static, str>>) -> Self {
        let section = section.into();
        self.scope = Some(match self.scope.take() {
            Some(inner) => Cow::Owned(format!("{section}.{inner}")),
            None => section,
        });
        self
    }

    /// Where the rejected value sits: the [`field`](Self::field), prefixed with the sections
    /// given to [`within`](Self::within), such as `"client.retry.budget.ratio"`. Just the
    /// field when the error did not come through a config document.
    pub fn path(&self) -> Cow<'_, str> {
        match &self.scope {
            Some(scope) => Cow::Owned(format!("{scope}.{}", self.field)),
            None => Cow::Borrowed(self.field),
        }
    }

    /// The layer whose config was rejected, such as `"circuit_breaker"`.
    pub fn layer(&self) -> &'static str {
        self.layer
    }

    /// The field that was rejected, named as the builder method that sets it.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// The rejected value, as written by `Debug`.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// What the field allows.
    pub fn allowed(&self) -> &str {
        &self.allowed
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid {} config: `{}` = {}; allowed: {}",
            self.layer,
            self.path(),
            self.value,
            self.allowed
        )
    }
}

impl StdError for ConfigError {}

/// Validation helpers shared by the builders.
#[allow(dead_code)]
pub(crate) mod check {
    use super::ConfigError;
    use std::time::Duration;

    /// `value` must be at least 1.
    pub(crate) fn nonzero(
        layer: &'static str,
        field: &'static str,
        value: u64,
    ) -> Result<(), ConfigError> {
        if value == 0 {
            return Err(ConfigError::new(layer, field, value, ">= 1"));
        }
        Ok(())
    }

    /// `value` must be a positive duration.
    pub(crate) fn positive(
        layer: &'static str,
        field: &'static str,
        value: Duration,
    ) -> Result<(), ConfigError> {
        if value.is_zero() {
            return Err(ConfigError::new(layer, field, value, "> 0s"));
        }
        Ok(())
    }

    /// `value` must be a positive duration of at most [`MAX_DELAY`](super::MAX_DELAY).
    pub(crate) fn delay(
        layer: &'static str,
        field: &'static str,
        value: Duration,
    ) -> Result<(), ConfigError> {
        if value.is_zero() || value > super::MAX_DELAY {
            return Err(ConfigError::new(
                layer,
                field,
                value,
                "0s < x <= 1 day (86400s)",
            ));
        }
        Ok(())
    }

    /// `value` must be in `1..=max`.
    pub(crate) fn count(
        layer: &'static str,
        field: &'static str,
        value: usize,
        max: usize,
    ) -> Result<(), ConfigError> {
        if value == 0 || value > max {
            return Err(ConfigError::new(layer, field, value, format!("1..={max}")));
        }
        Ok(())
    }

    /// `value` must be a ratio in `0.0 < value <= 1.0` (NaN is rejected).
    pub(crate) fn ratio(
        layer: &'static str,
        field: &'static str,
        value: f64,
    ) -> Result<(), ConfigError> {
        if !(value > 0.0 && value <= 1.0) {
            return Err(ConfigError::new(layer, field, value, "0.0 < x <= 1.0"));
        }
        Ok(())
    }

    /// `low` must not exceed `high`.
    pub(crate) fn ordered<T: PartialOrd + std::fmt::Debug>(
        layer: &'static str,
        low_field: &'static str,
        low: T,
        high_field: &'static str,
        high: T,
    ) -> Result<(), ConfigError> {
        if low > high {
            return Err(ConfigError::new(
                layer,
                high_field,
                &high,
                format!(">= `{low_field}` ({low:?})"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::BoxError;

    #[derive(Debug)]
    struct Wrapper(BoxError);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }
    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn find_looks_through_source_chain() {
        let err: BoxError = Wrapper(RateLimited::new(Duration::from_millis(250)).into()).into();
        let r = Rejection::find(&*err).unwrap();
        assert_eq!(r.retry_after(), Some(Duration::from_millis(250)));
        assert_eq!(r.layer(), "rate_limit");
    }

    #[test]
    fn find_returns_none_for_inner_errors() {
        let err: BoxError = "boom".into();
        assert!(Rejection::find(&*err).is_none());
    }

    #[test]
    fn ratio_check_rejects_nan_zero_and_above_one() {
        for bad in [f64::NAN, 0.0, -0.1, 1.0001, f64::INFINITY] {
            let e = check::ratio("x", "threshold", bad).unwrap_err();
            assert_eq!(e.field(), "threshold");
        }
        check::ratio("x", "threshold", 1.0).unwrap();
        check::ratio("x", "threshold", 0.01).unwrap();
    }

    #[test]
    fn ordered_names_the_upper_field() {
        let e = check::ordered(
            "retry",
            "initial_delay",
            Duration::from_secs(2),
            "max_delay",
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert_eq!(e.field(), "max_delay");
        assert_eq!(e.allowed(), ">= `initial_delay` (2s)");
    }
}
