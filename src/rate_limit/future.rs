//! The response future of [`RateLimit`](super::RateLimit).

use crate::error::RateLimited;
use pin_project_lite::pin_project;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::time::{Instant, Sleep};
use tower::BoxError;
use tower_service::Service;

pin_project! {
    /// Resolves to the inner service's response, or to a
    /// [`RateLimited`](crate::error::RateLimited) error.
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req>
    where
        S: Service<Req>,
    {
        Called { #[pin] future: S::Future },
        // Boxed, as the rejection below, so that the happy path's future stays as small as
        // the inner one; only waiting and rejected calls allocate.
        Waiting { waiting: Pin<Box<Waiting<S, Req>>> },
        Rejected { rejection: Option<BoxError> },
    }
}

pin_project! {
    struct Waiting<S, Req> {
        #[pin]
        sleep: Sleep,
        call: Option<(S, Req)>,
    }
}

impl<S: Service<Req>, Req> ResponseFuture<S, Req> {
    #[inline]
    pub(crate) fn called(future: S::Future) -> Self {
        Self {
            state: State::Called { future },
        }
    }

    #[cold]
    pub(crate) fn waiting(until: Instant, service: S, request: Req) -> Self {
        Self {
            state: State::Waiting {
                waiting: Box::pin(Waiting {
                    sleep: tokio::time::sleep_until(until),
                    call: Some((service, request)),
                }),
            },
        }
    }

    #[cold]
    pub(crate) fn rejected(rejection: RateLimited) -> Self {
        Self {
            state: State::Rejected {
                rejection: Some(rejection.into()),
            },
        }
    }
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            match this.state.as_mut().project() {
                StateProj::Called { future } => return future.poll(cx).map_err(Into::into),
                StateProj::Waiting { waiting } => {
                    let waiting = waiting.as_mut().project();
                    ready!(waiting.sleep.poll(cx));
                    let (mut service, request) =
                        waiting.call.take().expect("polled after completion");
                    let future = service.call(request);
                    this.state.set(State::Called { future });
                }
                StateProj::Rejected { rejection } => {
                    let rejection = rejection.take().expect("polled after completion");
                    return Poll::Ready(Err(rejection));
                }
            }
        }
    }
}

impl<S: Service<Req>, Req> fmt::Debug for ResponseFuture<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "called",
            State::Waiting { .. } => "waiting",
            State::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

#[cfg(feature = "http")]
pub use super::headers::HeadersFuture;
