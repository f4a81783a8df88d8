//! What is retried and how a request is kept for the next attempt.

use super::handle::Reason;
use crate::classify::{Classify, ErrorsAsFailures, Outcome};
use crate::error::Rejection;
use std::fmt;
use std::time::Duration;
use tower::BoxError;

/// How a request is kept between attempts and sent again: the request half of a [`Policy`].
pub trait Replay<Req> {
    /// The request type the inner service takes (often `Req` itself).
    type Request;
    /// What is kept between attempts to build the next request.
    type Stash;

    /// Turns the caller's request into the first attempt's request, and keeps what a retry
    /// needs; `None` when the request must not be retried (it then goes out exactly once).
    fn prepare(&self, req: Req) -> (Self::Request, Option<Self::Stash>);

    /// Builds the request for the next attempt; `None` when that is no longer possible (a
    /// streaming body grew past its replay limit), and the last result is returned instead.
    fn replay(&self, stash: &mut Self::Stash) -> Option<Self::Request>;
}

/// Decides what a retry layer retries, and (through [`Replay`]) keeps what it needs to send a
/// request again.
///
/// The ready-made policies need no code: [`CloneRequest`] (the default, for any `Clone`
/// request), [`CloneWith`] (a clone function of yours), and with the `http` feature
/// [`HttpPolicy`](super::http::HttpPolicy) and [`HttpReplay`](super::http::HttpReplay).
/// Implement it yourself for anything else.
///
/// A policy is cloned into every response future, so it should be cheap to clone (the
/// ready-made ones are a few bytes).
pub trait Policy<Req, Res>: Replay<Req> {
    /// Whether a finished attempt failed ([`Outcome::Failure`] is retried; anything else is
    /// returned as it is).
    fn classify(&self, result: &Result<Res, BoxError>) -> Outcome;

    /// The wait the other side asked for, if any (`Retry-After`, a seawall rejection's
    /// `retry_after`). The default finds seawall rejections in errors.
    fn retry_after(&self, result: &Result<Res, BoxError>) -> Option<Duration> {
        match result {
            Err(e) => Rejection::find(&**e).and_then(|r| r.retry_after()),
            Ok(_) => None,
        }
    }

    /// Why a failed attempt failed, for logs and retry events.
    fn reason<'a>(&self, result: &'a Result<Res, BoxError>) -> Reason<'a> {
        match result {
            Err(e) => Reason::Error(&**e),
            Ok(_) => Reason::Response,
        }
    }

    /// What a call that ends on a failure returns, given its last result; called once per such
    /// call (see [`RetryLayerBuilder::on_exhausted`](super::RetryLayerBuilder::on_exhausted)
    /// for when). The default returns `last` as it is.
    fn fallback(&self, last: Result<Res, BoxError>) -> Result<Res, BoxError> {
        last
    }
}

/// A policy whose calls that end on a failure return what a function of yours makes of the
/// last result (Polly's fallback). Built by
/// [`RetryLayerBuilder::on_exhausted`](super::RetryLayerBuilder::on_exhausted).
#[derive(Clone, Copy)]
pub struct Fallback<P, F> {
    policy: P,
    fallback: F,
}

impl<P, F> Fallback<P, F> {
    /// `policy`, with `fallback` applied to the last result of a call that ends on a failure
    /// (after `policy`'s own [`Policy::fallback`]).
    pub const fn new(policy: P, fallback: F) -> Self {
        Self { policy, fallback }
    }

    /// The wrapped policy.
    pub fn policy(&self) -> &P {
        &self.policy
    }
}

impl<P: fmt::Debug, F> fmt::Debug for Fallback<P, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("policy", &self.policy)
            .field("fallback", &std::any::type_name::<F>())
            .finish()
    }
}

impl<Req, P: Replay<Req>, F> Replay<Req> for Fallback<P, F> {
    type Request = P::Request;
    type Stash = P::Stash;

    #[inline]
    fn prepare(&self, req: Req) -> (Self::Request, Option<Self::Stash>) {
        self.policy.prepare(req)
    }

    #[inline]
    fn replay(&self, stash: &mut Self::Stash) -> Option<Self::Request> {
        self.policy.replay(stash)
    }
}

impl<Req, Res, P, F> Policy<Req, Res> for Fallback<P, F>
where
    P: Policy<Req, Res>,
    F: Fn(Result<Res, BoxError>) -> Result<Res, BoxError>,
{
    #[inline]
    fn classify(&self, result: &Result<Res, BoxError>) -> Outcome {
        self.policy.classify(result)
    }

    fn retry_after(&self, result: &Result<Res, BoxError>) -> Option<Duration> {
        self.policy.retry_after(result)
    }

    fn reason<'a>(&self, result: &'a Result<Res, BoxError>) -> Reason<'a> {
        self.policy.reason(result)
    }

    fn fallback(&self, last: Result<Res, BoxError>) -> Result<Res, BoxError> {
        (self.fallback)(self.policy.fallback(last))
    }
}

/// Retries any `Clone` request: the request is cloned before the first attempt and again for
/// each retry. What fails comes from the classifier `C` (default [`ErrorsAsFailures`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct CloneRequest<C = ErrorsAsFailures> {
    classifier: C,
}

impl<C> CloneRequest<C> {
    /// A policy with `classifier`.
    pub const fn new(classifier: C) -> Self {
        Self { classifier }
    }

    /// The classifier.
    pub fn classifier(&self) -> &C {
        &self.classifier
    }
}

impl<Req: Clone, C> Replay<Req> for CloneRequest<C> {
    type Request = Req;
    type Stash = Req;

    #[inline]
    fn prepare(&self, req: Req) -> (Req, Option<Req>) {
        (req.clone(), Some(req))
    }

    #[inline]
    fn replay(&self, stash: &mut Req) -> Option<Req> {
        Some(stash.clone())
    }
}

impl<Req, Res, C> Policy<Req, Res> for CloneRequest<C>
where
    Req: Clone,
    C: Classify<Res, BoxError>,
{
    #[inline]
    fn classify(&self, result: &Result<Res, BoxError>) -> Outcome {
        self.classifier.classify(result)
    }
}

/// Retries requests that a function of yours can copy: `Fn(&Req) -> Option<Req>`, `None`
/// meaning "send this one once, never retry it".
#[derive(Clone, Copy, Default)]
pub struct CloneWith<F, C = ErrorsAsFailures> {
    clone: F,
    classifier: C,
}

impl<F, C> CloneWith<F, C> {
    /// A policy that copies requests with `clone` and classifies with `classifier`.
    pub const fn new(clone: F, classifier: C) -> Self {
        Self { clone, classifier }
    }
}

impl<F, C: fmt::Debug> fmt::Debug for CloneWith<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloneWith")
            .field("clone", &std::any::type_name::<F>())
            .field("classifier", &self.classifier)
            .finish()
    }
}

impl<Req, F, C> Replay<Req> for CloneWith<F, C>
where
    F: Fn(&Req) -> Option<Req>,
{
    type Request = Req;
    type Stash = Req;

    fn prepare(&self, req: Req) -> (Req, Option<Req>) {
        match (self.clone)(&req) {
            Some(copy) => (copy, Some(req)),
            None => (req, None),
        }
    }

    fn replay(&self, stash: &mut Req) -> Option<Req> {
        (self.clone)(stash)
    }
}

impl<Req, Res, F, C> Policy<Req, Res> for CloneWith<F, C>
where
    F: Fn(&Req) -> Option<Req>,
    C: Classify<Res, BoxError>,
{
    fn classify(&self, result: &Result<Res, BoxError>) -> Outcome {
        self.classifier.classify(result)
    }
}
