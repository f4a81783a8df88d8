//! A circuit breaker: stop calling a dependency that keeps failing, and try it again later.
//!
//! The classic three states, with everything Resilience4j, Polly and Finagle give:
//!
//! - **CLOSED**: calls go through. Their outcomes, as a [`Classify`](crate::classify::Classify)
//!   sees them, count towards tripping by one of these policies:
//!   - `n` failures in a row ([`Builder::consecutive_failures`]);
//!   - a failure rate over the last `n` calls ([`Builder::failure_rate`] +
//!     [`Builder::count_window`], the default: 50 % of 100 calls);
//!   - a failure rate over the last `t` seconds, kept in buckets ([`Builder::time_window`]);
//!   - with a window, a slow-call rate too ([`Builder::slow_calls`]).
//!
//!   Ignored outcomes don't count. Rates are checked (both of them, with at least
//!   [`Builder::minimum_calls`] in the window) each time a failure or a slow call is recorded,
//!   never on a success: a success that brings the window up to the minimum does not trip the
//!   breaker, the next failure does. This keeps successes, the hot path, free of any summing.
//! - **OPEN**: calls are rejected at once with [`CircuitOpen`](crate::error::CircuitOpen),
//!   whose `retry_after` says how long until the breaker half-opens. The open duration is
//!   configurable, and may grow on repeated trips with jitter, up to a cap
//!   ([`Builder::open_duration_growth`], [`Builder::jitter`]).
//! - **HALF_OPEN**: the first call after the open duration half-opens the breaker; at most
//!   [`Builder::half_open_probes`] probe calls go through (the slots are taken atomically,
//!   never one more under concurrency; a probe whose future is dropped, or whose outcome is
//!   ignored, gives its slot back). The probes are judged as Resilience4j judges them: the
//!   breaker reopens when their failure rate (or slow-call rate) reaches the threshold, and
//!   closes otherwise, as soon as the outcomes so far settle it (with 10 probes and a 50 %
//!   threshold, the fifth failed probe reopens it, and the sixth success closes it). A
//!   consecutive-failures breaker, which has no rate, reopens when half of its probes fail
//!   (its preset's single probe decides alone, as in Polly).
//!
//! An outcome only counts in the state (and the stretch of it) in which its call was admitted:
//! a slow call that was let through while closed and fails after the breaker opened and
//! half-opened is not taken for a probe.
//!
//! # HTTP: which responses are failures
//!
//! The default classifier, [`ErrorsAsFailures`](crate::classify::ErrorsAsFailures), only sees
//! `Err`. An HTTP client returns `Ok(response)` for a `500`, so **HTTP users set
//! [`ServerErrorsAsFailures`](crate::classify::ServerErrorsAsFailures)**: errors and `5xx`
//! responses trip the breaker, `4xx` (a `404`, a `422`) do not.
//!
//! ```
//! # #[cfg(feature = "http")] {
//! use seawall::circuit_breaker::CircuitBreakerLayer;
//! use seawall::classify::ServerErrorsAsFailures;
//!
//! let layer = CircuitBreakerLayer::builder()
//!     .classifier(ServerErrorsAsFailures)
//!     .build()
//!     .unwrap();
//! # let _ = layer; }
//! ```
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use seawall::circuit_breaker::{CircuitBreakerLayer, State};
//! use seawall::error::CircuitOpen;
//! use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), BoxError> {
//! let breaker = CircuitBreakerLayer::builder()
//!     .consecutive_failures(3)
//!     .open_duration(Duration::from_secs(10))
//!     .build()?;
//! let handle = breaker.handle();
//!
//! let svc = ServiceBuilder::new()
//!     .layer(breaker)
//!     .service(service_fn(|fail: bool| async move {
//!         if fail { Err::<&str, BoxError>("down".into()) } else { Ok("up") }
//!     }));
//!
//! for _ in 0..3 {
//!     assert!(svc.clone().oneshot(true).await.is_err());
//! }
//! assert_eq!(handle.state(), State::Open);
//!
//! let err = svc.clone().oneshot(false).await.unwrap_err();
//! let open = err.downcast_ref::<CircuitOpen>().expect("rejected by the breaker");
//! assert!(open.retry_after().unwrap() <= Duration::from_secs(10));
//! # Ok(()) }
//! ```
//!
//! # Cost
//!
//! In the closed state a call costs no allocation, no lock and no boxed future: one atomic load
//! of the state word when admitted, one when recorded (written only when a count changes), a
//! reference count and a counter on a per-thread stripe. The consecutive-failures and
//! count-window policies read no clock; a time window reads it once per call; slow-call
//! detection reads it only for calls that waited (twice: when first seen waiting and at the
//! end). The clock is [`tokio::time::Instant`], so `tokio::time::pause` drives every timer.
//!
//! # Observability
//!
//! [`CircuitBreakerHandle`] gives the state, a [`Metrics`] snapshot, force-open, force-closed,
//! reset, disable and a [`StateChange`] event stream. Changes of state and rejections are
//! `tracing` events under the target `seawall::circuit_breaker` (`warn` on opening, `info` on
//! other changes, `debug` per rejection).
//!
//! # Under concurrency
//!
//! State changes, consecutive counts and probe slots are exact. The windows keep per-call
//! counts in per-thread stripes, summed when a failure or a slow call is recorded; a call that
//! ends while another thread is summing may be seen on one side of the window or the other.

pub(crate) mod config;
pub mod future;
mod handle;
mod layer;
pub(crate) mod state;
pub(crate) mod window;

pub use self::config::Builder;
pub use self::handle::{CircuitBreakerHandle, IllegalTransition, Metrics, State, StateChange};
pub use self::layer::{CircuitBreaker, CircuitBreakerLayer};
