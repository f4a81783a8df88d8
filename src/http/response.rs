use crate::error::Rejection;
use http::header::{HeaderName, HeaderValue};
use http::{header, Response, StatusCode};
use std::convert::Infallible;
use std::error::Error as StdError;
use std::task::{Context, Poll};
use tower::BoxError;
use tower_layer::Layer;
use tower_service::Service;

/// Builds the response for an error that reached the HTTP face: see the table in
/// [`crate::http`]. The body is `B::default()` (empty for axum's `Body`, `Full` and `Empty`).
///
/// ```
/// use std::time::Duration;
/// use seawall::error::RateLimited;
/// use seawall::http::rejection_response;
///
/// let res = rejection_response::<String>(&RateLimited::new(Duration::from_millis(1500)));
/// assert_eq!(res.status(), 429);
/// assert_eq!(res.headers()["retry-after"], "2");
///
/// // A rejection that states its quota also gets `RateLimit-*` headers.
/// let limited = RateLimited::new(Duration::from_millis(200)).with_quota(5, Duration::from_secs(1));
/// let res = rejection_response::<String>(&limited);
/// assert_eq!(res.headers()["ratelimit-limit"], "5");
/// assert_eq!(res.headers()["ratelimit-remaining"], "0");
/// assert_eq!(res.headers()["ratelimit-reset"], "1");
/// ```
pub fn rejection_response<B: Default>(err: &(dyn StdError + 'static)) -> Response<B> {
    let Some(rejection) = Rejection::find(err) else {
        tracing::warn!(target: "seawall::http", error = %err, "inner service failed; answering 500");
        let mut res = Response::new(B::default());
        *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
        return res;
    };
    let status = match rejection {
        Rejection::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut res = Response::new(B::default());
    *res.status_mut() = status;
    if let Some(delay) = rejection.retry_after() {
        res.headers_mut()
            .insert(header::RETRY_AFTER, super::format_retry_after(delay));
    }
    if let Rejection::RateLimited(limited) = rejection {
        if let (Some(limit), Some(reset)) = (limited.limit(), limited.reset()) {
            let headers = res.headers_mut();
            headers.insert(RATELIMIT_LIMIT, HeaderValue::from(limit));
            headers.insert(RATELIMIT_REMAINING, HeaderValue::from_static("0"));
            headers.insert(RATELIMIT_RESET, super::format_retry_after(reset));
        }
    }
    res
}

// The three-header form of the IETF `draft-ietf-httpapi-ratelimit-headers` drafts.
const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// Turns errors into responses so the wrapped service's error is `Infallible`: see
/// [`crate::http`].
///
/// # Clone
/// Cloning is cheap; the layer holds no state.
#[derive(Debug, Clone, Copy, Default)]
pub struct RejectionResponseLayer {
    _priv: (),
}

impl RejectionResponseLayer {
    /// A new layer.
    pub const fn new() -> Self {
        Self { _priv: () }
    }
}

impl<S> Layer<S> for RejectionResponseLayer {
    type Service = RejectionResponse<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RejectionResponse::new(inner)
    }
}

/// A service whose errors, seawall rejections or not, become responses. Built by
/// [`RejectionResponseLayer`].
///
/// An error from the inner service's `poll_ready` is kept and answered as the response to the
/// next call, so readiness stays `Ok`.
#[derive(Debug)]
pub struct RejectionResponse<S> {
    inner: S,
    ready_error: Option<BoxError>,
}

impl<S: Clone> Clone for RejectionResponse<S> {
    fn clone(&self) -> Self {
        // A readiness error belongs to the instance that saw it.
        Self::new(self.inner.clone())
    }
}

impl<S> RejectionResponse<S> {
    /// Wraps `inner`.
    pub const fn new(inner: S) -> Self {
        Self {
            inner,
            ready_error: None,
        }
    }

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

impl<S, Req, B> Service<Req> for RejectionResponse<S>
where
    S: Service<Req, Response = Response<B>>,
    S::Error: Into<BoxError>,
    B: Default,
{
    type Response = Response<B>;
    type Error = Infallible;
    type Future = future::ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.ready_error.is_some() {
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => {
                self.ready_error = Some(e.into());
                Poll::Ready(Ok(()))
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        match self.ready_error.take() {
            Some(err) => future::ResponseFuture::failed(err),
            None => future::ResponseFuture::called(self.inner.call(req)),
        }
    }
}

/// The response future of [`RejectionResponse`].
pub mod future {
    use super::rejection_response;
    use http::Response;
    use pin_project_lite::pin_project;
    use std::convert::Infallible;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{ready, Context, Poll};
    use tower::BoxError;

    pin_project! {
        /// Resolves to the inner response, or to the response for the inner error.
        #[derive(Debug)]
        pub struct ResponseFuture<F> {
            #[pin]
            state: State<F>,
        }
    }

    pin_project! {
        #[project = StateProj]
        #[derive(Debug)]
        enum State<F> {
            Called { #[pin] future: F },
            Failed { error: Option<BoxError> },
        }
    }

    impl<F> ResponseFuture<F> {
        pub(crate) fn called(future: F) -> Self {
            Self {
                state: State::Called { future },
            }
        }

        pub(crate) fn failed(error: BoxError) -> Self {
            Self {
                state: State::Failed { error: Some(error) },
            }
        }
    }

    impl<F, B, E> Future for ResponseFuture<F>
    where
        F: Future<Output = Result<Response<B>, E>>,
        E: Into<BoxError>,
        B: Default,
    {
        type Output = Result<Response<B>, Infallible>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let error: BoxError = match self.project().state.project() {
                StateProj::Called { future } => match ready!(future.poll(cx)) {
                    Ok(res) => return Poll::Ready(Ok(res)),
                    Err(e) => e.into(),
                },
                StateProj::Failed { error } => error.take().expect("polled after completion"),
            };
            Poll::Ready(Ok(rejection_response(&*error)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{BulkheadFull, CircuitOpen};
    use std::time::Duration;
    use tower::{service_fn, ServiceExt};

    #[tokio::test]
    async fn open_circuit_becomes_503_with_retry_after() {
        let svc = RejectionResponseLayer::new().layer(service_fn(|_: ()| async {
            Err::<Response<String>, BoxError>(
                CircuitOpen::new(Some(Duration::from_millis(2500))).into(),
            )
        }));
        let res = svc.oneshot(()).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()[header::RETRY_AFTER], "3");
    }

    #[tokio::test]
    async fn unknown_retry_after_is_left_out() {
        let svc = RejectionResponseLayer::new().layer(service_fn(|_: ()| async {
            Err::<Response<String>, BoxError>(BulkheadFull::new(None).into())
        }));
        let res = svc.oneshot(()).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(res.headers().get(header::RETRY_AFTER).is_none());
    }

    #[tokio::test]
    async fn other_errors_become_500() {
        let svc = RejectionResponseLayer::new().layer(service_fn(|_: ()| async {
            Err::<Response<String>, BoxError>("boom".into())
        }));
        assert_eq!(
            svc.oneshot(()).await.unwrap().status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[tokio::test]
    async fn responses_pass_through_untouched() {
        let svc = RejectionResponseLayer::new().layer(service_fn(|_: ()| async {
            Ok::<_, BoxError>(Response::new("hi".to_string()))
        }));
        let res = svc.oneshot(()).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.body(), "hi");
    }

    #[derive(Clone)]
    struct NeverReady;
    impl Service<()> for NeverReady {
        type Response = Response<String>;
        type Error = BoxError;
        type Future = std::future::Ready<Result<Response<String>, BoxError>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            Poll::Ready(Err(CircuitOpen::new(None).into()))
        }
        fn call(&mut self, _: ()) -> Self::Future {
            unreachable!("poll_ready failed")
        }
    }

    #[tokio::test]
    async fn readiness_errors_are_answered_by_the_next_call() {
        let svc = RejectionResponseLayer::new().layer(NeverReady);
        let res = svc.oneshot(()).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
