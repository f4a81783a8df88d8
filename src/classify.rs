//! One notion of failure, shared by the circuit breaker and retry.
//!
//! A call ends in a `Result<Response, Error>`; a [`Classify`] implementation says whether that
//! result is a [`Outcome::Success`], a [`Outcome::Failure`] or [`Outcome::Ignored`] (it does not
//! count either way). The circuit breaker counts failures towards tripping; the retry layer
//! retries failures. Ignored outcomes leave both untouched.
//!
//! Ready-made classifiers:
//!
//! | classifier | failure | success | use it for |
//! |---|---|---|---|
//! | [`ErrorsAsFailures`] | every `Err` | every `Ok` | any `tower::Service` (the default) |
//! | [`ServerErrorsAsFailures`] (feature `http`) | every `Err`, and `5xx` responses | everything else, including `4xx` | HTTP clients and servers behind a breaker |
//! | [`StatusInRangeAsFailures`] (feature `http`) | every `Err`, and statuses in a range you give | everything else | APIs with their own notion of failure |
//!
//! Any closure `Fn(&Result<Res, E>) -> Outcome` is a classifier too.
//!
//! # Example
//!
//! ```
//! use seawall::classify::{Classify, ErrorsAsFailures, Outcome};
//!
//! let ok: Result<u32, &str> = Ok(1);
//! let err: Result<u32, &str> = Err("refused");
//! assert_eq!(ErrorsAsFailures.classify(&ok), Outcome::Success);
//! assert_eq!(ErrorsAsFailures.classify(&err), Outcome::Failure);
//!
//! // A closure: timeouts don't count against the dependency, other errors do.
//! let only_refusals = |result: &Result<u32, &str>| match result {
//!     Ok(_) => Outcome::Success,
//!     Err(e) if *e == "timeout" => Outcome::Ignored,
//!     Err(_) => Outcome::Failure,
//! };
//! assert_eq!(only_refusals.classify(&Err("timeout")), Outcome::Ignored);
//! ```

/// What one finished call counts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The call succeeded: it counts towards closing a breaker and ends a retry loop.
    Success,
    /// The call failed: it counts towards tripping a breaker and may be retried.
    Failure,
    /// The call counts neither way (a breaker does not record it; retry returns it as it is).
    Ignored,
}

impl Outcome {
    /// `true` for [`Outcome::Failure`].
    pub const fn is_failure(self) -> bool {
        matches!(self, Outcome::Failure)
    }

    /// `true` for [`Outcome::Success`].
    pub const fn is_success(self) -> bool {
        matches!(self, Outcome::Success)
    }
}

/// Decides what a finished call counts as.
///
/// `Res` is the service's response type and `E` its error type. Implementations should be cheap:
/// they run once per call on the hot path.
///
/// Every `Fn(&Result<Res, E>) -> Outcome` closure implements this trait.
pub trait Classify<Res, E> {
    /// Classifies one finished call.
    fn classify(&self, result: &Result<Res, E>) -> Outcome;
}

impl<F, Res, E> Classify<Res, E> for F
where
    F: Fn(&Result<Res, E>) -> Outcome,
{
    #[inline]
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        self(result)
    }
}

/// Every error is a failure, every response a success. The default for any `tower::Service`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorsAsFailures;

impl<Res, E> Classify<Res, E> for ErrorsAsFailures {
    #[inline]
    fn classify(&self, result: &Result<Res, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}

#[cfg(feature = "http")]
pub use self::http_classify::{ServerErrorsAsFailures, StatusInRangeAsFailures};

#[cfg(feature = "http")]
mod http_classify {
    use super::{Classify, Outcome};
    use http::{Response, StatusCode};
    use std::ops::RangeInclusive;

    /// Errors and `5xx` responses are failures; every other response, `4xx` included, is a
    /// success.
    ///
    /// This is the default a circuit breaker wants in front of an HTTP dependency: a `404` or a
    /// `422` says the dependency is healthy and the request was wrong, a `503` says it is not.
    /// It follows tower-http's classifier of the same name.
    ///
    /// ```
    /// use http::{Response, StatusCode};
    /// use seawall::classify::{Classify, Outcome, ServerErrorsAsFailures};
    ///
    /// let res = |s: u16| -> Result<Response<()>, std::io::Error> {
    ///     Ok(Response::builder().status(s).body(()).unwrap())
    /// };
    /// assert_eq!(ServerErrorsAsFailures.classify(&res(500)), Outcome::Failure);
    /// assert_eq!(ServerErrorsAsFailures.classify(&res(404)), Outcome::Success);
    /// ```
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct ServerErrorsAsFailures;

    impl<B, E> Classify<Response<B>, E> for ServerErrorsAsFailures {
        #[inline]
        fn classify(&self, result: &Result<Response<B>, E>) -> Outcome {
            match result {
                Ok(res) if res.status().is_server_error() => Outcome::Failure,
                Ok(_) => Outcome::Success,
                Err(_) => Outcome::Failure,
            }
        }
    }

    /// Errors and responses whose status lies in a given range are failures.
    ///
    /// ```
    /// use http::Response;
    /// use seawall::classify::{Classify, Outcome, StatusInRangeAsFailures};
    ///
    /// // Treat 429 and every 5xx as failures.
    /// let c = StatusInRangeAsFailures::new(429..=599);
    /// let res = |s: u16| -> Result<Response<()>, ()> {
    ///     Ok(Response::builder().status(s).body(()).unwrap())
    /// };
    /// assert_eq!(c.classify(&res(429)), Outcome::Failure);
    /// assert_eq!(c.classify(&res(404)), Outcome::Success);
    /// ```
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct StatusInRangeAsFailures {
        range: RangeInclusive<u16>,
    }

    impl StatusInRangeAsFailures {
        /// Statuses in `range` (inclusive, as numbers such as `500..=599`) are failures.
        pub const fn new(range: RangeInclusive<u16>) -> Self {
            Self { range }
        }

        /// Whether `status` lies in the failure range.
        pub fn is_failure_status(&self, status: StatusCode) -> bool {
            self.range.contains(&status.as_u16())
        }
    }

    impl<B, E> Classify<Response<B>, E> for StatusInRangeAsFailures {
        #[inline]
        fn classify(&self, result: &Result<Response<B>, E>) -> Outcome {
            match result {
                Ok(res) if self.is_failure_status(res.status()) => Outcome::Failure,
                Ok(_) => Outcome::Success,
                Err(_) => Outcome::Failure,
            }
        }
    }
}
