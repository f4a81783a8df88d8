//! The fault mix: what a chaos layer injects, and how often.

use std::time::Duration;

use crate::error::ConfigError;

pub(super) const LAYER: &str = "chaos";

/// How long an injected delay lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Latency {
    /// Always this long.
    Fixed(Duration),
    /// Uniformly spread between `low` and `high`, both included (`low` must not exceed `high`).
    Uniform {
        /// The shortest delay.
        low: Duration,
        /// The longest delay.
        high: Duration,
    },
}

impl Latency {
    /// `(low, span)` in nanoseconds, saturated at `u64::MAX` (584 years).
    pub(super) fn nanos(&self) -> (u64, u64) {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        match *self {
            Latency::Fixed(d) => (ns(d), 0),
            Latency::Uniform { low, high } => (ns(low), ns(high).saturating_sub(ns(low))),
        }
    }
}

/// What a chaos layer injects, each with its probability: the layer's builder takes one, and
/// [`ChaosHandle::set_faults`](super::ChaosHandle::set_faults) swaps it at run time.
///
/// Two independent draws decide each call:
///
/// - **latency**, with its own probability: the call is delayed by a [`Latency`] before
///   anything else happens;
/// - **one outcome** among an injected error, an injected status (HTTP layers only), a hang and a
///   dropped connection, each with its probability; with what is left (`1 - error - status -
///   hang - disconnect`) the call goes to the inner service. The outcome probabilities must
///   therefore add up to at most 1.
///
/// Every probability is between 0 and 1, both included; all are 0 in [`Faults::none`].
///
/// ```
/// use std::time::Duration;
/// use seawall::chaos::{Faults, Latency};
///
/// // A dependency that is slow one call in five and drops one connection in a hundred.
/// let faults = Faults::none()
///     .latency(0.2, Latency::Uniform { low: Duration::from_millis(50), high: Duration::from_millis(150) })
///     .disconnect(0.01);
/// assert_eq!(faults.disconnect_probability(), 0.01);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    latency: Option<(f64, Latency)>,
    error: f64,
    #[cfg(feature = "http")]
    status: Option<(f64, http::StatusCode)>,
    hang: f64,
    disconnect: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Self::none()
    }
}

impl Faults {
    /// No fault at all: every call goes to the inner service at once.
    pub const fn none() -> Self {
        Self {
            latency: None,
            error: 0.0,
            #[cfg(feature = "http")]
            status: None,
            hang: 0.0,
            disconnect: 0.0,
        }
    }

    /// Delays a call by `latency` with `probability`, before its outcome is played out.
    pub fn latency(mut self, probability: f64, latency: Latency) -> Self {
        self.latency = Some((probability, latency));
        self
    }

    /// Fails a call with an [`InjectedFault`](super::InjectedFault) error, without calling the
    /// inner service, with `probability`.
    pub fn error(mut self, probability: f64) -> Self {
        self.error = probability;
        self
    }

    /// Answers a call with a response of `status` and an empty (`Default`) body, without
    /// calling the inner service, with `probability`. Only HTTP layers
    /// ([`ChaosBuilder::http`](super::ChaosBuilder::http)) take it.
    #[cfg(feature = "http")]
    pub fn status(mut self, probability: f64, status: http::StatusCode) -> Self {
        self.status = Some((probability, status));
        self
    }

    /// Never completes a call (until its future is dropped), without calling the inner
    /// service, with `probability`: a dependency that accepts the request and never answers.
    pub fn hang(mut self, probability: f64) -> Self {
        self.hang = probability;
        self
    }

    /// Fails a call as a dropped connection would, without calling the inner service, with
    /// `probability`: an [`InjectedFault`](super::InjectedFault) whose source is an
    /// [`std::io::Error`] of kind `ConnectionReset`, so that classifiers that look for
    /// connection errors (seawall's HTTP retry policy among them) treat it as one.
    pub fn disconnect(mut self, probability: f64) -> Self {
        self.disconnect = probability;
        self
    }

    /// The latency fault: its probability and how long it lasts, if set.
    pub fn latency_fault(&self) -> Option<(f64, Latency)> {
        self.latency
    }

    /// The probability of an injected error.
    pub fn error_probability(&self) -> f64 {
        self.error
    }

    /// The status fault: its probability and the status, if set.
    #[cfg(feature = "http")]
    pub fn status_fault(&self) -> Option<(f64, http::StatusCode)> {
        self.status
    }

    /// The probability of a hang.
    pub fn hang_probability(&self) -> f64 {
        self.hang
    }

    /// The probability of a dropped connection.
    pub fn disconnect_probability(&self) -> f64 {
        self.disconnect
    }

    fn status_probability(&self) -> f64 {
        #[cfg(feature = "http")]
        if let Some((p, _)) = self.status {
            return p;
        }
        0.0
    }

