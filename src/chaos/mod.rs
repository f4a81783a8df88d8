//! Fault injection: make a dependency slow, failing, hanging or unreachable on purpose, to see
//! what the stack around it does.
//!
//! A [`ChaosLayer`] wraps the service that stands for the dependency (on a client, innermost,
//! around the HTTP client; on a test server, around the handler) and, for each call, draws
//! from a seeded random stream:
//!
//! - a **delay** ([`Latency`]: fixed or uniform in a range) with its own probability;
//! - then **one outcome** with the probabilities of the [`Faults`] mix: an injected error
//!   ([`InjectedFault`]), an HTTP status with an empty body (HTTP layers, [`ChaosBuilder::http`]),
//!   a hang (the call never completes until its future is dropped), a dropped connection (an
//!   [`InjectedFault`] whose source is an `io::Error` of kind `ConnectionReset`), or else the
//!   inner service's own answer. A fault never reaches the inner service.
//!
//! A layer is **off until switched on** ([`ChaosBuilder::enabled`], [`ChaosHandle::enable`]):
//! one left in a production stack does nothing, and an off layer passes calls through without
//! drawing, counting or allocating. The [`ChaosHandle`] switches it, swaps the fault mix and
//! restarts the random stream at run time, and reads the counters. With a seed
//! ([`ChaosBuilder::seed`]), a run that makes its calls in the same order draws the same
//! faults; calls made concurrently take numbers from the shared stream in the order they
//! arrive. Delays come from `tokio::time`, so `tokio::time::pause` drives them in tests.
//! Injected faults are `tracing` events at `DEBUG` under the target `seawall::chaos`;
//! switches and changes of the mix at `INFO`.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use seawall::chaos::{ChaosLayer, Faults, InjectedFault, Latency};
//! use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! # tokio::time::pause();
//! let chaos = ChaosLayer::builder()
//!     .latency(1.0, Latency::Fixed(Duration::from_millis(100)))
//!     .seed(7)
//!     .build()?;
//! let handle = chaos.handle();
//! let mut svc = ServiceBuilder::new()
//!     .layer(chaos)
//!     .service(service_fn(|n: u32| async move { Ok::<_, BoxError>(n * 2) }));
//!
//! // Off until switched on: a pass-through.
//! assert_eq!(svc.ready().await?.call(1).await?, 2);
//!
//! handle.enable();
//! let started = tokio::time::Instant::now();
//! assert_eq!(svc.ready().await?.call(2).await?, 4);
//! assert!(started.elapsed() >= Duration::from_millis(100));
//!
//! // Every call fails now, at once, without reaching the service.
//! handle.set_faults(Faults::none().error(1.0))?;
//! let err = svc.ready().await?.call(3).await.unwrap_err();
//! assert!(err.downcast_ref::<InjectedFault>().is_some());
//! assert_eq!(handle.metrics().errors, 1);
//! # Ok(())
//! # }
//! ```
//!
//! An HTTP layer answers with statuses too; here half the calls get a `503`:
//!
//! ```
//! # #[cfg(feature = "http")] {
//! use http::StatusCode;
//! use seawall::chaos::ChaosLayer;
//!
//! let chaos = ChaosLayer::builder()
//!     .http()
//!     .status(0.5, StatusCode::SERVICE_UNAVAILABLE)
//!     .enabled(true)
//!     .build()?;
//! # let _ = chaos;
//! # }
//! # Ok::<(), seawall::ConfigError>(())
//! ```
//!
//! # Errors
//! The services' error type is [`tower::BoxError`]: the inner service's errors pass through,
//! and injected errors and dropped connections are [`InjectedFault`]s.

mod faults;
mod handle;
mod layer;
mod service;
mod state;

pub mod error;
pub mod future;

pub use self::error::{FaultKind, InjectedFault};
pub use self::faults::{Faults, Latency};
pub use self::handle::{ChaosHandle, ChaosMetrics};
#[cfg(feature = "http")]
pub use self::layer::Http;
pub use self::layer::{ChaosBuilder, ChaosLayer, Generic, Kind};
pub use self::service::Chaos;
