//! HTTP retries without a hand-written policy: idempotent methods, connection errors,
//! timeouts, `502`/`503`/`504`/`429`, `Retry-After`, and request bodies replayed.
//!
//! Two policies, picked on the builder:
//!
//! - [`RetryLayerBuilder::http`] ([`HttpPolicy`]): for requests whose body is cheap to clone
//!   (`Full<Bytes>`, `String`, `()`, anything `Clone`). The request is cloned for each attempt;
//!   the inner service takes `Request<B>` unchanged.
//! - [`RetryLayerBuilder::http_replay`] ([`HttpReplay`]): for any body, streaming ones
//!   included. The inner service takes `Request<`[`ReplayBody<B>`]`>`: the first attempt streams
//!   the body and keeps a copy of what it sent, up to a limit (64 KiB by default, as linkerd
//!   does); a retry replays the copy, then goes on reading the original body if the first
//!   attempt stopped early. Past the limit the copy is dropped, the request (which still goes
//!   out in full) is not retried, and a `tracing` event says so. A body whose size hint
//!   already exceeds the limit is sent as it is, once.

use super::handle::Reason;
use super::layer::RetryLayerBuilder;
use super::policy::{Policy, Replay};
use crate::classify::{Classify, Outcome};
use crate::error::Rejection;
use bytes::{Buf, Bytes};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;
use tower::BoxError;

/// The default replay limit: 64 KiB, as linkerd buffers.
pub const DEFAULT_REPLAY_LIMIT: usize = 64 * 1024;

/// The HTTP default of what is retried: connection errors, timeouts and seawall rejections,
/// and the statuses `502`, `503`, `504` and `429`.
///
/// Other errors are [`Outcome::Ignored`] (returned as they are); other responses are
/// [`Outcome::Success`]. See [`is_retryable_error`] for the errors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpRetryable;

impl<B> Classify<Response<B>, BoxError> for HttpRetryable {
    #[inline]
    fn classify(&self, result: &Result<Response<B>, BoxError>) -> Outcome {
        match result {
            Ok(res) if is_retryable_status(res.status()) => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(e) if is_retryable_error(&**e) => Outcome::Failure,
            Err(_) => Outcome::Ignored,
        }
    }
}

/// `502 Bad Gateway`, `503 Service Unavailable`, `504 Gateway Timeout` and
/// `429 Too Many Requests`.
pub fn is_retryable_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 502 | 503 | 504 | 429)
}

/// Whether an error, or any error in its [`source`](StdError::source) chain, says the request
/// could not be delivered or timed out:
///
/// - a `std::io::Error` of kind `ConnectionRefused`, `ConnectionReset`, `ConnectionAborted`,
///   `NotConnected`, `BrokenPipe` or `TimedOut` (hyper-util's connect errors carry one);
/// - the retry layer's own [`AttemptTimedOut`](super::error::AttemptTimedOut);
/// - a seawall rejection ([`Rejection::find`]; an open circuit is then retried only when its
///   `retry_after` fits);
/// - tower's `timeout::error::Elapsed` and hyper's incomplete-message error, recognised by their
///   messages (`"request timed out"`, `"connection closed before message completed"`) since
///   seawall depends on neither tower's `timeout` feature nor hyper.
pub fn is_retryable_error(err: &(dyn StdError + 'static)) -> bool {
    if Rejection::find(err).is_some() {
        return true;
    }
    let mut next = Some(err);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            use io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused
                    | ConnectionReset
                    | ConnectionAborted
                    | NotConnected
                    | BrokenPipe
                    | TimedOut
            ) {
                return true;
            }
        }
        if e.is::<super::error::AttemptTimedOut>() {
            return true;
        }
        let msg = e.to_string();
        if msg == "request timed out" || msg == "connection closed before message completed" {
            return true;
        }
        next = e.source();
    }
    false
}

/// Which requests may be sent more than once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Methods {
    idempotency_key: bool,
}

impl Methods {
    /// GET, HEAD, OPTIONS, PUT, DELETE and TRACE (RFC 9110 §9.2.2); any other method when
    /// opted in and the request carries an `Idempotency-Key` header.
    fn allow<B>(&self, req: &Request<B>) -> bool {
        let m = req.method();
        *m == Method::GET
            || *m == Method::HEAD
            || *m == Method::OPTIONS
            || *m == Method::PUT
            || *m == Method::DELETE
            || *m == Method::TRACE
            || (self.idempotency_key && req.headers().contains_key("idempotency-key"))
    }
}

