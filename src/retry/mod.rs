//! Retry with exponential backoff and jitter, a retry budget, `Retry-After`, per-attempt
//! timeouts and a deadline, for any `tower::Service`, and for HTTP without writing a policy.
//!
//! [`RetryLayer::builder`] sets how many attempts, how long to wait between them (exponential
//! backoff with one of the AWS Architecture Blog's [`Jitter`] strategies, seedable for tests),
//! an optional shared [`RetryBudget`] so that retries never multiply load during an outage, an
//! optional per-attempt timeout and overall deadline. What is retried comes from a [`Policy`]:
//!
//! - [`CloneRequest`] (the default): any `Clone` request, errors are failures
//!   ([`ErrorsAsFailures`](crate::classify::ErrorsAsFailures)); pick another
//!   [`Classify`](crate::classify::Classify) with [`RetryLayerBuilder::classify`], or a clone
//!   function with [`RetryLayerBuilder::clone_with`].
//! - With the `http` feature, [`RetryLayerBuilder::http`] and
//!   [`RetryLayerBuilder::http_replay`]: idempotent methods only, connection errors, timeouts,
//!   `502`, `503`, `504` and `429`, request bodies cloned or replayed (see [`http`]).
//!
//! The wait before a retry is the backoff delay, or longer when the other side asks for it:
//! a `Retry-After` header (seconds or an HTTP date) or a seawall rejection's `retry_after`,
//! clamped to [`max_retry_after`](RetryLayerBuilder::max_retry_after) (60 s by default); a
//! malformed value is ignored. An open circuit ([`CircuitOpen`](crate::error::CircuitOpen)) is
//! retried only when its `retry_after` is known and fits the remaining deadline; with no
//! deadline, only when it is no longer than the backoff delay (before jitter) the layer would
//! wait after any other failure. Otherwise it is returned at once: a breaker is there to fail
//! fast, and a call should not sit out the breaker's open duration unless a deadline allows it.
//!
//! When attempts, budget or deadline run out, the last response or error is returned as it
//! is (or what [`on_exhausted`](RetryLayerBuilder::on_exhausted) makes of it), with a `tracing` event under `seawall::retry` (each retry is a `debug` event with the
//! attempt, the delay and the reason; an empty budget is a `warn` event).
//!
//! # Cost
//!
//! The success path allocates nothing, takes no lock and boxes no future: it clones the
//! request (and the inner service, for a retry that may come), and reads no clock. A
//! per-attempt timeout or a deadline adds a clock read and one small allocation (the timer)
//! per call; retries allocate their timer too. No shared counter is written per call: each
//! service clone counts its calls and publishes them 64 at a time (to the metrics and the
//! budget). The RNG is touched only when a retry happens.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use seawall::retry::{Jitter, RetryBudget, RetryLayer};
//! use tower::{service_fn, BoxError, Layer, ServiceExt};
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! # tokio::time::pause();
//! let layer = RetryLayer::builder()
//!     .max_attempts(4)
//!     .initial_delay(Duration::from_millis(50))
//!     .jitter(Jitter::Equal)
//!     .budget(RetryBudget::default())
//!     .build()?;
//! let handle = layer.handle();
//!
//! // Fails twice, then answers.
//! let calls = Arc::new(AtomicU32::new(0));
//! let flaky = service_fn(move |name: &'static str| {
//!     let n = calls.fetch_add(1, Ordering::SeqCst);
//!     async move {
//!         if n < 2 { Err::<String, BoxError>("connection refused".into()) }
//!         else { Ok(format!("hello, {name}")) }
//!     }
//! });
//!
//! let answer = layer.layer(flaky).oneshot("world").await?;
//! assert_eq!(answer, "hello, world");
//! assert_eq!(handle.metrics().retries, 2);
//! assert_eq!(handle.metrics().attempts, 3);
//! # Ok(())
//! # }
//! ```

mod backoff;
mod budget;
pub mod error;
pub mod future;
mod handle;
mod layer;
mod policy;
mod service;
mod shared;

#[cfg(feature = "http")]
pub mod http;

pub use self::backoff::Jitter;
pub use self::budget::{RetryBudget, RetryBudgetBuilder};
pub use self::handle::{Reason, RetryEvent, RetryHandle, RetryMetrics};
pub use self::layer::{RetryLayer, RetryLayerBuilder};
pub use self::policy::{CloneRequest, CloneWith, Fallback, Policy, Replay};
pub use self::service::Retry;
