use std::sync::Arc;
use std::task::{Context, Poll};

use tower::BoxError;
use tower_service::Service;

use super::future::ResponseFuture;
use super::handle::BulkheadHandle;
use super::layer::BulkheadLayer;
use super::state::{Enqueued, Shared};

/// Caps how many calls are in flight through it: see [`crate::bulkhead`]. Built by
/// [`BulkheadLayer`].
///
/// `poll_ready` is the inner service's readiness and holds no permit: the permit is taken in
/// `call` and given back when the response future completes or is dropped.
///
/// The inner service must be `Clone`: a call that waits for a permit (wait mode) takes the
/// readied inner service with it and leaves a fresh clone to be readied next, as tower's
/// docs advise. The happy path never clones.
///
/// # Clone
/// Clones share the bulkhead of the layer value that built the service.
#[derive(Debug)]
pub struct Bulkhead<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: Clone> Clone for Bulkhead<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S> Bulkhead<S> {
    /// Wraps `inner` in `layer`'s bulkhead (the same as `layer.layer(inner)`).
    pub fn new(inner: S, layer: &BulkheadLayer) -> Self {
        Self {
            inner,
            shared: Arc::clone(layer.shared()),
        }
    }

    /// A handle on this service's bulkhead.
    pub fn handle(&self) -> BulkheadHandle {
        BulkheadHandle::new(Arc::clone(&self.shared))
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

impl<S, Req> Service<Req> for Bulkhead<S>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        if let Some(permit) = self.shared.local_stripe().try_acquire() {
            return ResponseFuture::called(self.inner.call(req), permit);
        }
        self.call_slow(req)
    }
}

impl<S> Bulkhead<S> {
    #[cold]
    #[inline(never)]
    fn call_slow<Req>(&mut self, req: Req) -> ResponseFuture<S, Req>
    where
        S: Service<Req> + Clone,
    {
        if let Some(permit) = self.shared.try_acquire_slow() {
            return ResponseFuture::called(self.inner.call(req), permit);
        }
        let core = self.shared.core();
        let Some(max_wait) = core.config().max_wait else {
            return ResponseFuture::rejected(core.reject("full"));
        };
        match self.shared.enqueue() {
            Enqueued::Granted(permit) => ResponseFuture::called(self.inner.call(req), permit),
            Enqueued::QueueFull => ResponseFuture::rejected(core.reject("queue full")),
            Enqueued::Waiting(node) => {
                // The readied service goes with the waiting call; this one gets a fresh clone
                // to ready next.
                let fresh = self.inner.clone();
                let service = std::mem::replace(&mut self.inner, fresh);
                ResponseFuture::waiting(
                    Arc::clone(&self.shared),
                    node,
                    service,
                    req,
                    tokio::time::Instant::now() + max_wait,
                )
            }
        }
    }
}
