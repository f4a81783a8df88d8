//! Correlation ids: one id from the edge to every log line and every downstream call.
//!
//! - [`CorrelationIdLayer`] (server side) reads the id from the request's `x-correlation-id`
//!   header (or any names you list, in order of preference), checks it, and makes a new one
//!   when it is missing or refused. The id then goes
//!   - into the request's extensions, as a [`CorrelationId`] (in axum,
//!     `Extension<CorrelationId>` extracts it),
//!   - into the request's header, so the handler and anything it forwards headers to see the
//!     same valid value,
//!   - into a `tracing` span, `correlation{correlation_id=...}` under the target
//!     `seawall::correlation`, that wraps the inner call: every event in the handler carries it,
//!   - into the task while the inner service's response future runs (in axum: the extractors
//!     and the handler): [`CorrelationId::current`] returns it,
//!   - onto the response header, including the `503`/`429` that
//!     [`RejectionResponseLayer`](crate::http::RejectionResponseLayer) makes of other seawall
//!     layers' rejections when it sits inside this layer,
//!   - into the response's extensions, as a [`CorrelationId`], so that layers outside this one
//!     (access logs, metrics) read it without parsing a header
//!     ([`response_extension`](Builder::response_extension), off by default: it costs two
//!     allocations a response).
//! - [`PropagateCorrelationIdLayer`] (client side) puts the current id on every outbound
//!   `http::Request` made from that task. Tasks spawned with [`spawn`] (or futures wrapped with
//!   [`with_current`] or [`CorrelationId::scope`]) carry the id along.
//!
//! # Which ids are accepted
//!
//! An incoming id is refused when it is empty, longer than 128 bytes, or holds anything but
//! visible ASCII without separators (RFC 9110 `tchar`, [`CharSet::token`]): no space, no
//! control character, no CR or LF, no quote, no byte above `0x7e`. Such ids would poison log
//! lines or headers downstream. A refused id is replaced by a new one, and a `DEBUG` event under
//! `seawall::correlation` records the header, the reason, the replacement and the refused value
//! escaped and cut to 32 bytes: never the raw bytes. (`DEBUG`, because the client decides how
//! often it happens.) [`CorrelationIdHandle::rejected`] counts them.
//!
//! # One id, under one name
//!
//! A request may carry several values: the same header twice, or several of the names given
//! to [`Builder::header_names`]. The layer checks every one of them and takes the **first
//! valid value**: the first name's values first, each name's values in the order received;
//! when none is valid, a new id. The handler then sees that id as the only value of the
//! first name: every other value of every name is removed (a `DEBUG` event names each value
//! dropped, escaped as above, unless it was a repeat of the id), so a header that a client
//! or a proxy appended cannot reach a log line or a downstream call. The response carries the
//! id once, under the first name, and none of the other names.
//!
//! # New ids
//!
//! Random UUIDs (version 4) by default, drawn from a per-thread cryptographically secure
//! generator: no lock, no system call and no allocation of their own. See [`MakeUuidV4`] for
//! why they are unpredictable enough, and [`MakeCorrelationId`] to plug in your own (a prefix
//! and a counter, a ULID, ...).
//!
//! # Example
//!
//! ```
//! use axum::{body::Body, routing::get, Extension, Router};
//! use http::Request;
//! use seawall::correlation::{CorrelationId, CorrelationIdLayer};
//! use tower::ServiceExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let app = Router::new()
//!     .route(
//!         "/",
//!         get(|Extension(id): Extension<CorrelationId>| async move {
//!             // Also here, and in everything this handler awaits:
//!             assert_eq!(CorrelationId::current().as_ref(), Some(&id));
//!             tracing::info!("handling"); // carries correlation_id=... in its span
//!             format!("hello, {id}")
//!         }),
//!     )
//!     .layer(CorrelationIdLayer::new());
//!
//! let req = Request::get("/").header("x-correlation-id", "abc-123").body(Body::empty()).unwrap();
//! let res = app.clone().oneshot(req).await.unwrap();
//! assert_eq!(res.headers()["x-correlation-id"], "abc-123");
//!
//! // A value that would break a log line is replaced by a fresh UUID.
//! let req = Request::get("/").header("x-correlation-id", "evil\tvalue").body(Body::empty());
//! let res = app.oneshot(req.unwrap()).await.unwrap();
//! assert_eq!(res.headers()["x-correlation-id"].len(), 36);
//! # }
//! ```
//!
//! On the client side, wrap the client that a handler calls:
//!
//! ```
//! use seawall::correlation::PropagateCorrelationIdLayer;
//! use tower::ServiceBuilder;
//! # let client = tower::service_fn(|_: http::Request<String>| async {
//! #     Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
//! # });
//!
//! let client = ServiceBuilder::new()
//!     .layer(PropagateCorrelationIdLayer::new())
//!     .service(client); // e.g. hyper_util's legacy `Client`
//! ```
//!
//! # Order
//!
//! Put [`CorrelationIdLayer`] outermost on a server, outside
//! [`RejectionResponseLayer`](crate::http::RejectionResponseLayer): then every response,
//! rejections included, carries the id, and every other layer's events are inside the span.
//! Errors (rather than responses) pass through it unchanged and carry no header. On a client,
//! [`PropagateCorrelationIdLayer`] goes outside retry, so every attempt carries the id.
//!
//! # Cost
//!
//! No lock, no boxed future and no shared write per request: the future is a concrete type
//! that enters the span and makes the id current on each poll. An id of up to 46 bytes is kept
//! inline, so copies of it touch no shared counter. What a request pays for, measured against
//! a bare HTTP service (`benches/correlation.rs`, a 2-core VM, glibc's allocator; a VM of an
//! earlier pass charged about twice these figures, so read them as proportions):
//!
//! | part | about |
//! |---|---|
//! | putting the id in the request's extensions: three allocations when the request's extension map is still empty, as hyper hands it over; one when axum's router has put its own extensions there first | 63 ns; 31-43 ns |
//! | echoing it on the response: the header lookup, one reference-count update of the incoming value, the insert | 40-53 ns |
//! | putting it in the response's extensions (off by default; [`response_extension(true)`](Builder::response_extension)): two allocations when the response's extension map is empty, as handlers usually leave it | about 80 ns |
//! | checking a 36-byte id, the span (no subscriber), making the id current on each poll, moving the larger future | 5-10 ns each |
//! | making a new UUID v4 and putting it on the request | about 70 ns |
//!
//! The first two rows are a floor under any layer that does this job with the `http` types (the
//! bench's "floor" rows measure it alone: 105-116 ns, or 82-85 ns on a routed request). In all,
//! some 130-145 ns with an incoming id (110-130 ns when the extension map already exists) and
//! 205-210 ns with a new one, where tower-http's `SetRequestId` + `PropagateRequestId` +
//! `MakeRequestUuid` take 180-200 ns and 580-630 ns in the same run. A new id's header value
//! takes a slice of a per-thread buffer, so it allocates nothing of its own.

