//! The server side: `CorrelationIdLayer` and the `SetCorrelationId` service.

use http::header::HeaderName;
use http::{HeaderValue, Request, Response};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

use super::future::ResponseFuture;
use super::generate::{MakeCorrelationId, MakeUuidV4};
use super::id::{CharSet, CorrelationId, Escaped, Policy, DEFAULT_MAX_LEN, MAX_LEN_LIMIT};
use super::X_CORRELATION_ID;
use crate::error::ConfigError;

/// The most header names a layer reads.
const MAX_HEADER_NAMES: usize = 8;

/// Gives every request a valid correlation id: see the [module docs](super).
///
/// # Defaults
///
/// | setting | default | anchor |
/// |---|---|---|
/// | [`header_names`](Builder::header_names) | `x-correlation-id` | the usual name for an id that crosses services; add `x-request-id` (tower-http's default) as a second name to accept both |
/// | [`max_len`](Builder::max_len) | 128 bytes | room for a UUID (36), a ULID (26) or a `traceparent` (55) with a prefix |
/// | [`allowed_chars`](Builder::allowed_chars) | [`CharSet::token`] | RFC 9110 §5.6.2 `tchar`: visible ASCII without separators |
/// | [`make_id`](Builder::make_id) | [`MakeUuidV4`] | RFC 9562 UUID version 4 |
/// | [`response_extension`](Builder::response_extension) | off | tower-http's `SetRequestId` puts its id in the request's extensions only; on a response it costs two allocations |
///
/// # Clone
///
/// Every service this layer value builds, and every clone of them, shares one configuration and
/// one [`CorrelationIdHandle`]. The generator is cloned into each service.
#[derive(Debug, Clone)]
pub struct CorrelationIdLayer<M = MakeUuidV4> {
    shared: Arc<Shared>,
    make_id: M,
}

#[derive(Debug)]
struct Shared {
    /// Never empty; the first is the one the id travels under.
    names: Arc<[HeaderName]>,
    policy: Policy,
    rejected: AtomicU64,
    /// Whether the id goes into the response's extensions too.
    extension: bool,
}

impl CorrelationIdLayer {
    /// A layer with the defaults: `x-correlation-id`, at most 128 token characters, UUID v4.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                names: Arc::new([X_CORRELATION_ID]),
                policy: Policy::DEFAULT,
                rejected: AtomicU64::new(0),
                extension: false,
            }),
            make_id: MakeUuidV4,
        }
    }

    /// A builder starting from the defaults.
    pub fn builder() -> Builder {
        Builder {
            names: vec![X_CORRELATION_ID],
            max_len: DEFAULT_MAX_LEN,
            chars: CharSet::token(),
            make_id: MakeUuidV4,
            response_extension: false,
        }
    }
}

