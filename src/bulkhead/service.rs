use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tower::BoxError;
use tower_service::Service;

use super::future::{ResponseFuture, Waiting};
use super::handle::BulkheadHandle;
use super::layer::BulkheadLayer;
use super::state::{Acquired, Node, Shared};

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

    // Always inlined, and every response future is built here (the slow path returns a small
    // outcome): when `call` or a branch of it builds the future out of line, the happy path's
    // future goes through a temporary and a copy that stalls on store forwarding, about 9 ns
    // on the benches' machine, as much as the accounting itself.
    #[inline(always)]
    fn call(&mut self, req: Req) -> Self::Future {
        let permit = match self.shared.try_acquire() {
            Some(permit) => permit,
            None => match self.shared.acquire_slow() {
                Acquired::Permit(permit) => permit,
                Acquired::Full(error) => return ResponseFuture::rejected(error),
                Acquired::Queued { node, max_wait } => {
                    return ResponseFuture::waiting(self.wait(req, node, max_wait))
                }
            },
        };
        ResponseFuture::called(self.inner.call(req), permit)
    }
}

impl<S> Bulkhead<S> {
    /// A call that must wait for a permit (wait mode).
    #[cold]
    #[inline(never)]
    fn wait<Req>(&mut self, req: Req, node: Arc<Node>, max_wait: Duration) -> Waiting<S, Req>
    where
        S: Service<Req> + Clone,
    {
        // The readied service goes with the waiting call; this one gets a fresh clone to ready
        // next.
        let fresh = self.inner.clone();
        let service = std::mem::replace(&mut self.inner, fresh);
        // `max_wait` is at most a day (the bound of the builder and the handle), which any clock can add; were it
        // not, the wait would expire at once rather than panic at call time.
        let now = tokio::time::Instant::now();
        let until = now.checked_add(max_wait).unwrap_or(now);
        Waiting::new(Arc::clone(&self.shared), node, service, req, until)
    }
}
