use super::future::{Link, ResponseFuture, Retryable};
use super::handle::RetryHandle;
use super::policy::{Policy, Replay};
use super::shared::{Core, CoreRef, PLACEHOLDER};
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
    /// The core a call on the success path links to: the layer's own when it is static and
    /// has no timer (`fast`); for any other layer a placeholder that no call links to, since
    /// `left` then stays at 1 and every call takes the out-of-line path.
    first: &'static Core,
    fast: bool,
    /// Calls before the next one takes the out-of-line path. On the success path it counts
    /// down from `BATCH`, so that counting a call and choosing its link are one decrement
    /// and one test; the out-of-line path publishes the batch.
    left: u32,
    /// Calls counted and not yet published, for a layer off the success path.
    pending: u32,
}

impl LocalCount {
    fn new(core: CoreRef) -> Self {
        let (first, fast) = match core {
            CoreRef::Static(c) if !c.config.timed => (c, true),
            _ => (&PLACEHOLDER, false),
        };
        Self {
            core,
            first,
            fast,
            left: if fast { BATCH } else { 1 },
            pending: 0,
        }
    }

    /// Counts a call and gives the link of its response future to the shared state.
    #[inline]
    fn count<R>(&mut self) -> Link<R> {
        self.left -= 1;
        if self.left == 0 {
            return self.next();
        }
        Link::first(self.first)
    }

    /// A call that ends a batch, or any call of a layer off the success path (a timer or a
    /// reference-counted core).
    #[inline(never)]
    fn next<R>(&mut self) -> Link<R> {
        if self.fast {
            self.left = BATCH;
            self.publish(BATCH);
            return Link::first(self.first);
        }
        self.left = 1;
        self.pending += 1;
        if self.pending == BATCH {
            self.pending = 0;
            self.publish(BATCH);
        }
        Link::new(self.core.clone())
    }

    /// Publishes the calls counted and not yet published.
    fn flush(&mut self) {
        let n = if self.fast {
            BATCH - std::mem::replace(&mut self.left, BATCH)
        } else {
            std::mem::take(&mut self.pending)
        };
        self.publish(n);
    }

    fn publish(&self, n: u32) {
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
        let link = self.local.count();
        let (request, stash) = self.policy.prepare(req);
        // A clone (readied again before use) makes the retries; the readied service makes the
        // call, last, so that its future goes straight into the response future.
        let retry = stash.map(|stash| Retryable {
            service: self.inner.clone(),
            stash,
        });
        let policy = self.policy.clone();
        ResponseFuture::new(retry, policy, link, self.inner.call(request))
    }
}