impl Default for CorrelationIdLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<M> CorrelationIdLayer<M> {
    /// A handle on the state every service of this layer shares.
    pub fn handle(&self) -> CorrelationIdHandle {
        CorrelationIdHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S, M: Clone> Layer<S> for CorrelationIdLayer<M> {
    type Service = SetCorrelationId<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        SetCorrelationId {
            inner,
            make_id: self.make_id.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Builds a [`CorrelationIdLayer`]; made by [`CorrelationIdLayer::builder`].
#[derive(Debug, Clone)]
pub struct Builder<M = MakeUuidV4> {
    names: Vec<HeaderName>,
    max_len: usize,
    chars: CharSet,
    make_id: M,
    response_extension: bool,
}

impl<M> Builder<M> {
    /// Reads the id from this one header (default `x-correlation-id`).
    pub fn header_name(mut self, name: HeaderName) -> Self {
        self.names = vec![name];
        self
    }

    /// Reads the id from these headers, in order of preference: the first valid value wins
    /// (the first name's values first, each name's values in the order received). Whichever
    /// name it came under, the id is passed on under the first name only, as its only value,
    /// and echoed on the response under the first name only: the handler and the client see
    /// one id under one name. At most 8 names, no duplicates.
    ///
    /// Names made with `HeaderName::from_static` cost nothing to clone; others cost an atomic
    /// increment per request.
    pub fn header_names(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.names = names.into_iter().collect();
        self
    }

    /// The longest incoming id accepted, in bytes, `1..=1024` (default 128).
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len;
        self
    }

    /// The characters an incoming id may be made of (default [`CharSet::token`]).
    pub fn allowed_chars(mut self, chars: CharSet) -> Self {
        self.chars = chars;
        self
    }

    /// The generator for requests without a valid id (default [`MakeUuidV4`]).
    pub fn make_id<M2: MakeCorrelationId + Clone>(self, make_id: M2) -> Builder<M2> {
        Builder {
            names: self.names,
            max_len: self.max_len,
            chars: self.chars,
            make_id,
            response_extension: self.response_extension,
        }
    }

    /// Whether the id also goes into the response's extensions, as a [`CorrelationId`], so
    /// that layers outside this one (access logs, metrics) read it without parsing a header.
    /// Default off. The response's extension map is usually empty, so this costs its first
    /// allocations (the map and the boxed id): about 80 ns a request in
    /// `benches/correlation.rs`, enough to make the layer cost more than tower-http's on a
    /// routed request. Turn it on when an outer layer reads the id.
    ///
    /// # Example
    ///
    /// ```
    /// use http::{Request, Response};
    /// use seawall::correlation::{CorrelationId, CorrelationIdLayer};
    /// use tower::{service_fn, BoxError, Layer, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// let layer = CorrelationIdLayer::builder().response_extension(true).build()?;
    /// let svc = layer.layer(service_fn(|_: Request<()>| async {
    ///     Ok::<_, BoxError>(Response::new(()))
    /// }));
    /// let req = Request::builder().header("x-correlation-id", "order-42").body(())?;
    /// let res = svc.oneshot(req).await?;
    /// assert_eq!(res.extensions().get::<CorrelationId>().unwrap().as_str(), "order-42");
    /// # Ok(())
    /// # }
    /// ```
    pub fn response_extension(mut self, on: bool) -> Self {
        self.response_extension = on;
        self
    }

    /// Checks the settings and builds the layer.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field when there is no header name, more than 8, a name
    /// given twice, or `max_len` outside `1..=1024`.
    pub fn build(self) -> Result<CorrelationIdLayer<M>, ConfigError> {
        const LAYER: &str = "correlation";
        if self.names.is_empty() || self.names.len() > MAX_HEADER_NAMES {
            return Err(ConfigError::new(
                LAYER,
                "header_names",
                &self.names,
                "1 to 8 names",
            ));
        }
        for (i, name) in self.names.iter().enumerate() {
            if self.names[..i].contains(name) {
                return Err(ConfigError::new(
                    LAYER,
                    "header_names",
                    &self.names,
                    "no name twice",
                ));
            }
        }
        if !(1..=MAX_LEN_LIMIT).contains(&self.max_len) {
            return Err(ConfigError::new(LAYER, "max_len", self.max_len, "1..=1024"));
        }
        Ok(CorrelationIdLayer {
            shared: Arc::new(Shared {
                names: self.names.into(),
                policy: Policy {
                    max_len: self.max_len,
                    chars: self.chars,
                },
                rejected: AtomicU64::new(0),
                extension: self.response_extension,
            }),
            make_id: self.make_id,
        })
    }
}

/// Counters shared by every service of one [`CorrelationIdLayer`]; from
/// [`CorrelationIdLayer::handle`] or [`SetCorrelationId::handle`].
///
/// Only refusals are counted: they are rare, so the counter adds no shared write to the
/// common path.
#[derive(Debug, Clone)]
pub struct CorrelationIdHandle {
    shared: Arc<Shared>,
}

impl CorrelationIdHandle {
    /// How many incoming header values were dropped so far: refused as invalid, or valid but
    /// not the one chosen (a second, different value of a name, or a value under a later name).
    /// A repeat of the chosen id is not counted.
    pub fn rejected(&self) -> u64 {
        self.shared.rejected.load(Ordering::Relaxed)
    }

    /// The header names read, in order of preference.
    pub fn header_names(&self) -> &[HeaderName] {
        &self.shared.names
    }
}

/// Gives every request a valid correlation id, scopes the inner call with it and echoes it on
/// the response: see the [module docs](super). Built by [`CorrelationIdLayer`].
#[derive(Debug, Clone)]
pub struct SetCorrelationId<S, M = MakeUuidV4> {
    inner: S,
    make_id: M,
    shared: Arc<Shared>,
}

impl<S> SetCorrelationId<S> {
    /// Wraps `inner` with the default settings.
    pub fn new(inner: S) -> Self {
        CorrelationIdLayer::new().layer(inner)
    }
}

impl<S, M> SetCorrelationId<S, M> {
    /// A handle on the state shared with the layer that built this service.
    pub fn handle(&self) -> CorrelationIdHandle {
        CorrelationIdHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, M> SetCorrelationId<S, M>
where
    M: MakeCorrelationId,
{
    /// The request's id, after the request's headers have been made to agree with it. The id
    /// shares the bytes of the request's header value, so that it becomes the echo without a
    /// copy; a clone of it for the extensions is a copy.
    #[inline]
    fn resolve<B>(&mut self, req: &mut Request<B>) -> CorrelationId {
        let shared = &*self.shared;
        let headers = req.headers();
        // The common case: one valid value, under the first name, and no other name present.
        let mut values = headers.get_all(&shared.names[0]).iter();
        if let (Some(value), None) = (values.next(), values.next()) {
            if shared.policy.check(value.as_bytes()).is_ok()
                && shared.names[1..].iter().all(|n| !headers.contains_key(n))
            {
                return CorrelationId::from_checked(value.clone());
            }
        }
        self.resolve_slow(req)
    }

    /// No value, several, or one that is invalid or under another name: the id is the first
    /// valid value (names in order of preference, each name's values in the order received),
    /// or a new one; every other value of every name is dropped, and the id is left as the
    /// only value of the first name.
    #[inline(never)]
    fn resolve_slow<B>(&mut self, req: &mut Request<B>) -> CorrelationId {
        let shared = &*self.shared;
        let found = shared.names.iter().find_map(|name| {
            req.headers()
                .get_all(name)
                .iter()
                .find(|v| shared.policy.check(v.as_bytes()).is_ok())
                .cloned()
        });
        let id = CorrelationId::from_checked(match found {
            Some(value) => value,
            None => self.make_id.make_correlation_id(req).into_header_value(),
        });
        let headers = req.headers_mut();
        for name in shared.names.iter() {
            if let http::header::Entry::Occupied(entry) = headers.entry(name) {
                for value in entry.remove_entry_mult().1 {
                    drop_value(shared, name, &value, &id);
                }
            }
        }
        headers.insert(shared.names[0].clone(), id.to_header_value());
        id
    }
}

/// Logs (and counts) an incoming value the request no longer carries because `id` was chosen:
/// the handler and anything it forwards the headers to only ever see that id. A copy of the id
/// itself goes silently.
#[cold]
fn drop_value(shared: &Shared, name: &HeaderName, value: &HeaderValue, id: &CorrelationId) {
    let bytes = value.as_bytes();
    if bytes == id.as_str().as_bytes() {
        return;
    }
    shared.rejected.fetch_add(1, Ordering::Relaxed);
    match shared.policy.check(bytes) {
        Err(reason) => tracing::debug!(
            target: "seawall::correlation",
            header = %name,
            rejected = %Escaped(bytes),
            len = bytes.len(),
            %reason,
            replacement = %id,
            "invalid incoming correlation id replaced",
        ),
        Ok(()) => tracing::debug!(
            target: "seawall::correlation",
            header = %name,
            dropped = %Escaped(bytes),
            kept = %id,
            "conflicting incoming correlation id dropped",
        ),
    }
}

impl<S, M, B, ResB> Service<Request<B>> for SetCorrelationId<S, M>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    M: MakeCorrelationId,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let id = self.resolve(&mut req);
        req.extensions_mut().insert(id.clone());
        let span = super::span_if_wanted(&id);
        // The inner `call` runs in the span, so the events of layers that decide there (a
        // rejection) carry the id. It does not run with the id current: that would cost two
        // swaps of a thread-local per request, for services that do their work in `call`
        // rather than in their future; they find the id in the request's extensions.
        let future = {
            let _entered = span.as_ref().and_then(super::enter);
            self.inner.call(req)
        };
        let echo = self.shared.names[0].clone();
        let others = (self.shared.names.len() > 1).then(|| Arc::clone(&self.shared.names));
        let extension = self.shared.extension;
        ResponseFuture::new(id, future, span, echo, others, extension)
    }
}
