//! Rate limit: a lock-free GCRA, one allowance per layer value or per client key, that every
//! clone of every service shares.
//!
//! [`RateLimitLayer`] admits `n` calls per period with a burst, as a token bucket would,
//! using the generic cell rate algorithm: the whole state of a bucket is one `AtomicU64` (its
//! theoretical arrival time), updated with one compare-and-swap, and a call that is rejected
//! spends nothing. Over any window of length `w` it admits at most `rate * w + burst` calls.
//!
//! - **Shared by clones.** Every service the layer value builds, and every clone (axum calls
//!   `layer()` per route and clones the router per connection), draws from one allowance.
//! - **Per key.** With [`RateLimitBuilder::key`], each key (a header such as `X-Client-ID`
//!   with [`HeaderKey`], the peer address from axum's `ConnectInfo` with [`ExtensionKey`], any
//!   closure with [`key_fn`]) has its own bucket, in a sharded table bounded by
//!   [`max_keys`](RateLimitBuilder::max_keys).
//! - **The default bucket.** Requests without a key (no header, an empty or over-long value),
//!   and new keys while the table is full with no idle key to drop, share one more bucket with
//!   the same rate and burst. So keyless traffic and a flood of forged keys are limited as one
//!   client, instead of going unlimited (nginx's `limit_req` does not count empty keys) or
//!   pushing out the state of known clients.
//! - **Over the limit.** By default the call fails at once with
//!   [`RateLimited`](crate::error::RateLimited), whose `retry_after` is exact: the time until
//!   the call would conform. With [`wait_up_to`](RateLimitBuilder::wait_up_to) it waits
//!   instead, inside its response future, when its slot is at most that far away.
//! - **HTTP.** With the `http` feature, [`crate::http::RejectionResponseLayer`] answers a
//!   rejection with `429 Too Many Requests`, `Retry-After` and the `RateLimit-Limit`,
//!   `RateLimit-Remaining`, `RateLimit-Reset` headers (the three-header form of the IETF
//!   `draft-ietf-httpapi-ratelimit-headers` drafts, as GitHub and others send them).
//!   [`RateLimitLayer::with_headers`] also puts them on admitted responses.
//!
//! # Defaults
//!
//! | setting | default | anchor |
//! |---|---|---|
//! | [`burst`](RateLimitBuilder::burst) | `n` of `rate(n, per)` | governor's `Quota::per_second(n)`, tower's `RateLimit::new(n, per)` |
//! | over the limit | reject at once | governor's `check()` |
//! | [`max_keys`](RateLimitBuilder::max_keys) | [`DEFAULT_MAX_KEYS`] = 160,000 | nginx's documented `limit_req_zone ... zone=one:10m` (16,000 states per MB) |
//! | [`HeaderKey::max_len`] | 128 bytes | a UUID is 36 |
//!
//! # Time
//!
//! All time is `tokio::time`'s, so `tokio::time::pause` and `advance` drive the limiter
//! exactly. Reading it costs a `clock_gettime` (31 ns on the reference VM, twice a whole
//! governor `check()`), and an exact GCRA needs the time on every call (`max(tat, now)` has no
//! cheaper bound). So while tokio's clock is live the limiter reads the TSC instead, through
//! `quanta` (the clock governor's `check()` uses), anchored to tokio's clock: once per
//! millisecond of TSC time one call also reads tokio's clock, re-anchors, and checks that the
//! two still agree. When tokio's clock is paused (seen when the layer is built, or at the next
//! check) the limiter reads tokio's clock on every call instead. Build the layer inside the
//! paused runtime, as `#[tokio::test(start_paused = true)]` does, and every call is exact.
//!
//! # Example
//!
//! ```
//! use seawall::error::RateLimited;
//! use seawall::rate_limit::RateLimitLayer;
//! use std::time::Duration;
//! use tower::{service_fn, BoxError, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let limit = RateLimitLayer::builder()
//!     .rate(2, Duration::from_secs(1)) // one call every 500 ms...
//!     .burst(2) // ...and two at once after a quiet spell
//!     .build()?;
//! let handle = limit.handle();
//! let svc = limit.layer(service_fn(|x: u32| async move { Ok::<_, BoxError>(x) }));
//!
//! assert_eq!(svc.clone().oneshot(1).await?, 1);
//! assert_eq!(svc.clone().oneshot(2).await?, 2); // clones share the allowance
//! let err = svc.clone().oneshot(3).await.unwrap_err();
//! let limited = err.downcast_ref::<RateLimited>().unwrap();
//! assert_eq!(limited.retry_after(), Duration::from_millis(500));
//!
//! tokio::time::advance(Duration::from_millis(500)).await;
//! assert_eq!(svc.oneshot(4).await?, 4);
//! assert_eq!((handle.allowed(), handle.limited()), (3, 1));
//! # Ok(())
//! # }
//! ```
//!
//! Per client, in axum, with the HTTP face:
//!
//! ```
//! use axum::{http::HeaderName, routing::get, Router};
//! use seawall::http::RejectionResponseLayer;
//! use seawall::rate_limit::{HeaderKey, RateLimitLayer};
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//!
//! let per_client = RateLimitLayer::builder()
//!     .rate(5, Duration::from_secs(1))
//!     .key(HeaderKey::new(HeaderName::from_static("x-client-id")))
//!     .build()
//!     .unwrap();
//! let app: Router = Router::new().route("/", get(|| async { "hi" })).layer(
//!     ServiceBuilder::new()
//!         .layer(RejectionResponseLayer::new())
//!         .layer(per_client.with_headers()),
//! );
//! # let _ = app;
//! ```

// `pub(crate)` where the loom models (`src/loom_models/rate_limit.rs`) reach in.
pub(crate) mod clock;
pub mod future;
pub(crate) mod gcra;
mod handle;
mod key;
mod layer;
mod service;
pub(crate) mod state;
mod store;

#[cfg(feature = "http")]
mod headers;

pub use self::handle::RateLimitHandle;
#[cfg(feature = "http")]
pub use self::headers::{RateLimitHeaders, RateLimitHeadersLayer};
pub use self::key::{ip_prefix, key_fn, Extract, Global, KeyExtractor, KeyFn};
#[cfg(feature = "http")]
pub use self::key::{ExtensionKey, HeaderKey};
pub use self::layer::{RateLimitBuilder, RateLimitLayer, DEFAULT_MAX_KEYS};
pub use self::service::RateLimit;
