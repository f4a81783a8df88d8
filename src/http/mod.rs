//! The HTTP face: rejections as responses, and `Retry-After` read and written.
//!
//! By default a seawall layer reports its own refusals as errors ([`crate::error`]). An HTTP
//! server wants responses instead: an error ends the connection, and an axum `Router` only takes
//! services whose error is `Infallible`. [`RejectionResponseLayer`] turns every seawall rejection
//! into the response a client expects, so no `HandleErrorLayer` is needed:
//!
//! | rejection | status | headers |
//! |---|---|---|
//! | [`CircuitOpen`](crate::error::CircuitOpen) | `503 Service Unavailable` | `Retry-After` when known |
//! | [`BulkheadFull`](crate::error::BulkheadFull) | `503 Service Unavailable` | `Retry-After` when known |
//! | [`RateLimited`](crate::error::RateLimited) | `429 Too Many Requests` | `Retry-After`; `RateLimit-Limit`, `RateLimit-Remaining: 0`, `RateLimit-Reset` when the rejection states its quota |
//! | any other error | `500 Internal Server Error` | none; a `tracing` warning under `seawall::http` |
//!
//! `Retry-After` is written in whole seconds, rounded up, as RFC 9110 §10.2.3 asks.
//!
//! # Example
//!
//! ```
//! use axum::{routing::get, Router};
//! use seawall::http::RejectionResponseLayer;
//! use tower::ServiceBuilder;
//! # #[derive(Clone)] struct AnySeawallLayer;
//! # impl<S> tower::Layer<S> for AnySeawallLayer { type Service = S; fn layer(&self, s: S) -> S { s } }
//! # let some_seawall_layer = AnySeawallLayer;
//!
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(
//!         ServiceBuilder::new()
//!             .layer(RejectionResponseLayer::new()) // outermost: sees every rejection
//!             .layer(some_seawall_layer),
//!     );
//! ```

mod response;
mod retry_after;

pub use self::response::{future, rejection_response, RejectionResponse, RejectionResponseLayer};
pub use self::retry_after::{format_retry_after, parse_retry_after, retry_after_from_headers};
