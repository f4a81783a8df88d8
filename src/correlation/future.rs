//! Futures of the correlation layers.

use http::header::HeaderName;
use http::Response;
use pin_project_lite::pin_project;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::task::futures::TaskLocalFuture;
use tracing::Span;

use super::{CorrelationId, CURRENT};

pin_project! {
    /// The response future of [`SetCorrelationId`](super::SetCorrelationId): polls the inner
    /// future inside the request's span and with the id as the task's
    /// [current](CorrelationId::current) one, then echoes the id on the response.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: TaskLocalFuture<CorrelationId, F>,
        span: Span,
        echo: Option<HeaderName>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(
        inner: TaskLocalFuture<CorrelationId, F>,
        span: Span,
        echo: HeaderName,
    ) -> Self {
        Self {
            inner,
            span,
            echo: Some(echo),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let result = {
            let _entered = super::enter(this.span);
            ready!(this.inner.as_mut().poll(cx))
        };
        let mut response = result?;
        if let (Some(name), Some(id)) = (this.echo.take(), this.inner.take_value()) {
            response.headers_mut().insert(name, id.into_header_value());
        }
        Poll::Ready(Ok(response))
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("span", &self.span)
            .field("echo", &self.echo)
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// A future run with a correlation id as its task's current one (or as it is, when there
    /// was none) and inside a `tracing` span, so its log lines carry the id: made by
    /// [`CorrelationId::scope`] and [`with_current`](super::with_current).
    pub struct Scoped<F> {
        #[pin]
        state: State<F>,
        span: Span,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        With { #[pin] future: TaskLocalFuture<CorrelationId, F> },
        Without { #[pin] future: F },
    }
}

impl<F: Future> Scoped<F> {
    pub(crate) fn new(id: Option<CorrelationId>, span: Span, future: F) -> Self {
        let state = match id {
            Some(id) => State::With {
                future: CURRENT.scope(id, future),
            },
            None => State::Without { future },
        };
        Self { state, span }
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = super::enter(this.span);
        match this.state.project() {
            StateProj::With { future } => future.poll(cx),
            StateProj::Without { future } => future.poll(cx),
        }
    }
}

impl<F> fmt::Debug for Scoped<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = match &self.state {
            State::With { future } => format!("{future:?}"),
            State::Without { .. } => "none".to_owned(),
        };
        f.debug_struct("Scoped")
            .field("id", &id)
            .field("span", &self.span)
            .finish_non_exhaustive()
    }
}