    /// Checks the mix for a layer that can (`http`) or cannot answer with a status.
    pub(super) fn validate(&self, http: bool) -> Result<(), ConfigError> {
        if let Some((p, latency)) = self.latency {
            probability("latency", p)?;
            if let Latency::Uniform { low, high } = latency {
                crate::error::check::ordered(LAYER, "latency.low", low, "latency.high", high)?;
            }
        }
        probability("error", self.error)?;
        probability("status", self.status_probability())?;
        probability("hang", self.hang)?;
        probability("disconnect", self.disconnect)?;
        if !http && self.status_probability() > 0.0 {
            return Err(ConfigError::new(
                LAYER,
                "status",
                self.status_probability(),
                "0 unless the layer is built with `ChaosLayer::builder().http()`",
            ));
        }
        let outcomes = self.error + self.status_probability() + self.hang + self.disconnect;
        // Allows the rounding of sums such as 0.1 + 0.2 + 0.7.
        if outcomes > 1.0 + 1e-9 {
            return Err(ConfigError::new(
                LAYER,
                "error + status + hang + disconnect",
                outcomes,
                "<= 1.0",
            ));
        }
        Ok(())
    }

    /// The draw thresholds of a valid mix, out of [`ONE`].
    pub(super) fn thresholds(&self) -> Thresholds {
        let (latency, (low, span)) = match self.latency {
            Some((p, latency)) => (threshold(p), latency.nanos()),
            None => (0, (0, 0)),
        };
        #[cfg(feature = "http")]
        let status_code = self.status.map_or(0, |(_, s)| s.as_u16());
        #[cfg(not(feature = "http"))]
        let status_code = 0;
        Thresholds {
            latency,
            latency_low: low,
            latency_span: span,
            error: threshold(self.error),
            status: threshold(self.status_probability()),
            status_code,
            hang: threshold(self.hang),
            disconnect: threshold(self.disconnect),
        }
    }
}

/// Probabilities are compared with 32 random bits: `p` becomes `round(p * 2^32)` out of `2^32`.
pub(super) const ONE: u64 = 1 << 32;

fn threshold(p: f64) -> u64 {
    // `p` was checked to lie in 0..=1, so the product lies in 0..=2^32.
    (p * ONE as f64).round() as u64
}

fn probability(field: &'static str, p: f64) -> Result<(), ConfigError> {
    if !(0.0..=1.0).contains(&p) {
        return Err(ConfigError::new(LAYER, field, p, "0.0 <= x <= 1.0"));
    }
    Ok(())
}

/// A mix as the draw reads it: probabilities out of [`ONE`], latencies in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Thresholds {
    pub(super) latency: u64,
    pub(super) latency_low: u64,
    pub(super) latency_span: u64,
    pub(super) error: u64,
    pub(super) status: u64,
    pub(super) status_code: u16,
    pub(super) hang: u64,
    pub(super) disconnect: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_outside_zero_to_one_are_refused() {
        for p in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
            let err = Faults::none().error(p).validate(false).unwrap_err();
            assert_eq!(err.field(), "error");
            let err = Faults::none()
                .latency(p, Latency::Fixed(Duration::ZERO))
                .validate(false)
                .unwrap_err();
            assert_eq!(err.field(), "latency");
        }
        assert!(Faults::none().error(0.0).hang(1.0).validate(false).is_ok());
    }

    #[test]
    fn outcomes_must_add_up_to_at_most_one() {
        assert!(Faults::none()
            .error(0.1)
            .hang(0.2)
            .disconnect(0.7)
            .validate(false)
            .is_ok());
        let err = Faults::none()
            .error(0.5)
            .hang(0.3)
            .disconnect(0.3)
            .validate(false)
            .unwrap_err();
        assert_eq!(err.field(), "error + status + hang + disconnect");
    }

    #[test]
    fn an_inverted_uniform_latency_is_refused() {
        let ms = Duration::from_millis;
        let err = Faults::none()
            .latency(
                1.0,
                Latency::Uniform {
                    low: ms(20),
                    high: ms(10),
                },
            )
            .validate(false)
            .unwrap_err();
        assert_eq!(err.field(), "latency.high");
    }

    #[test]
    fn thresholds_scale_probabilities_to_two_to_the_32() {
        let t = Faults::none()
            .error(0.25)
            .hang(1.0)
            .latency(
                0.5,
                Latency::Uniform {
                    low: Duration::from_nanos(10),
                    high: Duration::from_nanos(30),
                },
            )
            .thresholds();
        assert_eq!(t.error, ONE / 4);
        assert_eq!(t.hang, ONE);
        assert_eq!(t.latency, ONE / 2);
        assert_eq!((t.latency_low, t.latency_span), (10, 20));
        assert_eq!(t.disconnect, 0);
    }

    #[cfg(feature = "http")]
    #[test]
    fn a_status_needs_an_http_layer() {
        let faults = Faults::none().status(0.5, http::StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(faults.validate(false).unwrap_err().field(), "status");
        assert!(faults.validate(true).is_ok());
        assert_eq!(faults.thresholds().status_code, 503);
    }
}
