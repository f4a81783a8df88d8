//! Bulkhead: cap how many calls are in flight at once, so one slow dependency or one greedy
//! caller cannot take every connection, task and socket a service has.
//!
//! A [`BulkheadLayer`] owns a number of permits (`max_concurrent`). A call takes one in `call`
//! and gives it back when its response future completes, fails, panics or is dropped. When none
//! is free the bulkhead either rejects the call at once with
//! [`BulkheadFull`](crate::error::BulkheadFull) (reject mode, the default), or lets it wait, first
//! come first served, up to a maximum wait (wait mode, [`BulkheadBuilder::max_wait`]), with an
//! optional bound on how many may wait. Waiting happens inside the response future, never in
//! `poll_ready`, so an idle keep-alive connection holds no capacity.
//!
//! Several kinds of work get several bulkheads: one layer value each. Every service one layer
//! value builds, and every clone of them, shares that value's permits. A [`BulkheadHandle`] reads
//! the figures and changes the limit at run time. Events go to `tracing` under the target
//! `seawall::bulkhead` (rejections at `DEBUG`, resizes at `INFO`).
//!
//! The happy path takes no lock and allocates nothing. Each thread owns a slot of the permits,
//! a cache line other threads write only when they borrow from it, so threads sharing a
//! bulkhead do not slow each other down. In reject mode a call made and finished on one thread
//! costs one atomic read-modify-write (the permit is given back with a plain store); in wait
//! mode two.
//!
//! With the `http` feature, [`RejectionResponseLayer`](crate::http::RejectionResponseLayer)
//! answers a full bulkhead with `503 Service Unavailable` (and `Retry-After` when
//! [`BulkheadBuilder::retry_after`] is set).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use seawall::bulkhead::BulkheadLayer;
//! use seawall::error::BulkheadFull;
//! use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let bulkhead = BulkheadLayer::builder()
//!     .max_concurrent(1)
//!     .build()?;
//! let handle = bulkhead.handle();
//! let mut svc = ServiceBuilder::new()
//!     .layer(bulkhead)
//!     .service(service_fn(|n: u32| async move { Ok::<_, BoxError>(n * 2) }));
//!
//! let first = svc.ready().await?.call(1); // holds the only permit until it completes
//! let second = svc.ready().await?.call(2);
//! assert_eq!(handle.in_flight(), 1);
//! let err = second.await.unwrap_err();
//! assert!(err.downcast_ref::<BulkheadFull>().is_some());
//!
//! assert_eq!(first.await?, 2);
//! assert_eq!(handle.in_flight(), 0);
//! assert_eq!(svc.ready().await?.call(3).await?, 6);
//! assert_eq!(handle.rejections(), 1);
//!
//! // Wait mode: wait up to 50 ms for a permit, at most 100 callers at once.
//! let waiting = BulkheadLayer::builder()
//!     .max_concurrent(10)
//!     .max_wait(Duration::from_millis(50))
//!     .max_waiting(100)
//!     .build()?;
//! # let _ = waiting;
//! # Ok(())
//! # }
//! ```
//!
//! # Errors
//! The services' error type is [`tower::BoxError`]: the inner service's errors pass through,
//! and the bulkhead's own refusals are [`BulkheadFull`](crate::error::BulkheadFull).
//!
//! # Order
//! On a server, inside rate limiting and outside the handler. On a client, inside the circuit
//! breaker and outside the per-attempt timeout (so a timed-out attempt gives its permit back).

mod handle;
mod layer;
mod service;
pub(crate) mod state;

pub mod future;

pub use self::handle::{BulkheadHandle, BulkheadMetrics};
pub use self::layer::{BulkheadBuilder, BulkheadLayer};
pub use self::service::Bulkhead;
