//! Answer from a function of yours when a call is rejected or fails.
//!
//! The classic breaker-with-fallback pattern: when a circuit is open, a bulkhead full, a limit
//! reached, or the inner service fails, [`Fallback`] calls your function with what went wrong
//! ([`Failed`]) and answers with what it returns: a cached value, a default response, or the
//! error again. [`Failed::rejection`] tells which seawall layer refused the call, if one did.
//!
//! By default only errors reach the fallback. With [`FallbackLayer::classifier`], responses
//! that the classifier calls failures (say `5xx` with
//! [`ServerErrorsAsFailures`](crate::classify::ServerErrorsAsFailures)) reach it too.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use seawall::error::{CircuitOpen, Rejection};
//! use seawall::fallback::{Failed, FallbackLayer};
//! use tower::{service_fn, BoxError, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let price = service_fn(|_: &str| async {
//!     Err::<u32, BoxError>(CircuitOpen::new(Some(Duration::from_secs(3))).into())
//! });
//! let cached = FallbackLayer::new(|failed: Failed<u32>| match failed.rejection() {
//!     Some(Rejection::CircuitOpen(_)) => Ok(42), // the last price we saw
//!     _ => Err(failed.into_error()),
//! });
//! assert_eq!(cached.layer(price).oneshot("ACME").await.unwrap(), 42);
//! # }
//! ```

use crate::classify::{Classify, ErrorsAsFailures, Outcome};
use crate::error::Rejection;
use std::fmt;
use std::task::{Context, Poll};
use tower::BoxError;
use tower_layer::Layer;
use tower_service::Service;

/// What went wrong with a call, handed to the fallback function.
#[derive(Debug)]
pub enum Failed<Res> {
    /// The call ended in an error: a seawall rejection or the inner service's own error.
    Error(BoxError),
    /// The call ended in a response that the classifier calls a failure.
    Response(Res),
}

impl<Res> Failed<Res> {
    /// The seawall rejection behind this failure, if a layer refused the call.
    pub fn rejection(&self) -> Option<Rejection<'_>> {
        match self {
            Failed::Error(e) => Rejection::find(&**e),
            Failed::Response(_) => None,
        }
    }

    /// The failure as an error: the error itself, or for a failed response a
    /// [`FailedResponse`] error (the response is dropped).
    pub fn into_error(self) -> BoxError {
        match self {
            Failed::Error(e) => e,
            Failed::Response(_) => Box::new(FailedResponse(())),
        }
    }

    /// The failure as a result: a failed response is given back as `Ok`, an error as `Err`.
    pub fn into_result(self) -> Result<Res, BoxError> {
        match self {
            Failed::Error(e) => Err(e),
            Failed::Response(r) => Ok(r),
        }
    }
}

/// The error [`Failed::into_error`] gives for a response the classifier called a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailedResponse(());

impl fmt::Display for FailedResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the response was classified as a failure")
    }
}

impl std::error::Error for FailedResponse {}

/// Wraps services in [`Fallback`].
///
/// # Clone
/// Clones share nothing but a clone of the function and classifier.
#[derive(Clone)]
pub struct FallbackLayer<F, C = ErrorsAsFailures> {
    f: F,
    classifier: C,
}

impl<F, C> fmt::Debug for FallbackLayer<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackLayer").finish_non_exhaustive()
    }
}

impl<F> FallbackLayer<F> {
    /// Calls `f` with every error (rejections included) and answers with what it returns.
    pub const fn new(f: F) -> Self {
        Self {
            f,
            classifier: ErrorsAsFailures,
        }
    }
}

impl<F, C> FallbackLayer<F, C> {
    /// Also sends responses that `classifier` calls [`Outcome::Failure`] to the fallback
    /// (errors always go there, whatever the classifier says of them).
    pub fn classifier<C2>(self, classifier: C2) -> FallbackLayer<F, C2> {
        FallbackLayer {
            f: self.f,
            classifier,
        }
    }
}

impl<S, F: Clone, C: Clone> Layer<S> for FallbackLayer<F, C> {
    type Service = Fallback<S, F, C>;

    fn layer(&self, inner: S) -> Self::Service {
        Fallback {
            inner,
            f: self.f.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// A service that answers from a fallback function when the inner call fails. Built by
/// [`FallbackLayer`].
#[derive(Clone)]
pub struct Fallback<S, F, C = ErrorsAsFailures> {
    inner: S,
    f: F,
    classifier: C,
}

impl<S: fmt::Debug, F, C> fmt::Debug for Fallback<S, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, F, C> Fallback<S, F, C> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, F, C, Req> Service<Req> for Fallback<S, F, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    F: Fn(Failed<S::Response>) -> Result<S::Response, BoxError> + Clone,
    C: Classify<S::Response, BoxError> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = future::ResponseFuture<S::Future, F, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // A readiness error is the inner service's to report: the fallback answers calls.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        future::ResponseFuture::new(
            self.inner.call(req),
            self.f.clone(),
            self.classifier.clone(),
        )
    }
}

