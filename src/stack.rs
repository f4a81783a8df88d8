//! Two ready-made stacks in the order that works: [`ClientStack`] around an outbound HTTP
//! client, [`ServerStack`] in front of an HTTP handler.
//!
//! Each is one [`tower::Layer`] holding one value of every layer it stacks, with sensible
//! defaults, each replaceable on its own (`with_retry`, `with_circuit_breaker`, ...). A stack
//! is `Clone`, and its clones, and every service it builds, share the state of its layers
//! (one breaker, one bulkhead, one limit), as every seawall layer does. The layers' handles are
//! reachable from the stack (`breaker()`, `bulkhead()`, `retry()`, `rate_limit()`), and
//! `register_health` adds them to a [`HealthRegistry`].
//!
//! # Order, and why
//!
//! The client stack, outermost first:
//!
//! 1. **correlation propagation**: the id is put on the request once, before the retry layer
//!    clones it, so every attempt carries the same id.
//! 2. **retry** (HTTP policy: idempotent methods; connection errors, timeouts, `502`, `503`,
//!    `504`, `429`; `Retry-After` honoured; a retry budget): outside the breaker, so **each
//!    attempt is counted by the breaker**, and an open circuit's
//!    [`CircuitOpen`](crate::error::CircuitOpen) reaches the retry layer, which retries it only
//!    when its `retry_after` fits, instead of hammering a dependency that is down. The budget
//!    caps retries to a fraction of calls, so an outage does not multiply the load.
//! 3. **circuit breaker** ([`ServerErrorsAsFailures`]): errors, timeouts and `5xx` count as
//!    failures; `4xx` do not.
//! 4. **bulkhead**: inside the breaker, so calls an open breaker rejects take no permit;
//!    outside the timeout, so an attempt that times out gives its permit back.
//! 5. **per-attempt timeout** ([`tower::timeout::Timeout`]): innermost, so a slow attempt is a
//!    failure the breaker counts and the retry layer may retry, without cancelling the whole
//!    call.
//!
//! The server stack, outermost first:
//!
//! 1. **correlation id**: outside everything, so every response, the `503`s and `429`s made
//!    below included, carries the id, and every event below is in its span.
//! 2. **HTTP face** ([`RejectionResponseLayer`]): turns rejections into `503`/`429` responses
//!    with `Retry-After`, so the stack's error is `Infallible` and axum needs no
//!    `HandleErrorLayer`.
//! 3. **rate limit**: before the bulkhead, so a flood from one client is refused cheaply
//!    without taking the permits that other clients' requests need.
//! 4. **bulkhead**: caps the requests in flight in the handler.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use axum::{routing::get, Router};
//! use seawall::health::HealthRegistry;
//! use seawall::rate_limit::RateLimitLayer;
//! use seawall::stack::{ClientStack, ServerStack};
//! use tower::{service_fn, BoxError, Layer};
//!
//! # fn main() -> Result<(), BoxError> {
//! let health = HealthRegistry::new();
//!
//! // Around the client a handler calls (hyper-util's legacy `Client` in real code).
//! let client_stack = ClientStack::new().with_attempt_timeout(Duration::from_secs(2))?;
//! client_stack.register_health(&health, "backend");
//! let client = client_stack.layer(service_fn(|_: http::Request<String>| async {
//!     Ok::<_, BoxError>(http::Response::new(String::new()))
//! }));
//! # let _ = client;
//!
//! // In front of the handlers.
//! let server_stack = ServerStack::new().with_rate_limit(
//!     RateLimitLayer::builder().rate(100, Duration::from_secs(1)).build()?,
//! );
//! server_stack.register_health(&health, "server");
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(server_stack.clone())
//!     .route_service("/health", health.service());
//! # let _ = app;
//! assert_eq!(health.report().components().len(), 4);
//! # Ok(()) }
//! ```

#[cfg(all(feature = "retry", feature = "circuit-breaker"))]
pub use self::client::ClientStack;
#[cfg(all(feature = "retry", feature = "circuit-breaker", feature = "serde"))]
pub(crate) use self::client::{client_budget, CLIENT_THROTTLE_K, CLIENT_THROTTLE_MINIMUM_CALLS};
#[cfg(feature = "rate-limit")]
pub use self::server::ServerStack;
#[cfg(all(feature = "rate-limit", feature = "serde"))]
pub(crate) use self::server::DEFAULT_RATE;