mod current;
pub mod future;
mod generate;
mod id;
mod layer;
mod propagate;

pub use self::generate::{MakeCorrelationId, MakeUuidV4};
pub use self::id::{CharSet, CorrelationId, InvalidCorrelationId, DEFAULT_MAX_LEN, MAX_LEN_LIMIT};
pub use self::layer::{Builder, CorrelationIdHandle, CorrelationIdLayer, SetCorrelationId};
pub use self::propagate::{PropagateCorrelationId, PropagateCorrelationIdLayer};

use http::header::HeaderName;
use std::future::Future;

/// `x-correlation-id`, the default header name.
pub const X_CORRELATION_ID: HeaderName = HeaderName::from_static("x-correlation-id");

impl CorrelationId {
    /// The id of the request this task is handling: set by [`SetCorrelationId`] while the
    /// inner service's response future runs, and by [`CorrelationId::scope`], [`with_current`]
    /// and [`spawn`]. `None` outside of those, and in the inner service's `call` itself (a
    /// service that does its work there finds the id in the request's extensions).
    pub fn current() -> Option<CorrelationId> {
        current::with(CorrelationId::clone)
    }

    /// Runs `future` with this id as the current one, inside a new span
    /// `correlation{correlation_id=...}` (as [`SetCorrelationId`] makes), so its log lines and
    /// outbound requests carry the id: for work that does not start with a request, such as a
    /// batch job or a message from a queue.
    ///
    /// ```
    /// use seawall::correlation::CorrelationId;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let id = CorrelationId::try_from("batch-42").unwrap();
    /// let seen = id.clone().scope(async { CorrelationId::current() }).await;
    /// assert_eq!(seen, Some(id));
    /// assert_eq!(CorrelationId::current(), None);
    /// # }
    /// ```
    pub fn scope<F: Future>(self, future: F) -> future::Scoped<F> {
        let span = span(&self);
        future::Scoped::new(Some(self), span, future)
    }
}

