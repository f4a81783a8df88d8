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
//! # Feature flags
//!
//! | feature | default | what it turns on |
//! |---|---|---|
//! | `circuit-breaker` | yes | [`circuit_breaker`] |
//! | `bulkhead` | yes | [`bulkhead`] |
//! | `retry` | yes | [`retry`] |
//! | `rate-limit` | yes | [`rate_limit`] |
//! | `correlation-id` | yes | [`correlation`] (implies `http`) |
//! | `http` | yes | HTTP classification, rejections as responses ([`http`]), `Retry-After` |
//!
//! # Errors
//!
//! A layer's error type is [`tower::BoxError`]. Its own refusals are small structs in
//! [`error`] ([`CircuitOpen`](error::CircuitOpen), [`BulkheadFull`](error::BulkheadFull),
//! [`RateLimited`](error::RateLimited)), found with `downcast_ref` or
//! [`Rejection::find`](error::Rejection::find). With the `http` feature,
//! [`http::RejectionResponseLayer`] turns them into `503`/`429` responses instead.
//!
//! # Order in a stack
//!
//! - Server (axum): correlation id, then rate limit (per client), then bulkhead, then the
//!   handler, with the HTTP face outermost.
//! - Client: correlation propagation, then retry, then circuit breaker, then bulkhead, then a
//!   timeout per attempt, then the client. Retry sits outside the breaker so that each attempt
//!   is counted, and an open circuit is not retried blindly.
#![cfg_attr(docsrs, feature(doc_auto_cfg))]
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
pub mod fallback;
pub mod health;

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
