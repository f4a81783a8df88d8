use super::future::{Link, ResponseFuture};
use super::handle::RetryHandle;
use super::policy::{Policy, Replay};
use super::shared::{Core, CoreRef};
use std::fmt;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use tower::BoxError;
use tower_service::Service;

/// First attempts are published to the shared counters this many at a time.
const BATCH: u32 = 64;

/// Retries failed calls of the inner service with backoff and jitter, within a budget.
/// Built by [`RetryLayer`](super::RetryLayer); see [the module docs](super).
///
/// # Clone
/// Clones share the layer's metrics, budget and RNG; each clone counts its own first attempts
/// and publishes them in batches (see [`RetryMetrics::attempts`](super::RetryMetrics::attempts)).
pub struct Retry<S, P> {
    inner: S,
    policy: P,
    local: LocalCount,
}

/// The per-clone count of first attempts not yet published, and the shared state.
struct LocalCount {
    core: CoreRef,
    /// The core, when every call starts on the success path: static, and no timer.
    fast: Option<&'static Core>,
    /// First attempts left before the next publication: counts down from `BATCH`, so that a
    /// call is one decrement and one test.
    left: u32,
}

impl LocalCount {
    fn new(core: CoreRef) -> Self {
        let fast = match core {
            CoreRef::Static(c) if !c.config.timed => Some(c),
            _ => None,
        };
        Self {
            core,
            fast,
            left: BATCH,
        }
    }

    #[inline]
    fn count(&mut self) {
        self.left -= 1;
        if self.left == 0 {
            self.flush();
        }
    }

    /// The link of a call whose layer has a timer or a reference-counted core.
    #[inline(never)]
    fn link<R>(&self) -> Link<R> {
        Link::new(self.core.clone())
    }

    fn flush(&mut self) {
        let n = BATCH - std::mem::replace(&mut self.left, BATCH);
        if n == 0 {
            return;
        }
        self.core
            .metrics
            .calls
            .fetch_add(u64::from(n), Ordering::Relaxed);
        if let Some(budget) = &self.core.budget {
            budget.deposit_n(u64::from(n));
        }
    }
}

impl Drop for LocalCount {
    fn drop(&mut self) {
        self.flush();
    }
}

impl Clone for LocalCount {
    fn clone(&self) -> Self {
        Self::new(self.core.clone())
    }
}

impl<S: Clone, P: Clone> Clone for Retry<S, P> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            policy: self.policy.clone(),
            local: self.local.clone(),
        }
    }
}

impl<S: fmt::Debug, P: fmt::Debug> fmt::Debug for Retry<S, P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("inner", &self.inner)
            .field("policy", &self.policy)
            .field("config", &self.local.core.config)
            .finish()
    }
}

impl<S, P> Retry<S, P> {
    pub(crate) fn from_parts(inner: S, policy: P, core: CoreRef) -> Self {
        Self {
            inner,
            policy,
            local: LocalCount::new(core),
        }
    }

    /// Wraps `inner` with the settings and the shared state of `layer` (the same as
    /// `layer.layer(inner)`).
    pub fn new(inner: S, layer: &super::RetryLayer<P>) -> Self
    where
        P: Clone,
    {
        tower_layer::Layer::layer(layer, inner)
    }

    /// The handle of the layer this service came from.
    pub fn handle(&self) -> RetryHandle {
        RetryHandle::new(self.local.core.clone())
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

impl<S, P, Req> Service<Req> for Retry<S, P>
where
    P: Policy<Req, <S as Service<<P as Replay<Req>>::Request>>::Response> + Clone,
    S: Service<<P as Replay<Req>>::Request> + Clone,
    <S as Service<<P as Replay<Req>>::Request>>::Error: Into<BoxError>,
{
    type Response = <S as Service<<P as Replay<Req>>::Request>>::Response;
    type Error = BoxError;
    type Future = ResponseFuture<P, S, Req>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        self.local.count();
        let (request, stash) = self.policy.prepare(req);
        // A clone (readied again before use) makes the retries; the readied service makes the
        // call, last, so that its future goes straight into the response future.
        let service = stash.as_ref().map(|_| self.inner.clone());
        let link = match self.local.fast {
            Some(core) => Link::first(core),
            None => self.local.link(),
        };
        let policy = self.policy.clone();
        ResponseFuture::new(service, policy, stash, link, self.inner.call(request))
    }
}