/// Enters `span` unless it is disabled. Entering a disabled span does nothing but, when
/// `tracing`'s `log` feature is on (axum turns it on) and no subscriber is set, write
/// `-> correlation;` activity records to `log` at `TRACE`: skipping it saves ~30 ns per
/// request.
#[inline]
fn enter(span: &tracing::Span) -> Option<tracing::span::Entered<'_>> {
    (!span.is_disabled()).then(|| span.enter())
}

/// The span the server layer and [`CorrelationId::scope`] run their futures in.
///
/// When no subscriber takes `INFO` (the process-wide maximum level, one relaxed load), this is
/// `Span::none()` at once. `info_span!` would otherwise make a disabled span and, with
/// `tracing`'s `log` feature on (axum turns it on) and no subscriber ever set, format it for
/// `log` at its creation and at its drop: ~20 ns per request for nothing when `log` is off.
#[inline]
fn span(id: &CorrelationId) -> tracing::Span {
    span_if_wanted(id).unwrap_or_else(tracing::Span::none)
}

/// [`span`], or `None` rather than `Span::none()` when no subscriber takes `INFO`: the server
/// layer's future then has no span to drop.
#[inline]
fn span_if_wanted(id: &CorrelationId) -> Option<tracing::Span> {
    use tracing::level_filters::{LevelFilter, STATIC_MAX_LEVEL};
    if tracing::Level::INFO > STATIC_MAX_LEVEL || tracing::Level::INFO > LevelFilter::current() {
        return None;
    }
    Some(tracing::info_span!(
        target: "seawall::correlation",
        "correlation",
        correlation_id = %id,
    ))
}

/// Wraps `future` so that it runs with the current id, if there is one, and inside the current
/// `tracing` span (as `tracing::Instrument::in_current_span` does): for tasks spawned on
/// something other than [`tokio::spawn`] (a `JoinSet`, another executor, ...).
pub fn with_current<F: Future>(future: F) -> future::Scoped<F> {
    future::Scoped::new(CorrelationId::current(), tracing::Span::current(), future)
}

/// [`tokio::spawn`]s `future` with the current id, if there is one, and inside the current
/// `tracing` span, so the task logs under and propagates the same id.
///
/// ```
/// use seawall::correlation::{self, CorrelationId};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let id = CorrelationId::try_from("job-7").unwrap();
/// id.clone()
///     .scope(async move {
///         let seen = correlation::spawn(async { CorrelationId::current() }).await.unwrap();
///         assert_eq!(seen, Some(id));
///         // A plain `tokio::spawn` starts without one.
///         let lost = tokio::spawn(async { CorrelationId::current() }).await.unwrap();
///         assert_eq!(lost, None);
///     })
///     .await;
/// # }
/// ```
///
/// # Panics
/// As [`tokio::spawn`]: when called outside a tokio runtime.
#[track_caller]
pub fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(with_current(future))
}