#[cfg(doc)]
use crate::classify::ServerErrorsAsFailures;
#[cfg(doc)]
use crate::health::HealthRegistry;
#[cfg(doc)]
use crate::http::RejectionResponseLayer;

#[cfg(all(feature = "retry", feature = "circuit-breaker"))]
mod client {
    use crate::bulkhead::{Bulkhead, BulkheadHandle, BulkheadLayer};
    use crate::circuit_breaker::{CircuitBreaker, CircuitBreakerHandle, CircuitBreakerLayer};
    use crate::classify::ServerErrorsAsFailures;
    use crate::correlation::{PropagateCorrelationId, PropagateCorrelationIdLayer};
    use crate::error::{check, ConfigError};
    use crate::health::HealthRegistry;
    use crate::retry::http::{HttpPolicy, HttpRetryable};
    use crate::retry::{Retry, RetryBudget, RetryHandle, RetryLayer};
    use std::fmt;
    use std::time::Duration;
    use tower::timeout::Timeout;
    use tower_layer::Layer;

    /// The default per-attempt timeout: 15 s, Envoy's default route timeout.
    pub(super) const DEFAULT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);

    /// The client stack's retry budget: Finagle's 20% and 10 a second, over 3 s (see the
    /// defaults table).
    pub(crate) fn client_budget() -> RetryBudget {
        RetryBudget::builder()
            .ttl(Duration::from_secs(3))
            .build()
            .expect("the stack's budget settings are valid")
    }

    /// The client stack's breaker throttles with Google SRE's `K = 2`...
    pub(crate) const CLIENT_THROTTLE_K: f64 = 2.0;
    /// ...once its 2 s window holds 20 calls (a client of 10 calls a second is covered).
    pub(crate) const CLIENT_THROTTLE_MINIMUM_CALLS: u32 = 20;

    /// Correlation propagation, then retry, then circuit breaker, then bulkhead, then a
    /// per-attempt timeout, around an HTTP client. See [the module docs](super) for why.
    ///
    /// # Defaults
    ///
    /// | layer | default | anchor |
    /// |---|---|---|
    /// | correlation | [`PropagateCorrelationIdLayer::new`]: `x-correlation-id` | the server side's header |
    /// | retry | [`RetryLayer::builder`]`().http()`: 3 attempts, full jitter from 100 ms, a [`RetryBudget`] of 20% of calls and 10 a second over the last 3 s, `Retry-After` honoured up to 60 s | AWS Architecture Blog's full jitter; Finagle's retry budget, with a 3 s memory instead of 10 s: measured in `examples/scenario.rs`, a 10 s memory carries one phase's credit or debt into the next (1.39 backend calls per call under 50% 503s, then 86% goodput under 20% 503s; with 3 s, 1.24 and 98%) |
    /// | circuit breaker | [`CircuitBreakerLayer::builder`] with [`ServerErrorsAsFailures`] and [adaptive throttling](crate::circuit_breaker::Builder::adaptive_throttling) (`k = 2`, the last 2 s, from 20 calls): a dependency that answers half its calls keeps all its traffic, one that answers none gets a trickle, and traffic is back within about 2 s of a recovery. Measured against the classic breaker in `examples/scenario.rs` (README, "Under failure") | Google SRE book, "Handling Overload" |
    /// | bulkhead | [`BulkheadLayer::builder`]: 25 in flight, reject at once | Resilience4j `maxConcurrentCalls` |
    /// | per-attempt timeout | 15 s | Envoy's default route timeout |
    ///
    /// An open circuit is not waited for: with no deadline set, the retry layer retries a
    /// `CircuitOpen` only when the circuit half-opens within the backoff delay it would wait
    /// anyway, so calls fail fast while the breaker is open.
    ///
    /// # Clone
    /// Clones share every layer's state (one breaker, one bulkhead, one budget).
    #[derive(Clone)]
    pub struct ClientStack<P = HttpPolicy<HttpRetryable>, C = ServerErrorsAsFailures> {
        propagate: PropagateCorrelationIdLayer,
        retry: RetryLayer<P>,
        breaker: CircuitBreakerLayer<C>,
        bulkhead: BulkheadLayer,
        attempt_timeout: Duration,
    }

    impl<P: fmt::Debug, C: fmt::Debug> fmt::Debug for ClientStack<P, C> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("ClientStack")
                .field("propagate", &self.propagate)
                .field("retry", &self.retry)
                .field("breaker", &self.breaker)
                .field("bulkhead", &self.bulkhead)
                .field("attempt_timeout", &self.attempt_timeout)
                .finish()
        }
    }

    impl ClientStack {
        /// A stack with the defaults in the table above.
        ///
        /// # Panics
        /// Never: the defaults are valid (checked by the tests).
        pub fn new() -> Self {
            let retry = RetryLayer::builder()
                .http()
                .budget(client_budget())
                .build()
                .expect("the default retry settings are valid");
            let breaker = CircuitBreakerLayer::builder()
                .classifier(ServerErrorsAsFailures)
                .adaptive_throttling(CLIENT_THROTTLE_K)
                .minimum_calls(CLIENT_THROTTLE_MINIMUM_CALLS)
                .build()
                .expect("the default breaker settings are valid");
            let bulkhead = BulkheadLayer::builder()
                .build()
                .expect("the default bulkhead settings are valid");
            Self {
                propagate: PropagateCorrelationIdLayer::new(),
                retry,
                breaker,
                bulkhead,
                attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            }
        }
    }

    impl Default for ClientStack {
        fn default() -> Self {
            Self::new()
        }
    }

    impl<P, C> ClientStack<P, C> {
        /// A stack of these layers (for the `serde` configs, which build each one).
        #[cfg(feature = "serde")]
        pub(crate) fn from_layers(
            propagate: PropagateCorrelationIdLayer,
            retry: RetryLayer<P>,
            breaker: CircuitBreakerLayer<C>,
            bulkhead: BulkheadLayer,
        ) -> Self {
            Self {
                propagate,
                retry,
                breaker,
                bulkhead,
                attempt_timeout: DEFAULT_ATTEMPT_TIMEOUT,
            }
        }

        /// Replaces the correlation propagation layer (say, another header name).
        pub fn with_propagation(mut self, layer: PropagateCorrelationIdLayer) -> Self {
            self.propagate = layer;
            self
        }

        /// Replaces the retry layer.
        pub fn with_retry<P2>(self, layer: RetryLayer<P2>) -> ClientStack<P2, C> {
            ClientStack {
                propagate: self.propagate,
                retry: layer,
                breaker: self.breaker,
                bulkhead: self.bulkhead,
                attempt_timeout: self.attempt_timeout,
            }
        }

        /// Replaces the circuit breaker.
        pub fn with_circuit_breaker<C2>(
            self,
            layer: CircuitBreakerLayer<C2>,
        ) -> ClientStack<P, C2> {
            ClientStack {
                propagate: self.propagate,
                retry: self.retry,
                breaker: layer,
                bulkhead: self.bulkhead,
                attempt_timeout: self.attempt_timeout,
            }
        }

        /// Replaces the bulkhead.
        pub fn with_bulkhead(mut self, layer: BulkheadLayer) -> Self {
            self.bulkhead = layer;
            self
        }

        /// Sets the per-attempt timeout. A timed-out attempt fails with tower's
        /// `Elapsed`, which the breaker counts as a failure and the HTTP retry policy retries.
        ///
        /// # Errors
        /// A [`ConfigError`] (layer `stack`, field `attempt_timeout`) when `timeout` is zero.
        pub fn with_attempt_timeout(mut self, timeout: Duration) -> Result<Self, ConfigError> {
            check::positive("stack", "attempt_timeout", timeout)?;
            self.attempt_timeout = timeout;
            Ok(self)
        }

        /// The retry layer's handle: metrics, budget.
        pub fn retry(&self) -> RetryHandle {
            self.retry.handle()
        }

        /// The circuit breaker's handle: state, metrics, force open/closed, events.
        pub fn breaker(&self) -> CircuitBreakerHandle {
            self.breaker.handle()
        }

        /// The bulkhead's handle: figures, resizing.
        pub fn bulkhead(&self) -> BulkheadHandle {
            self.bulkhead.handle()
        }

        /// The per-attempt timeout.
        pub fn attempt_timeout(&self) -> Duration {
            self.attempt_timeout
        }

        /// Registers the breaker as `{prefix}.circuit_breaker` and the bulkhead as
        /// `{prefix}.bulkhead` in `registry`.
        pub fn register_health(&self, registry: &HealthRegistry, prefix: &str) {
            registry.register(format!("{prefix}.circuit_breaker"), self.breaker());
            registry.register(format!("{prefix}.bulkhead"), self.bulkhead());
        }
    }

    impl<S, P: Clone, C: Clone> Layer<S> for ClientStack<P, C> {
        type Service = PropagateCorrelationId<Retry<CircuitBreaker<Bulkhead<Timeout<S>>, C>, P>>;

        fn layer(&self, inner: S) -> Self::Service {
            let svc = Timeout::new(inner, self.attempt_timeout);
            let svc = self.bulkhead.layer(svc);
            let svc = self.breaker.layer(svc);
            let svc = self.retry.layer(svc);
            self.propagate.layer(svc)
        }
    }
}

