//! The server side: `CorrelationIdLayer` and the `SetCorrelationId` service.

use http::header::HeaderName;
use http::{Request, Response};
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
    names: Box<[HeaderName]>,
    policy: Policy,
    rejected: AtomicU64,
}

impl CorrelationIdLayer {
    /// A layer with the defaults: `x-correlation-id`, at most 128 token characters, UUID v4.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                names: Box::new([X_CORRELATION_ID]),
                policy: Policy::DEFAULT,
                rejected: AtomicU64::new(0),
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
}

impl<M> Builder<M> {
    /// Reads the id from this one header (default `x-correlation-id`).
    pub fn header_name(mut self, name: HeaderName) -> Self {
        self.names = vec![name];
        self
    }

    /// Reads the id from these headers, in order of preference: the first one present with a
    /// valid value wins. A generated id goes under the first name. At most 8 names, no
    /// duplicates.
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
        }
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
                names: self.names.into_boxed_slice(),
                policy: Policy {
                    max_len: self.max_len,
                    chars: self.chars,
                },
                rejected: AtomicU64::new(0),
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
    /// How many incoming header values were refused and replaced so far.
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
    /// The request's id and the header it lives under, after the request's headers have been
    /// made to agree with it. The id shares the bytes of the request's header value, so that
    /// it becomes the echo without a copy; a clone of it for the extensions is a copy.
    #[inline]
    fn resolve<B>(&mut self, req: &mut Request<B>) -> (CorrelationId, usize) {
        let shared = &*self.shared;
        let mut refused = false;
        let mut found = None;
        for (i, name) in shared.names.iter().enumerate() {
            if let Some(value) = req.headers().get(name) {
                if shared.policy.check(value.as_bytes()).is_ok() {
                    found = Some((CorrelationId::from_checked(value.clone()), i));
                    break;
                }
                refused = true;
            }
        }
        let (id, at, generated) = match found {
            Some((id, at)) => (id, at, false),
            None => {
                let value = self.make_id.make_correlation_id(req).into_header_value();
                (CorrelationId::from_checked(value), 0, true)
            }
        };
        if refused {
            replace_refused(shared, req, &id);
        }
        if generated {
            req.headers_mut()
                .insert(shared.names[0].clone(), id.to_header_value());
        }
        (id, at)
    }
}

/// Logs and overwrites every refused value with the request's id: the handler and anything it
/// forwards the headers to only ever see a valid id.
#[cold]
#[inline(never)]
fn replace_refused<B>(shared: &Shared, req: &mut Request<B>, id: &CorrelationId) {
    for name in shared.names.iter() {
        let Some(value) = req.headers().get(name) else {
            continue;
        };
        let bytes = value.as_bytes();
        let Err(reason) = shared.policy.check(bytes) else {
            continue;
        };
        shared.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            target: "seawall::correlation",
            header = %name,
            rejected = %Escaped(bytes),
            len = bytes.len(),
            %reason,
            replacement = %id,
            "invalid incoming correlation id replaced",
        );
        req.headers_mut().insert(name.clone(), id.to_header_value());
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
        let (id, at) = self.resolve(&mut req);
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
        let echo = self.shared.names[at].clone();
        ResponseFuture::new(id, future, span, echo)
    }
}