fn response_retry_after<B>(result: &Result<Response<B>, BoxError>) -> Option<Duration> {
    match result {
        Ok(res) => crate::http::retry_after_from_headers(res.headers()),
        Err(e) => Rejection::find(&**e).and_then(|r| r.retry_after()),
    }
}

fn response_reason<B>(result: &Result<Response<B>, BoxError>) -> Reason<'_> {
    match result {
        Ok(res) => Reason::Status(res.status().as_u16()),
        Err(e) => Reason::Error(&**e),
    }
}

/// Retries HTTP requests whose body is `Clone`, by cloning them. See [the module docs](self).
#[derive(Debug, Clone, Copy, Default)]
pub struct HttpPolicy<C = HttpRetryable> {
    classifier: C,
    methods: Methods,
}

impl<C> HttpPolicy<C> {
    /// A policy with `classifier`; only idempotent methods are retried.
    pub const fn new(classifier: C) -> Self {
        Self {
            classifier,
            methods: Methods {
                idempotency_key: false,
            },
        }
    }
}

impl<B: Clone, C> Replay<Request<B>> for HttpPolicy<C> {
    type Request = Request<B>;
    type Stash = Request<B>;

    #[inline]
    fn prepare(&self, req: Request<B>) -> (Request<B>, Option<Request<B>>) {
        if self.methods.allow(&req) {
            (req.clone(), Some(req))
        } else {
            (req, None)
        }
    }

    fn replay(&self, stash: &mut Request<B>) -> Option<Request<B>> {
        Some(stash.clone())
    }
}

impl<B, ResB, C> Policy<Request<B>, Response<ResB>> for HttpPolicy<C>
where
    B: Clone,
    C: Classify<Response<ResB>, BoxError>,
{
    #[inline]
    fn classify(&self, result: &Result<Response<ResB>, BoxError>) -> Outcome {
        self.classifier.classify(result)
    }

    fn retry_after(&self, result: &Result<Response<ResB>, BoxError>) -> Option<Duration> {
        response_retry_after(result)
    }

    fn reason<'a>(&self, result: &'a Result<Response<ResB>, BoxError>) -> Reason<'a> {
        response_reason(result)
    }
}

/// Retries HTTP requests with any body, replaying it from a bounded copy. See
/// [the module docs](self).
#[derive(Debug, Clone, Copy)]
pub struct HttpReplay<C = HttpRetryable> {
    classifier: C,
    methods: Methods,
    limit: usize,
}

impl<C> HttpReplay<C> {
    /// A policy with `classifier` and the default 64 KiB limit; only idempotent methods are
    /// retried.
    pub const fn new(classifier: C) -> Self {
        Self {
            classifier,
            methods: Methods {
                idempotency_key: false,
            },
            limit: DEFAULT_REPLAY_LIMIT,
        }
    }
}

impl Default for HttpReplay {
    fn default() -> Self {
        Self::new(HttpRetryable)
    }
}

/// What [`HttpReplay`] keeps to send a request again.
#[derive(Debug)]
pub struct ReplayStash<B> {
    parts: http::request::Parts,
    body: ReplayBody<B>,
}

impl<B, C> Replay<Request<B>> for HttpReplay<C>
where
    B: Body,
    B::Data: Buf,
    B::Error: Into<BoxError>,
{
    type Request = Request<ReplayBody<B>>;
    type Stash = ReplayStash<B>;

    fn prepare(&self, req: Request<B>) -> (Self::Request, Option<ReplayStash<B>>) {
        if !self.methods.allow(&req) {
            return (req.map(ReplayBody::passthrough), None);
        }
        let lower = req.body().size_hint().lower();
        if lower > self.limit as u64 {
            tracing::debug!(
                target: "seawall::retry",
                size_hint = lower,
                limit = self.limit,
                "request body larger than the replay limit; sent once, not retried"
            );
            return (req.map(ReplayBody::passthrough), None);
        }
        let (parts, body) = req.into_parts();
        let body = ReplayBody::replayable(body, self.limit);
        let stash = ReplayStash {
            parts: parts.clone(),
            body: body.replay(),
        };
        (Request::from_parts(parts, body), Some(stash))
    }

    fn replay(&self, stash: &mut ReplayStash<B>) -> Option<Self::Request> {
        if stash.body.is_overflowed() {
            tracing::info!(
                target: "seawall::retry",
                limit = self.limit,
                "request body grew past the replay limit; not retried"
            );
            return None;
        }
        Some(Request::from_parts(
            stash.parts.clone(),
            stash.body.replay(),
        ))
    }
}

