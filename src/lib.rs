//! Composable [Tower] layers that keep a service standing when what it calls is failing, slow
//! or flooded: circuit breaker, bulkhead, retry with backoff and jitter, rate limit and
//! correlation id.
//!
//! Every layer works on any [`tower::Service`], knows HTTP when the `http` feature is on, and
//! costs nanoseconds on the happy path: no allocation, no lock and no boxed future per call.
//! Every service one layer value builds, and every clone of them, shares that layer's state, so
//! an axum `Router` that calls `layer()` per route still has one breaker, one bulkhead, one limit.
//!
//! [Tower]: https://docs.rs/tower
//!
//! # Example
//!
//! A client-side stack around any service: retry outside the breaker, so every attempt is
//! counted and an open circuit is not retried blindly; a bulkhead inside, so one slow
//! dependency cannot take every task.
//!
//! ```
//! use std::time::Duration;
//! use seawall::bulkhead::BulkheadLayer;
//! use seawall::circuit_breaker::{CircuitBreakerLayer, State};
//! use seawall::error::CircuitOpen;
//! use seawall::retry::RetryLayer;
//! use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! # tokio::time::pause();
//! let breaker = CircuitBreakerLayer::consecutive_failures(3).build()?;
//! let handle = breaker.handle();
//! let client = ServiceBuilder::new()
//!     .layer(RetryLayer::builder().max_attempts(2).deadline(Duration::from_secs(1)).build()?)
//!     .layer(breaker)
//!     .layer(BulkheadLayer::new(16)?)
//!     .service(service_fn(|_: ()| async { Err::<(), BoxError>("connection refused".into()) }));
//!
//! // Two calls, two attempts each: the third failed attempt trips the breaker...
//! assert!(client.clone().oneshot(()).await.is_err());
//! assert!(client.clone().oneshot(()).await.is_err());
//! assert_eq!(handle.state(), State::Open);
//! // ...and from then on calls are refused at once, with the time until a probe is allowed
//! // (5 s, more than the retry deadline allows, so retry does not wait for it).
//! let err = client.oneshot(()).await.unwrap_err();
//! assert!(err.downcast_ref::<CircuitOpen>().unwrap().retry_after().is_some());
//! # Ok(())
//! # }
//! ```
//!
//! # Feature flags
//!
//! | feature | default | what it turns on |
//! |---|---|---|
//! | `circuit-breaker` | yes | [`circuit_breaker`] |
//! | `bulkhead` | yes | [`bulkhead`] |
//! | `retry` | yes | [`retry`] |
//! | `rate-limit` | yes | [`rate_limit`] |
//! | `correlation-id` | yes | [`correlation`] (implies `http`) |
//! | `http` | yes | HTTP classification, rejections as responses ([`http`]), `Retry-After`, request body replay for retries, rate-limit headers |
//! | `metrics` | no | [`metrics`](mod@metrics): the [`events`] as counters, a gauge and a histogram of the `metrics` facade |
//! | `chaos` | no | [`chaos`]: fault injection (latency, errors, HTTP statuses, hangs, dropped connections), seeded and switchable at run time, to test a stack |
//! | `serde` | no | [`config`]: every layer's settings and the two stacks' as serde structs, for config files; durations in human form (`"250ms"`, `"1m 30s"`) |
//!
//! [`classify`], [`error`], [`events`], [`fallback`] and [`health`] are always there.
//!
//! # Errors
//!
//! A layer's error type is [`tower::BoxError`]. Its own refusals are small structs in
//! [`error`] ([`CircuitOpen`](error::CircuitOpen), [`BulkheadFull`](error::BulkheadFull),
//! [`RateLimited`](error::RateLimited)), found with `downcast_ref` or
//! [`Rejection::find`](error::Rejection::find); errors of the inner service pass through
//! unchanged. With the `http` feature, [`http::RejectionResponseLayer`] turns them into
//! `503`/`429` responses instead, so an axum `Router` keeps `Error = Infallible`.
//!
//! # Order in a stack
//!
//! - Server (axum): correlation id, then the HTTP face ([`http::RejectionResponseLayer`]), then
//!   rate limit (per client), then bulkhead, then the handler. The correlation id sits outside
//!   the HTTP face so that `503` and `429` answers carry the id too.
//! - Client: correlation propagation, then retry, then circuit breaker, then bulkhead, then a
//!   timeout per attempt, then the client. Retry sits outside the breaker so that each attempt
//!   is counted, and an open circuit is not retried blindly.
#![cfg_attr(docsrs, feature(doc_cfg))]
// A loom build (src/sync.rs) compiles the models alone: items only the other tests use look dead.
#![cfg_attr(seawall_loom, allow(dead_code, unused_imports))]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub
)]
#![forbid(unsafe_code)]

mod builder;
pub mod classify;
pub mod error;
pub mod events;
pub mod fallback;
pub mod health;
#[cfg(any(feature = "bulkhead", feature = "retry"))]
mod leak;
#[cfg(all(test, seawall_loom))]
mod loom_models;
#[cfg(any(feature = "circuit-breaker", feature = "retry", feature = "chaos"))]
mod splitmix;
#[cfg(any(
    feature = "circuit-breaker",
    feature = "bulkhead",
    feature = "rate-limit"
))]
mod stripe;
#[cfg(any(
    feature = "circuit-breaker",
    feature = "bulkhead",
    feature = "rate-limit",
    feature = "retry"
))]
mod sync;

#[cfg(feature = "http")]
pub mod http;

#[cfg(feature = "circuit-breaker")]
pub mod circuit_breaker;

#[cfg(feature = "bulkhead")]
pub mod bulkhead;

#[cfg(feature = "retry")]
pub mod retry;

#[cfg(feature = "rate-limit")]
pub mod rate_limit;

#[cfg(feature = "correlation-id")]
pub mod correlation;

#[cfg(feature = "chaos")]
pub mod chaos;

#[cfg(feature = "serde")]
pub mod config;
#[cfg(feature = "metrics")]
pub mod metrics;

#[cfg(all(
    feature = "bulkhead",
    feature = "correlation-id",
    any(
        all(feature = "retry", feature = "circuit-breaker"),
        feature = "rate-limit"
    )
))]
pub mod stack;

pub use crate::builder::ServiceBuilderExt;
pub use crate::classify::{Classify, Outcome};
pub use crate::error::{ConfigError, Rejection};

#[cfg(feature = "circuit-breaker")]
pub use crate::circuit_breaker::{CircuitBreaker, CircuitBreakerLayer};

#[cfg(feature = "bulkhead")]
pub use crate::bulkhead::{Bulkhead, BulkheadLayer};

#[cfg(feature = "retry")]
pub use crate::retry::{Jitter, Retry, RetryBudget, RetryLayer};

#[cfg(feature = "rate-limit")]
pub use crate::rate_limit::{RateLimit, RateLimitLayer};

#[cfg(feature = "chaos")]
pub use crate::chaos::{Chaos, ChaosLayer};

#[cfg(feature = "correlation-id")]
pub use crate::correlation::{CorrelationId, CorrelationIdLayer, PropagateCorrelationIdLayer};
