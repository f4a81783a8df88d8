use super::future::{ResponseFuture, Waiting};
use super::key::{Extract, Global, KeyExtractor};
use super::layer::RateLimitLayer;
#[cfg(feature = "http")]
use super::state::Quota;
use super::state::{Decision, Shared};
use super::RateLimitHandle;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::BoxError;
use tower_service::Service;

/// Limits the rate of calls to `S`: built by [`RateLimitLayer`].
///
/// `poll_ready` is the inner service's readiness, nothing more; the decision is taken in
/// `call`, so an idle connection holds no quota. A call over the limit gets
/// [`RateLimited`](crate::error::RateLimited) as its error at once, or, in wait mode, waits in
/// its response future for its booked slot and then calls the inner service (the one `call`
/// readied, swapped for a fresh clone, as tower's docs on cloning services advise).
///
/// # Clone
/// Clones share the allowance (and the key table) of the layer value that built them.
pub struct RateLimit<S, K: KeyExtractor = Global> {
    inner: S,
    shared: Arc<Shared<K>>,
}

impl<S, K: KeyExtractor> RateLimit<S, K> {
    /// Wraps `inner` in the limit of `layer`.
    pub fn new(inner: S, layer: &RateLimitLayer<K>) -> Self {
        Self {
            inner,
            shared: Arc::clone(&layer.shared),
        }
    }

    /// The handle on the limit this service draws from.
    pub fn handle(&self) -> RateLimitHandle<K> {
        RateLimitHandle::new(Arc::clone(&self.shared))
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

impl<S: Clone, K: KeyExtractor> Clone for RateLimit<S, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S: fmt::Debug, K: KeyExtractor + fmt::Debug> fmt::Debug for RateLimit<S, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S, K, Req> Service<Req> for RateLimit<S, K>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    K: Extract<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    // Always inlined (its slow paths are out of line, so it is small): left out of line, it
    // hands its future back through memory, and the caller's 16-byte copy of it waits on the
    // two 8-byte stores that wrote it (store forwarding fails), measured in the bench.
    #[inline(always)]
    fn call(&mut self, req: Req) -> Self::Future {
        let decision = {
            let key = self.shared.key.extract(&req);
            self.shared.acquire(key.as_deref())
        };
        match decision {
            Decision::Now(_) => ResponseFuture::called(self.inner.call(req)),
            Decision::At(at, _) => {
                ResponseFuture::waiting(wait(&self.shared, &mut self.inner, at, req))
            }
            Decision::Denied(rejection) => ResponseFuture::rejected(rejection),
        }
    }
}

/// Decides `req` and starts its future; also returns the state of the bucket it drew from
/// when it was admitted.
#[cfg(feature = "http")]
#[inline]
pub(crate) fn dispatch<S, K, Req>(
    shared: &Shared<K>,
    inner: &mut S,
    req: Req,
) -> (ResponseFuture<S, Req>, Option<Quota>)
where
    S: Service<Req> + Clone,
    K: Extract<Req>,
{
    let decision = {
        let key = shared.key.extract(&req);
        shared.acquire(key.as_deref())
    };
    match decision {
        Decision::Now(quota) => (ResponseFuture::called(inner.call(req)), Some(quota)),
        Decision::At(at, quota) => (
            ResponseFuture::waiting(wait(shared, inner, at, req)),
            Some(Quota { now: at, ..quota }),
        ),
        Decision::Denied(rejection) => (ResponseFuture::rejected(rejection), None),
    }
}

/// A call that waits for its slot at `at`: takes the readied `inner`, leaving a fresh clone.
#[cold]
#[inline(never)]
fn wait<S, K, Req>(
    shared: &Shared<K>,
    inner: &mut S,
    at: u64,
    req: Req,
) -> Pin<Box<Waiting<S, Req>>>
where
    S: Service<Req> + Clone,
    K: KeyExtractor,
{
    let fresh = inner.clone();
    let readied = std::mem::replace(inner, fresh);
    Waiting::boxed(shared.clock.instant(at), readied, req)
}