impl<B, ResB, C> Policy<Request<B>, Response<ResB>> for HttpReplay<C>
where
    B: Body,
    B::Data: Buf,
    B::Error: Into<BoxError>,
    C: Classify<Response<ResB>, BoxError>,
{
    #[inline]
    fn classify(&self, result: &Result<Response<ResB>, BoxError>) -> Outcome {
        self.classifier.classify(result)
    }

    fn retry_after(&self, result: &Result<Response<ResB>, BoxError>) -> Option<Duration> {
        response_retry_after(result)
    }

    fn reason<'a>(&self, result: &'a Result<Response<ResB>, BoxError>) -> Reason<'a> {
        response_reason(result)
    }
}

pin_project! {
    /// A request body that can be sent again: see [`HttpReplay`].
    ///
    /// Every attempt's body reads from one shared state: the chunks already read from the
    /// original body (while they fit the limit), then the original body itself. Its data
    /// is [`Bytes`]; its error is [`BoxError`].
    pub struct ReplayBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Passthrough { #[pin] body: B },
        Replay {
            shared: Arc<Mutex<ReplayState<B>>>,
            // Absolute index of the next chunk this body yields.
            cursor: u64,
            // Bytes this body has yielded.
            sent: u64,
            trailers_sent: bool,
        },
    }
}

struct ReplayState<B> {
    body: Option<Pin<Box<B>>>,
    chunks: Vec<Bytes>,
    /// Absolute index of `chunks[0]`.
    first: u64,
    /// Chunks read from the original body so far.
    total: u64,
    buffered: usize,
    limit: usize,
    overflowed: bool,
    ended: bool,
    trailers: Option<HeaderMap>,
    exact: Option<u64>,
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Passthrough { .. } => f.write_str("ReplayBody::Passthrough"),
            Kind::Replay { cursor, sent, .. } => f
                .debug_struct("ReplayBody")
                .field("cursor", cursor)
                .field("sent", sent)
                .finish_non_exhaustive(),
        }
    }
}

impl<B: Body> ReplayBody<B> {
    /// A body sent as it is, never replayed.
    pub fn passthrough(body: B) -> Self {
        Self {
            kind: Kind::Passthrough { body },
        }
    }

    /// A body that keeps up to `limit` bytes of what it sends, for replays.
    pub fn replayable(body: B, limit: usize) -> Self {
        let exact = body.size_hint().exact();
        let ended = body.is_end_stream();
        Self {
            kind: Kind::Replay {
                shared: Arc::new(Mutex::new(ReplayState {
                    body: if ended { None } else { Some(Box::pin(body)) },
                    chunks: Vec::new(),
                    first: 0,
                    total: 0,
                    buffered: 0,
                    limit,
                    overflowed: false,
                    ended,
                    trailers: None,
                    exact,
                })),
                cursor: 0,
                sent: 0,
                trailers_sent: false,
            },
        }
    }
}

impl<B> ReplayBody<B> {
    /// A new body that yields the same bytes from the start; a passthrough body gives an
    /// empty one.
    fn replay(&self) -> Self {
        match &self.kind {
            Kind::Replay { shared, .. } => Self {
                kind: Kind::Replay {
                    shared: Arc::clone(shared),
                    cursor: 0,
                    sent: 0,
                    trailers_sent: false,
                },
            },
            Kind::Passthrough { .. } => unreachable!("only replayable bodies are stashed"),
        }
    }

    /// Whether the body grew past its limit (or failed), so it can no longer be replayed.
    pub fn is_overflowed(&self) -> bool {
        match &self.kind {
            Kind::Passthrough { .. } => true,
            Kind::Replay { shared, .. } => {
                shared
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .overflowed
            }
        }
    }
}

