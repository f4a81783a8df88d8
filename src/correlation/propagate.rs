//! The client side: `PropagateCorrelationIdLayer` and its service.

use http::header::HeaderName;
use http::Request;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

use super::{current, CorrelationId, X_CORRELATION_ID};

/// Puts the current correlation id on every outbound request: see the [module docs](super).
///
/// The id comes from, in order: the request's own header (kept as it is), a [`CorrelationId`]
/// in the request's extensions, the task's [current](CorrelationId::current) id. A request
/// made outside any of those goes out unchanged.
///
/// # Clone
/// Cloning is cheap: the layer holds the header name only.
#[derive(Debug, Clone)]
pub struct PropagateCorrelationIdLayer {
    name: HeaderName,
}

impl PropagateCorrelationIdLayer {
    /// Sets `x-correlation-id`.
    pub const fn new() -> Self {
        Self {
            name: X_CORRELATION_ID,
        }
    }

    /// Sets the header `name` instead.
    pub const fn with_header(name: HeaderName) -> Self {
        Self { name }
    }
}

impl Default for PropagateCorrelationIdLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for PropagateCorrelationIdLayer {
    type Service = PropagateCorrelationId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PropagateCorrelationId {
            inner,
            name: self.name.clone(),
        }
    }
}

/// Puts the current correlation id on every outbound request. Built by
/// [`PropagateCorrelationIdLayer`].
#[derive(Debug, Clone)]
pub struct PropagateCorrelationId<S> {
    inner: S,
    name: HeaderName,
}

impl<S> PropagateCorrelationId<S> {
    /// Wraps `inner`, setting `x-correlation-id`.
    pub const fn new(inner: S) -> Self {
        Self {
            inner,
            name: X_CORRELATION_ID,
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

impl<S, B> Service<Request<B>> for PropagateCorrelationId<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if !req.headers().contains_key(&self.name) {
            let id = match req.extensions().get::<CorrelationId>() {
                Some(id) => Some(id.to_header_value()),
                None => current::with(CorrelationId::to_header_value),
            };
            if let Some(id) = id {
                req.headers_mut().insert(self.name.clone(), id);
            }
        }
        self.inner.call(req)
    }
}