/// The response future of [`Fallback`].
pub mod future {
    use super::{Classify, Failed, Outcome};
    use pin_project_lite::pin_project;
    use std::fmt;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{ready, Context, Poll};
    use tower::BoxError;

    pin_project! {
        /// Resolves to the inner result, or to the fallback's answer when it failed.
        pub struct ResponseFuture<Fut, F, C> {
            #[pin]
            inner: Fut,
            f: F,
            classifier: C,
        }
    }

    impl<Fut, F, C> ResponseFuture<Fut, F, C> {
        pub(crate) fn new(inner: Fut, f: F, classifier: C) -> Self {
            Self {
                inner,
                f,
                classifier,
            }
        }
    }

    impl<Fut, F, C> fmt::Debug for ResponseFuture<Fut, F, C> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("ResponseFuture").finish_non_exhaustive()
        }
    }

    impl<Fut, Res, E, F, C> Future for ResponseFuture<Fut, F, C>
    where
        Fut: Future<Output = Result<Res, E>>,
        E: Into<BoxError>,
        F: Fn(Failed<Res>) -> Result<Res, BoxError>,
        C: Classify<Res, BoxError>,
    {
        type Output = Result<Res, BoxError>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let this = self.project();
            let result = ready!(this.inner.poll(cx)).map_err(Into::into);
            let failed = match result {
                Err(e) => Failed::Error(e),
                Ok(res) => {
                    let result = Ok(res);
                    if this.classifier.classify(&result) != Outcome::Failure {
                        return Poll::Ready(result);
                    }
                    match result {
                        Ok(res) => Failed::Response(res),
                        Err(e) => Failed::Error(e),
                    }
                }
            };
            Poll::Ready((this.f)(failed))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{BulkheadFull, RateLimited};
    use std::time::Duration;
    use tower::{service_fn, ServiceExt};

    fn answer_with_layer_name(failed: Failed<&'static str>) -> Result<&'static str, BoxError> {
        match failed.rejection() {
            Some(r) => Ok(r.layer()),
            None => Err(failed.into_error()),
        }
    }

    #[tokio::test]
    async fn fallback_knows_which_rejection_happened() {
        let bulkhead =
            FallbackLayer::new(answer_with_layer_name).layer(service_fn(|_: ()| async {
                Err::<&'static str, BoxError>(BulkheadFull::new(None).into())
            }));
        assert_eq!(bulkhead.oneshot(()).await.unwrap(), "bulkhead");

        let limit = FallbackLayer::new(answer_with_layer_name).layer(service_fn(|_: ()| async {
            Err::<&'static str, BoxError>(RateLimited::new(Duration::from_secs(1)).into())
        }));
        assert_eq!(limit.oneshot(()).await.unwrap(), "rate_limit");
    }

    #[tokio::test]
    async fn inner_errors_reach_the_fallback_unchanged() {
        let svc = FallbackLayer::new(answer_with_layer_name).layer(service_fn(|_: ()| async {
            Err::<&'static str, BoxError>("connection refused".into())
        }));
        let err = svc.oneshot(()).await.unwrap_err();
        assert_eq!(err.to_string(), "connection refused");
    }

    #[tokio::test]
    async fn successes_do_not_call_the_fallback() {
        let svc = FallbackLayer::new(|_: Failed<&'static str>| -> Result<_, BoxError> {
            panic!("fallback called on success")
        })
        .layer(service_fn(|_: ()| async { Ok::<_, BoxError>("fresh") }));
        assert_eq!(svc.oneshot(()).await.unwrap(), "fresh");
    }

    #[cfg(feature = "http")]
    #[tokio::test]
    async fn classified_failed_responses_reach_the_fallback() {
        use crate::classify::ServerErrorsAsFailures;
        use http::{Response, StatusCode};

        let svc = FallbackLayer::new(|failed: Failed<Response<&'static str>>| {
            let status = match &failed {
                Failed::Response(r) => r.status(),
                Failed::Error(_) => StatusCode::IM_A_TEAPOT,
            };
            assert_eq!(status, StatusCode::BAD_GATEWAY);
            Ok(Response::new("stale but served"))
        })
        .classifier(ServerErrorsAsFailures)
        .layer(service_fn(|_: ()| async {
            let mut res = Response::new("upstream broke");
            *res.status_mut() = StatusCode::BAD_GATEWAY;
            Ok::<_, BoxError>(res)
        }));
        let res = svc.oneshot(()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(*res.body(), "stale but served");
    }

    #[cfg(feature = "http")]
    #[tokio::test]
    async fn client_errors_pass_through_with_server_error_classifier() {
        use crate::classify::ServerErrorsAsFailures;
        use http::{Response, StatusCode};

        let svc = FallbackLayer::new(|_: Failed<Response<()>>| -> Result<_, BoxError> {
            panic!("404 is not a failure")
        })
        .classifier(ServerErrorsAsFailures)
        .layer(service_fn(|_: ()| async {
            let mut res = Response::new(());
            *res.status_mut() = StatusCode::NOT_FOUND;
            Ok::<_, BoxError>(res)
        }));
        assert_eq!(
            svc.oneshot(()).await.unwrap().status(),
            StatusCode::NOT_FOUND
        );
    }
}