impl<B> ReplayState<B>
where
    B: Body,
    B::Data: Buf,
    B::Error: Into<BoxError>,
{
    fn poll_for(
        &mut self,
        cursor: &mut u64,
        sent: &mut u64,
        trailers_sent: &mut bool,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if *cursor < self.total {
                if *cursor < self.first {
                    return Poll::Ready(Some(Err(
                        "replay body: data past the replay limit is no longer buffered".into(),
                    )));
                }
                let chunk = self.chunks[(*cursor - self.first) as usize].clone();
                *cursor += 1;
                *sent += chunk.len() as u64;
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if self.ended {
                if !*trailers_sent {
                    if let Some(t) = &self.trailers {
                        *trailers_sent = true;
                        return Poll::Ready(Some(Ok(Frame::trailers(t.clone()))));
                    }
                }
                return Poll::Ready(None);
            }
            let Some(body) = self.body.as_mut() else {
                self.ended = true;
                continue;
            };
            match body.as_mut().poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.ended = true;
                    self.body = None;
                }
                Poll::Ready(Some(Err(e))) => {
                    // What was sent cannot be replayed faithfully.
                    self.overflowed = true;
                    self.ended = true;
                    self.body = None;
                    self.chunks = Vec::new();
                    self.first = self.total;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(mut data) => {
                        let bytes = data.copy_to_bytes(data.remaining());
                        self.total += 1;
                        *cursor = self.total;
                        *sent += bytes.len() as u64;
                        if !self.overflowed {
                            if self.buffered + bytes.len() > self.limit {
                                self.overflowed = true;
                                self.chunks = Vec::new();
                                self.buffered = 0;
                                tracing::debug!(
                                    target: "seawall::retry",
                                    limit = self.limit,
                                    "request body passed the replay limit; no longer buffered"
                                );
                            } else {
                                self.buffered += bytes.len();
                                self.chunks.push(bytes.clone());
                            }
                        }
                        if self.overflowed {
                            self.first = self.total;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(bytes))));
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            *trailers_sent = true;
                            self.trailers = Some(trailers.clone());
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                    }
                },
            }
        }
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body,
    B::Data: Buf,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Passthrough { body } => match body.poll_frame(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(
                    frame.map_data(|mut d| d.copy_to_bytes(d.remaining()))
                ))),
            },
            KindProj::Replay {
                shared,
                cursor,
                sent,
                trailers_sent,
            } => shared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .poll_for(cursor, sent, trailers_sent, cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Passthrough { body } => body.is_end_stream(),
            Kind::Replay {
                shared,
                cursor,
                trailers_sent,
                ..
            } => {
                let state = shared.lock().unwrap_or_else(PoisonError::into_inner);
                state.ended
                    && *cursor == state.total
                    && (state.trailers.is_none() || *trailers_sent)
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Passthrough { body } => body.size_hint(),
            Kind::Replay { shared, sent, .. } => {
                let state = shared.lock().unwrap_or_else(PoisonError::into_inner);
                match state.exact {
                    Some(n) => SizeHint::with_exact(n.saturating_sub(*sent)),
                    None => SizeHint::default(),
                }
            }
        }
    }
}

impl<P> RetryLayerBuilder<P> {
    /// Retries HTTP requests whose body is `Clone`, by cloning them ([`HttpPolicy`] with
    /// [`HttpRetryable`]): idempotent methods only; connection errors, timeouts, 502, 503,
    /// 504 and 429; `Retry-After` honoured.
    pub fn http(self) -> RetryLayerBuilder<HttpPolicy<HttpRetryable>> {
        self.policy(HttpPolicy::new(HttpRetryable))
    }

    /// Retries HTTP requests with any body, replaying it from a copy of at most 64 KiB
    /// ([`HttpReplay`] with [`HttpRetryable`]). The inner service takes
    /// `Request<ReplayBody<B>>`.
    pub fn http_replay(self) -> RetryLayerBuilder<HttpReplay<HttpRetryable>> {
        self.policy(HttpReplay::new(HttpRetryable))
    }
}

impl<C0> RetryLayerBuilder<HttpPolicy<C0>> {
    /// Decides what failed with `classifier` instead of [`HttpRetryable`].
    pub fn classify<C>(self, classifier: C) -> RetryLayerBuilder<HttpPolicy<C>> {
        let methods = self.policy.methods;
        self.policy(HttpPolicy {
            classifier,
            methods,
        })
    }

    /// Also retries non-idempotent methods (POST, PATCH, ...) when the request carries an
    /// `Idempotency-Key` header.
    pub fn retry_with_idempotency_key(mut self) -> Self {
        self.policy.methods.idempotency_key = true;
        self
    }
}

impl<C0> RetryLayerBuilder<HttpReplay<C0>> {
    /// Decides what failed with `classifier` instead of [`HttpRetryable`].
    pub fn classify<C>(self, classifier: C) -> RetryLayerBuilder<HttpReplay<C>> {
        let (methods, limit) = (self.policy.methods, self.policy.limit);
        self.policy(HttpReplay {
            classifier,
            methods,
            limit,
        })
    }

    /// Also retries non-idempotent methods (POST, PATCH, ...) when the request carries an
    /// `Idempotency-Key` header.
    pub fn retry_with_idempotency_key(mut self) -> Self {
        self.policy.methods.idempotency_key = true;
        self
    }

    /// The most body bytes kept for a replay. Default 64 KiB ([`DEFAULT_REPLAY_LIMIT`]).
    pub fn replay_limit(mut self, bytes: usize) -> Self {
        self.policy.limit = bytes;
        self
    }
}
