//! Futures of the correlation layers.

use http::header::HeaderName;
use http::Response;
use pin_project_lite::pin_project;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tracing::Span;

use super::current;
use super::CorrelationId;

pin_project! {
    /// The response future of [`SetCorrelationId`](super::SetCorrelationId): polls the inner
    /// future inside the request's span and with the id as the task's
    /// [current](CorrelationId::current) one, then echoes the id on the response (and puts
    /// it in the response's extensions, unless the layer was built without).
    ///
    /// Dropped before it completes, it drops the inner future with the id still current, as
    /// a `tokio::task_local!` scope does.
    pub struct ResponseFuture<F> {
        // `None` once it has completed.
        #[pin]
        inner: Option<F>,
        id: Option<CorrelationId>,
        // `None` when no subscriber takes `INFO`: nothing to drop.
        span: Option<Span>,
        echo: Option<HeaderName>,
        // The layer's other header names, taken off the response (`None` with one name).
        others: Option<Arc<[HeaderName]>>,
        // Whether the id goes into the response's extensions too.
        extension: bool,
    }

    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            if std::mem::needs_drop::<F>() && this.inner.is_some() {
                let _id = current::enter(this.id);
                this.inner.set(None);
            }
        }
    }
}

impl<F> ResponseFuture<F> {
    #[inline]
    pub(crate) fn new(
        id: CorrelationId,
        inner: F,
        span: Option<Span>,
        echo: HeaderName,
        others: Option<Arc<[HeaderName]>>,
        extension: bool,
    ) -> Self {
        Self {
            inner: Some(inner),
            id: Some(id),
            span,
            echo: Some(echo),
            others,
            extension,
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
        let mut result = {
            let _span = this.span.as_ref().and_then(super::enter);
            let _id = current::enter(this.id);
            let inner = this.inner.as_mut().as_pin_mut();
            ready!(inner
                .expect("ResponseFuture polled after completion")
                .poll(cx))
        };
        this.inner.set(None);
        // Echoed in place: moving the response out of the result and back costs a copy of it.
        if let Ok(response) = &mut result {
            // Both are there until the echo: no tuple of both to build and match.
            if let Some(id) = this.id.take() {
                if *this.extension {
                    response.extensions_mut().insert(id.clone());
                }
                if let Some(name) = this.echo.take() {
                    response.headers_mut().insert(name, id.into_header_value());
                }
            }
            // One id under one name: whatever the inner service put under the others goes.
            if let Some(names) = this.others.take() {
                for name in &names[1..] {
                    response.headers_mut().remove(name);
                }
            }
        }
        Poll::Ready(result)
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("id", &self.id)
            .field("span", &self.span)
            .field("echo", &self.echo)
            .finish_non_exhaustive()
    }
}

pin_project! {
    /// A future run with a correlation id as its task's current one (or as it is, when there
    /// was none) and inside a `tracing` span, so its log lines carry the id: made by
    /// [`CorrelationId::scope`] and [`with_current`](super::with_current).
    ///
    /// Dropped before it completes, it drops the future with the id still current, as a
    /// `tokio::task_local!` scope does.
    pub struct Scoped<F> {
        // `None` once it has completed.
        #[pin]
        future: Option<F>,
        id: Option<CorrelationId>,
        span: Span,
    }

    impl<F> PinnedDrop for Scoped<F> {
        fn drop(this: Pin<&mut Self>) {
            let mut this = this.project();
            if std::mem::needs_drop::<F>() && this.future.is_some() {
                let _id = current::enter(this.id);
                this.future.set(None);
            }
        }
    }
}

impl<F: Future> Scoped<F> {
    pub(crate) fn new(id: Option<CorrelationId>, span: Span, future: F) -> Self {
        Self {
            future: Some(future),
            id,
            span,
        }
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let output = {
            let _span = super::enter(this.span);
            let _id = current::enter(this.id);
            let future = this.future.as_mut().as_pin_mut();
            ready!(future.expect("Scoped polled after completion").poll(cx))
        };
        this.future.set(None);
        Poll::Ready(output)
    }
}

impl<F> fmt::Debug for Scoped<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scoped")
            .field("id", &self.id)
            .field("span", &self.span)
            .finish_non_exhaustive()
    }
}
