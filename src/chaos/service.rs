use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::BoxError;
use tower_service::Service;

use super::error::InjectedFault;
use super::future::ResponseFuture;
use super::handle::ChaosHandle;
use super::layer::{ChaosLayer, Generic};
use super::state::{Draw, Outcome, Shared};

/// Injects faults into the calls to its inner service: see [`crate::chaos`]. Built by
/// [`ChaosLayer`].
///
/// `poll_ready` is the inner service's readiness. A call whose drawn outcome is a fault does
/// not reach the inner service (its readiness is left for the next call).
///
/// # Clone
/// Clones share the switch, fault mix, random stream and counters of the layer value that
/// built the service.
pub struct Chaos<S, K = Generic> {
    inner: S,
    shared: Arc<Shared>,
    _kind: PhantomData<fn() -> K>,
}

impl<S: Clone, K> Clone for Chaos<S, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            _kind: PhantomData,
        }
    }
}

impl<S: fmt::Debug, K> fmt::Debug for Chaos<S, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chaos")
            .field("inner", &self.inner)
            .field("enabled", &self.shared.is_enabled())
            .finish()
    }
}

impl<S, K> Chaos<S, K> {
    /// Wraps `inner` in `layer`'s chaos (the same as `layer.layer(inner)`).
    pub fn new(inner: S, layer: &ChaosLayer<K>) -> Self {
        tower_layer::Layer::layer(layer, inner)
    }

    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Self {
            inner,
            shared,
            _kind: PhantomData,
        }
    }

    /// A handle on this service's chaos layer.
    pub fn handle(&self) -> ChaosHandle {
        ChaosHandle::new(Arc::clone(&self.shared))
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

impl<S, K> Chaos<S, K> {
    /// Plays a drawn outcome. `make` builds a status response: `None` for a generic layer,
    /// whose status probability is 0 (checked where the mix is set).
    #[inline]
    fn play<Req, T>(
        &mut self,
        req: Req,
        draw: Draw,
        make: Option<fn(u16) -> T>,
    ) -> ResponseFuture<S::Future, T>
    where
        S: Service<Req>,
    {
        let Draw { delay, outcome } = draw;
        match outcome {
            Outcome::Pass => ResponseFuture::call(delay, self.inner.call(req)),
            Outcome::Error => {
                tracing::debug!(target: "seawall::chaos", "injected an error");
                ResponseFuture::fail(delay, InjectedFault::error())
            }
            Outcome::Disconnect => {
                tracing::debug!(target: "seawall::chaos", "injected a dropped connection");
                ResponseFuture::fail(delay, InjectedFault::disconnect())
            }
            Outcome::Hang => {
                tracing::debug!(target: "seawall::chaos", "injected a hang");
                ResponseFuture::hang()
            }
            Outcome::Status(status) => match make {
                Some(make) => {
                    tracing::debug!(target: "seawall::chaos", status, "injected a status");
                    ResponseFuture::respond(delay, status, make)
                }
                None => {
                    debug_assert!(false, "a generic chaos layer drew a status");
                    ResponseFuture::call(delay, self.inner.call(req))
                }
            },
        }
    }
}

impl<S, Req> Service<Req> for Chaos<S, Generic>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S::Response>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let Some(draw) = self.shared.draw() else {
            return ResponseFuture::pass(self.inner.call(req));
        };
        self.play(req, draw, None)
    }
}

#[cfg(feature = "http")]
impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Chaos<S, super::layer::Http>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: Default,
{
    type Response = http::Response<ResBody>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, http::Response<ResBody>>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let Some(draw) = self.shared.draw() else {
            return ResponseFuture::pass(self.inner.call(req));
        };
        self.play(req, draw, Some(status_response::<ResBody>))
    }
}

/// A response of `status` (a valid code: it came from an `http::StatusCode`) with an empty
/// body.
#[cfg(feature = "http")]
fn status_response<B: Default>(status: u16) -> http::Response<B> {
    let mut response = http::Response::new(B::default());
    *response.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    response
}