#[cfg(feature = "rate-limit")]
mod server {
    use crate::bulkhead::{Bulkhead, BulkheadHandle, BulkheadLayer};
    use crate::correlation::{
        CorrelationIdHandle, CorrelationIdLayer, MakeUuidV4, SetCorrelationId,
    };
    use crate::health::HealthRegistry;
    use crate::http::{RejectionResponse, RejectionResponseLayer};
    use crate::rate_limit::{Global, KeyExtractor, RateLimit, RateLimitHandle, RateLimitLayer};
    use std::fmt;
    use std::time::Duration;
    use tower_layer::Layer;

    /// The default rate limit of a server stack: 1,000 requests a second.
    pub(crate) const DEFAULT_RATE: (u32, Duration) = (1_000, Duration::from_secs(1));

    /// Correlation id, then the HTTP face, then rate limit, then bulkhead, in front of a
    /// handler. See [the module docs](super) for why.
    ///
    /// # Defaults
    ///
    /// | layer | default | anchor |
    /// |---|---|---|
    /// | correlation id | [`CorrelationIdLayer::new`]: `x-correlation-id`, UUID v4 | see [`crate::correlation`] |
    /// | HTTP face | [`RejectionResponseLayer`]: `503`/`429` with `Retry-After` | RFC 9110, RFC 6585 |
    /// | rate limit | 1,000 requests a second for the whole server, burst 1,000 (no standard: **set yours** with [`with_rate_limit`](Self::with_rate_limit), per client with a key) | governor's and tower's burst = rate |
    /// | bulkhead | [`BulkheadLayer::builder`]: 25 in flight, reject at once | Resilience4j `maxConcurrentCalls` |
    ///
    /// # Clone
    /// Clones share every layer's state (one limit, one bulkhead).
    #[derive(Clone)]
    pub struct ServerStack<K: KeyExtractor = Global, M = MakeUuidV4> {
        correlation: CorrelationIdLayer<M>,
        rate_limit: RateLimitLayer<K>,
        bulkhead: BulkheadLayer,
    }

