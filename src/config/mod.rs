//! Every layer's settings, and the two stacks', as plain structs that serde reads from a config
//! document (feature `serde`).
//!
//! One struct per builder, with the builder's names: [`CircuitBreakerConfig`],
//! [`BulkheadConfig`], [`RetryConfig`] (with [`RetryBudgetConfig`]), [`RateLimitConfig`],
//! [`CorrelationIdConfig`] and [`PropagationConfig`], and the stacks made of them,
//! [`ClientStackConfig`] and [`ServerStackConfig`]. Each one exists when its layer's feature is
//! on. seawall reads no format itself: TOML, JSON, YAML, environment variables, anything with a
//! serde `Deserializer` will do.
//!
//! # Example
//!
//! A server stack from a TOML file (with the `toml` crate):
//!
//! ```
//! use seawall::config::ServerStackConfig;
//! use tower::{service_fn, BoxError, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let config: ServerStackConfig = toml::from_str(r#"
//!     [rate_limit]
//!     rate = 100
//!     per = "1s"
//!     burst = 1
//!     key = { header = "x-client-id" }
//!
//!     [bulkhead]
//!     max_concurrent = 64
//!     max_wait = "250ms"
//! "#)?;
//! let stack = config.build()?;
//!
//! let app = stack.layer(service_fn(|_: http::Request<String>| async {
//!     Ok::<_, BoxError>(http::Response::new(String::from("hello")))
//! }));
//! let request = || http::Request::builder().header("x-client-id", "a").body(String::new());
//! assert_eq!(app.clone().oneshot(request()?).await?.status(), 200);
//! assert_eq!(app.oneshot(request()?).await?.status(), 429); // burst 1: refused at once
//! # Ok(())
//! # }
//! ```
//!
//! # What a field left out means
//!
//! Every field is optional, and a field left out keeps the builder's default: the defaults,
//! and the anchors they follow, live in one place, the builders (their docs have the tables),
//! and a config struct only says what it changes. So `BulkheadConfig::default()` builds what
//! `BulkheadLayer::builder().build()` builds, and serialising a config writes back only the
//! fields that were set. In a stack, a section left out keeps that layer's default in the
//! stack (the client stack's retry budget, the server stack's rate).
//!
//! # Durations
//!
//! Durations are strings in human form: `"250ms"`, `"2s"`, `"1m 30s"`, `"1.5s"`, `"1h"`. A
//! term is a number and a unit (`ns`, `us` or `µs`, `ms`, `s`, `m`, `h`, `d`); terms add up,
//! with or without a space between them. `"0"` is zero. Nothing else is read: not a bare
//! number (`250` is neither seconds nor milliseconds until it says so), not a sign or an
//! exponent, not a space inside a number (`"25 0ms"`). Serialising writes the same form back
//! (`"1m 30s"`), which reads back to the same value.
//!
//! # Errors
//!
//! Two kinds, at two moments:
//!
//! - **Reading** (your format's error, from serde): an unknown field (``unknown field
//!   `max_concurent`, expected one of ...``), a value of the wrong type, or a malformed
//!   duration (``invalid duration "25 0ms" for `max_wait`: 25 has no unit; expected ...``).
//!   Formats such as TOML add the line and the key.
//! - **Building** (`build()`, a [`ConfigError`](crate::error::ConfigError)): a value the builder refuses, such as a
//!   failure rate of 1.5 or a capacity of 0, named by its path in the document:
//!   [`ConfigError::path`](crate::error::ConfigError::path) gives `bulkhead.max_concurrent` from a stack, or
//!   `retry.budget.ratio`. Nest a stack in your own config and name its section with
//!   [`ConfigError::within`](crate::error::ConfigError::within).
//!
//! ```
//! use seawall::config::ClientStackConfig;
//!
//! let config: ClientStackConfig = toml::from_str(r#"
//!     [circuit_breaker]
//!     failure_rate = 1.5
//! "#).unwrap();
//! let err = config.build().unwrap_err().within("backend");
//! assert_eq!(err.path(), "backend.circuit_breaker.failure_rate");
//! assert_eq!(
//!     err.to_string(),
//!     "invalid circuit_breaker config: `backend.circuit_breaker.failure_rate` = 1.5; \
//!      allowed: 0.0 < x <= 1.0"
//! );
//!
//! let err = toml::from_str::<ClientStackConfig>("[bulkhead]\nmax_wait = \"25 0ms\"")
//!     .unwrap_err()
//!     .to_string();
//! assert!(err.contains(r#"invalid duration "25 0ms" for `max_wait`"#), "{err}");
//! ```
//!
//! # What is not a setting
//!
//! Classifiers, rate-limit keys other than a header, id generators, retry hooks and event
//! buses are code. Each config has a `builder()` that returns the layer's builder with the
//! settings applied, to add them before `build()`:
//!
//! ```
//! use seawall::classify::ServerErrorsAsFailures;
//! use seawall::config::CircuitBreakerConfig;
//! use seawall::events::EventBus;
//!
//! let config: CircuitBreakerConfig = toml::from_str("consecutive_failures = 5").unwrap();
//! let bus = EventBus::new(64);
//! let breaker = config
//!     .builder()
//!     .unwrap()
//!     .classifier(ServerErrorsAsFailures)
//!     .events(bus.source("backend"))
//!     .build()
//!     .unwrap();
//! # let _ = breaker;
//! ```

#[cfg(any(
    feature = "circuit-breaker",
    feature = "bulkhead",
    feature = "retry",
    feature = "rate-limit"
))]
mod duration;

#[cfg(feature = "bulkhead")]
mod bulkhead;
#[cfg(feature = "circuit-breaker")]
mod circuit_breaker;
#[cfg(feature = "correlation-id")]
mod correlation;
#[cfg(feature = "rate-limit")]
mod rate_limit;
#[cfg(feature = "retry")]
mod retry;
#[cfg(all(
    feature = "bulkhead",
    feature = "correlation-id",
    any(
        all(feature = "retry", feature = "circuit-breaker"),
        feature = "rate-limit"
    )
))]
mod stack;

#[cfg(feature = "bulkhead")]
pub use self::bulkhead::BulkheadConfig;
#[cfg(feature = "circuit-breaker")]
pub use self::circuit_breaker::{CircuitBreakerConfig, OpenDurationGrowth, SlowCalls, TimeWindow};
#[cfg(feature = "correlation-id")]
pub use self::correlation::{CorrelationIdConfig, PropagationConfig};
#[cfg(all(feature = "rate-limit", feature = "http"))]
pub use self::rate_limit::RateLimitKey;
#[cfg(feature = "rate-limit")]
pub use self::rate_limit::{HeaderKeyConfig, RateLimitConfig};
#[cfg(feature = "retry")]
pub use self::retry::{RetryBudgetConfig, RetryConfig};
#[cfg(all(
    feature = "bulkhead",
    feature = "correlation-id",
    feature = "retry",
    feature = "circuit-breaker"
))]
pub use self::stack::ClientStackConfig;
#[cfg(all(
    feature = "bulkhead",
    feature = "correlation-id",
    feature = "rate-limit"
))]
pub use self::stack::ServerStackConfig;

/// `f(builder, value)` when the config holds a value, else the builder as it is (keeping its
/// default).
#[cfg(any(
    feature = "circuit-breaker",
    feature = "bulkhead",
    feature = "retry",
    feature = "rate-limit",
    feature = "correlation-id"
))]
fn set<B, T>(builder: B, value: Option<T>, f: impl FnOnce(B, T) -> B) -> B {
    match value {
        Some(value) => f(builder, value),
        None => builder,
    }
}
