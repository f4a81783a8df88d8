//! `RateLimit-*` headers on admitted responses.

use super::future::ResponseFuture;
use super::gcra::Params;
use super::key::{Extract, Global, KeyExtractor};
use super::layer::RateLimitLayer;
use super::service::dispatch;
use super::state::{Quota, Shared};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response};
use pin_project_lite::pin_project;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tower::BoxError;
use tower_layer::Layer;
use tower_service::Service;

/// `RateLimit-Limit`: calls allowed at once (the burst).
pub(crate) const LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
/// `RateLimit-Remaining`: calls the client's bucket would admit now.
pub(crate) const REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
/// `RateLimit-Reset`: seconds (rounded up) until the whole burst is available again.
pub(crate) const RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

pub(crate) fn insert(headers: &mut HeaderMap, limit: u64, remaining: u64, reset: Duration) {
    headers.insert(LIMIT, HeaderValue::from(limit));
    headers.insert(REMAINING, HeaderValue::from(remaining));
    headers.insert(RESET, crate::http::format_retry_after(reset));
}

impl<K: KeyExtractor> RateLimitLayer<K> {
    /// The same limit (same shared state), whose services also put `RateLimit-Limit`,
    /// `RateLimit-Remaining` and `RateLimit-Reset` on the responses they admit. Rejections
    /// get them from [`RejectionResponseLayer`](crate::http::RejectionResponseLayer).
    pub fn with_headers(&self) -> RateLimitHeadersLayer<K> {
        RateLimitHeadersLayer {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// A [`RateLimitLayer`] that also writes rate-limit headers on admitted HTTP responses:
/// from [`RateLimitLayer::with_headers`].
pub struct RateLimitHeadersLayer<K: KeyExtractor = Global> {
    shared: Arc<Shared<K>>,
}

impl<K: KeyExtractor> Clone for RateLimitHeadersLayer<K> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<K: KeyExtractor + fmt::Debug> fmt::Debug for RateLimitHeadersLayer<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitHeadersLayer")
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S, K: KeyExtractor> Layer<S> for RateLimitHeadersLayer<K> {
    type Service = RateLimitHeaders<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitHeaders {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// [`RateLimit`](super::RateLimit) for HTTP services, writing `RateLimit-*` headers on the
/// responses it admits. Built by [`RateLimitHeadersLayer`].
pub struct RateLimitHeaders<S, K: KeyExtractor = Global> {
    inner: S,
    shared: Arc<Shared<K>>,
}

impl<S, K: KeyExtractor> RateLimitHeaders<S, K> {
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

impl<S: Clone, K: KeyExtractor> Clone for RateLimitHeaders<S, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, K: KeyExtractor + fmt::Debug> fmt::Debug for RateLimitHeaders<S, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitHeaders")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S, K, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimitHeaders<S, K>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    K: Extract<Request<ReqBody>>,
{
    type Response = Response<ResBody>;
    type Error = BoxError;
    type Future = HeadersFuture<S, Request<ReqBody>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let (inner, quota) = dispatch(&self.shared, &mut self.inner, req);
        let quota = quota.map(|q| (q, self.shared.params()));
        HeadersFuture { inner, quota }
    }
}

pin_project! {
    /// The response future of [`RateLimitHeaders`].
    pub struct HeadersFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        inner: ResponseFuture<S, Req>,
        quota: Option<(Quota, Params)>,
    }
}

impl<S: Service<Req>, Req> fmt::Debug for HeadersFuture<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeadersFuture")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, Req, B> Future for HeadersFuture<S, Req>
where
    S: Service<Req, Response = Response<B>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<B>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = ready!(this.inner.poll(cx))?;
        if let Some((q, p)) = this.quota.take() {
            insert(res.headers_mut(), p.burst, q.remaining(&p), q.reset(&p));
        }
        Poll::Ready(Ok(res))
    }
}
