//! The layer, the shared state it hands to every service, and the service.

use super::config::{Builder, Config};
use super::future::{Guard, ResponseFuture};
use super::handle::CircuitBreakerHandle;
use super::state::Core;
use crate::classify::{Classify, ErrorsAsFailures};
use crate::stripe::{stripe_count, thread_number};
use std::cell::Cell;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::BoxError;
use tower_layer::Layer;
use tower_service::Service;

/// A reference to the breaker kept per stripe, so that a response future holds one without
/// every call on every thread writing the same reference count.
#[repr(align(128))]
#[derive(Debug)]
pub(crate) struct Token {
    pub(crate) core: Arc<Core>,
}

/// What a thread keeps: the token of the last call that ended on it.
struct Local {
    spare: Cell<Option<Arc<Token>>>,
}

thread_local! {
    static LOCAL: Local = const {
        Local {
            spare: Cell::new(None),
        }
    };
}

/// A token for a call on the calling thread's stripe of `shared`. Reuses the token the
/// last finished call on this thread gave back, which saves the two locked reference-count
/// updates of a clone and a drop per call; otherwise (the first call on a thread, a spare of
/// another breaker) clones the stripe's token, out of line.
#[inline(always)]
fn take_token(shared: &Shared) -> Arc<Token> {
    let shard = thread_number() & shared.mask;
    let spare = LOCAL.try_with(|local| local.spare.take()).ok().flatten();
    if let Some(spare) = spare {
        if Arc::ptr_eq(&spare, &shared.tokens[shard]) {
            return spare;
        }
        return take_token_slow(shared, shard, Some(spare));
    }
    take_token_slow(shared, shard, None)
}

/// [`take_token`] without a matching spare: gives back a spare of another breaker and clones
/// this breaker's token.
#[inline(never)]
fn take_token_slow(shared: &Shared, shard: usize, spare: Option<Arc<Token>>) -> Arc<Token> {
    if let Some(spare) = spare {
        give_back(spare);
    }
    Arc::clone(&shared.tokens[shard])
}

/// Keeps a finished call's token for the next call on this thread.
///
/// The spare keeps its breaker's state alive until the thread ends or a call of another
/// breaker replaces it. Inline: the slot is normally empty (the call took its token from it);
/// dropping a token it held is out of line.
#[inline(always)]
pub(crate) fn give_back(token: Arc<Token>) {
    let _ = LOCAL.try_with(|local| {
        if let Some(old) = local.spare.replace(Some(token)) {
            drop_token(old);
        }
    });
}

#[cold]
#[inline(never)]
fn drop_token(token: Arc<Token>) {
    drop(token);
}

/// What every service of one layer value shares.
#[derive(Debug)]
pub(crate) struct Shared {
    core: Arc<Core>,
    tokens: Box<[Arc<Token>]>,
    mask: usize,
}

impl Shared {
    fn new(config: Config) -> Self {
        let stripes = stripe_count();
        let core = Arc::new(Core::new(config, stripes));
        core.set_self();
        let tokens = (0..stripes)
            .map(|_| {
                Arc::new(Token {
                    core: Arc::clone(&core),
                })
            })
            .collect();
        Self {
            core,
            tokens,
            mask: stripes - 1,
        }
    }
}

/// Wraps services in a [`CircuitBreaker`]; all of them share one breaker.
///
/// Build one with [`CircuitBreakerLayer::builder`] (or a preset), and get its
/// [`handle`](Self::handle) for runtime control.
///
/// # Clone
/// Every clone of the layer, every service it builds and every clone of those share the same
/// breaker. A second, independent breaker is a second layer value.
pub struct CircuitBreakerLayer<C = ErrorsAsFailures> {
    shared: Arc<Shared>,
    classifier: C,
}

impl<C: Clone> Clone for CircuitBreakerLayer<C> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
            classifier: self.classifier.clone(),
        }
    }
}

impl<C: fmt::Debug> fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("breaker", &self.shared.core)
            .field("classifier", &self.classifier)
            .finish()
    }
}

impl CircuitBreakerLayer {
    /// A builder with the defaults: trip when at least half of the last 100 calls failed (once
    /// 100 calls were seen; Resilience4j), stay open 5 s (Polly), doubling on repeated trips up
    /// to 60 s, with up to 20 % jitter, then judge 10 probes. See [`Builder`] for every setting
    /// and its anchor.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A layer with the defaults of [`builder`](Self::builder).
    pub fn new() -> Self {
        Self::builder().build().expect("the defaults are valid")
    }