    impl<K: KeyExtractor + fmt::Debug, M: fmt::Debug> fmt::Debug for ServerStack<K, M> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("ServerStack")
                .field("correlation", &self.correlation)
                .field("rate_limit", &self.rate_limit)
                .field("bulkhead", &self.bulkhead)
                .finish()
        }
    }

    impl ServerStack {
        /// A stack with the defaults in the table above.
        ///
        /// # Panics
        /// Never: the defaults are valid (checked by the tests).
        pub fn new() -> Self {
            Self {
                correlation: CorrelationIdLayer::new(),
                rate_limit: RateLimitLayer::builder()
                    .rate(DEFAULT_RATE.0, DEFAULT_RATE.1)
                    .build()
                    .expect("the default rate limit is valid"),
                bulkhead: BulkheadLayer::builder()
                    .build()
                    .expect("the default bulkhead settings are valid"),
            }
        }
    }

    impl Default for ServerStack {
        fn default() -> Self {
            Self::new()
        }
    }

    impl<K: KeyExtractor, M> ServerStack<K, M> {
        /// A stack of these layers (for the `serde` configs, which build each one).
        #[cfg(feature = "serde")]
        pub(crate) fn from_layers(
            correlation: CorrelationIdLayer<M>,
            rate_limit: RateLimitLayer<K>,
            bulkhead: BulkheadLayer,
        ) -> Self {
            Self {
                correlation,
                rate_limit,
                bulkhead,
            }
        }

        /// Replaces the correlation id layer.
        pub fn with_correlation_id<M2>(self, layer: CorrelationIdLayer<M2>) -> ServerStack<K, M2> {
            ServerStack {
                correlation: layer,
                rate_limit: self.rate_limit,
                bulkhead: self.bulkhead,
            }
        }

        /// Replaces the rate limit (per client: build it with a
        /// [`key`](crate::rate_limit::RateLimitBuilder::key)).
        pub fn with_rate_limit<K2: KeyExtractor>(
            self,
            layer: RateLimitLayer<K2>,
        ) -> ServerStack<K2, M> {
            ServerStack {
                correlation: self.correlation,
                rate_limit: layer,
                bulkhead: self.bulkhead,
            }
        }

        /// Replaces the bulkhead.
        pub fn with_bulkhead(mut self, layer: BulkheadLayer) -> Self {
            self.bulkhead = layer;
            self
        }

        /// The correlation id layer's handle.
        pub fn correlation(&self) -> CorrelationIdHandle {
            self.correlation.handle()
        }

        /// The rate limit's handle: figures, changing the rate.
        pub fn rate_limit(&self) -> RateLimitHandle<K> {
            self.rate_limit.handle()
        }

        /// The bulkhead's handle: figures, resizing.
        pub fn bulkhead(&self) -> BulkheadHandle {
            self.bulkhead.handle()
        }

        /// Registers the rate limit as `{prefix}.rate_limit` and the bulkhead as
        /// `{prefix}.bulkhead` in `registry`.
        pub fn register_health(&self, registry: &HealthRegistry, prefix: &str)
        where
            K: Send + Sync + 'static,
            RateLimitHandle<K>: Send + Sync,
        {
            registry.register(format!("{prefix}.rate_limit"), self.rate_limit());
            registry.register(format!("{prefix}.bulkhead"), self.bulkhead());
        }
    }

    impl<S, K: KeyExtractor, M: Clone> Layer<S> for ServerStack<K, M> {
        type Service = SetCorrelationId<RejectionResponse<RateLimit<Bulkhead<S>, K>>, M>;

        fn layer(&self, inner: S) -> Self::Service {
            let svc = self.bulkhead.layer(inner);
            let svc = self.rate_limit.layer(svc);
            let svc = RejectionResponseLayer::new().layer(svc);
            self.correlation.layer(svc)
        }
    }
}

#[cfg(all(
    test,
    feature = "retry",
    feature = "circuit-breaker",
    feature = "rate-limit"
))]
mod tests {
    use super::*;
    use crate::circuit_breaker::State;

    #[test]
    fn defaults_build_and_clones_share_state() {
        let client = ClientStack::new();
        let clone = client.clone();
        client.breaker().force_open();
        assert_eq!(clone.breaker().state(), State::ForcedOpen);
        assert_eq!(client.bulkhead().capacity(), 25);
        assert_eq!(client.retry().max_attempts(), 3);

        let err = ClientStack::new()
            .with_attempt_timeout(std::time::Duration::ZERO)
            .unwrap_err();
        assert_eq!(err.field(), "attempt_timeout");

        let server = ServerStack::new();
        assert_eq!(server.clone().rate_limit().rate().0, 1_000);
        assert_eq!(server.bulkhead().capacity(), 25);
    }
}