    /// Preset: trip after `n` failures in a row, stay open 5 s (exactly: no jitter), close
    /// after one successful probe: Polly's break duration (5 s) and single probe, with a
    /// consecutive-failures rule as in Finagle and Hystrix-era clients. Repeated trips grow the
    /// open duration as the builder's default does. Adjust further before `build()`.
    pub fn consecutive_failures(n: u32) -> Builder {
        Builder::default()
            .consecutive_failures(n)
            .open_duration(Duration::from_secs(5))
            .jitter(0.0)
            .half_open_probes(1)
    }
}

impl Default for CircuitBreakerLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> CircuitBreakerLayer<C> {
    pub(crate) fn from_config(config: Config, classifier: C) -> Self {
        Self {
            shared: Arc::new(Shared::new(config)),
            classifier,
        }
    }

    /// The handle to this layer's breaker: state, metrics, force open/closed, reset, disable,
    /// events.
    pub fn handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle::new(Arc::clone(&self.shared.core))
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker {
            inner,
            shared: Arc::clone(&self.shared),
            classifier: self.classifier.clone(),
            refusing: false,
        }
    }
}

/// A service guarded by a circuit breaker. Built by [`CircuitBreakerLayer`].
///
/// While closed, calls go through and their outcomes (as the classifier `C` sees them) count
/// towards tripping. While open, calls are rejected at once with
/// [`CircuitOpen`](crate::error::CircuitOpen). While half-open, a fixed number of probes go
/// through.
///
/// # Readiness
/// - **CLOSED, HALF_OPEN, DISABLED**: `poll_ready` is the inner service's; the breaker
///   decides in `call`, so a call rejected there (no probe slot left) leaves the inner service
///   ready for the next one.
/// - **OPEN** (time left) **and FORCED_OPEN**: `poll_ready` answers ready at once without
///   asking the inner service, and the `call` that follows is rejected with
///   [`CircuitOpen`](crate::error::CircuitOpen) without touching it (as tower's `LoadShed`
///   does), so a caller in front of an exhausted pool or a full `Buffer` fails fast instead of
///   waiting for it. That call is rejected even if the breaker half-opened in between.
///
/// # Errors
/// [`tower::BoxError`]: the inner service's errors unchanged (boxed), or a
/// [`CircuitOpen`](crate::error::CircuitOpen).
///
/// # Clone
/// Clones share the breaker.
pub struct CircuitBreaker<S, C = ErrorsAsFailures> {
    inner: S,
    shared: Arc<Shared>,
    classifier: C,
    /// `poll_ready` answered for an open breaker without asking `inner`: the next `call` is
    /// rejected without touching it. Never copied by `Clone`.
    refusing: bool,
}

impl<S: Clone, C: Clone> Clone for CircuitBreaker<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            classifier: self.classifier.clone(),
            refusing: false,
        }
    }
}

impl<S: fmt::Debug, C: fmt::Debug> fmt::Debug for CircuitBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("breaker", &self.shared.core)
            .field("classifier", &self.classifier)
            .finish()
    }
}

impl<S, C> CircuitBreaker<S, C> {
    /// Wraps `inner` in the breaker of `layer` (the same as `layer.layer(inner)`).
    pub fn new(inner: S, layer: &CircuitBreakerLayer<C>) -> Self
    where
        C: Clone,
    {
        layer.layer(inner)
    }

    /// The handle to this service's breaker.
    pub fn handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle::new(Arc::clone(&self.shared.core))
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

impl<S, C, Req> Service<Req> for CircuitBreaker<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Open: ready at once, and the call is rejected, so that a caller in front of an
        // exhausted pool or a full buffer gets `CircuitOpen` instead of waiting on it.
        if self.shared.core.rejects_now() {
            self.refusing = true;
            return Poll::Ready(Ok(()));
        }
        self.refusing = false;
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    // Always inlined, and the response future is built here: left out of line, `call` returns
    // the future through memory and the caller copies it (the bulkhead's lesson). Its slow
    // paths (a token to clone, a breaker not closed) are out of line and return small values.
    #[inline(always)]
    fn call(&mut self, req: Req) -> Self::Future {
        if self.refusing {
            // The inner service was not polled ready: it must not be called, even if the
            // breaker half-opened since.
            self.refusing = false;
            return ResponseFuture::rejected(self.shared.core.reject_now());
        }
        let token = take_token(&self.shared);
        match self.shared.core.admit() {
            Ok(admission) => ResponseFuture::called(
                self.inner.call(req),
                Guard::new(token, admission),
                self.classifier.clone(),
            ),
            Err(open) => {
                give_back(token);
                ResponseFuture::rejected(open)
            }
        }
    }
}
