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
        // The other two states are one thin pointer each, so that the happy path's future is
        // the inner one plus at most a tag (none when the inner future has a spare niche);
        // only waiting and rejected calls allocate.
        Waiting { waiting: Pin<Box<Waiting<S, Req>>> },
        Rejected { rejection: Option<Box<RateLimited>> },
    }
}

pin_project! {
    /// A call waiting for its booked slot, then calling the service it was readied on.
    pub(crate) struct Waiting<S, Req> {
        #[pin]
        sleep: Sleep,
        call: Option<(S, Req)>,
    }
}

impl<S, Req> Waiting<S, Req> {
    /// Boxed: the happy path's future does not carry a `Sleep`.
    #[cold]
    #[inline(never)]
    pub(crate) fn boxed(until: Instant, service: S, request: Req) -> Pin<Box<Self>> {
        Box::pin(Waiting {
            sleep: tokio::time::sleep_until(until),
            call: Some((service, request)),
        })
    }
}

impl<S: Service<Req>, Req> ResponseFuture<S, Req> {
    #[inline]
    pub(crate) fn called(future: S::Future) -> Self {
        Self {
            state: State::Called { future },
        }
    }

    // The rare states are built from one pointer each, inline: every arm of `call` then
    // hands back its future in registers, with no copy through the stack.
    #[inline]
    pub(crate) fn waiting(waiting: Pin<Box<Waiting<S, Req>>>) -> Self {
        Self {
            state: State::Waiting { waiting },
        }
    }

    #[inline]
    pub(crate) fn rejected(rejection: Box<RateLimited>) -> Self {
        Self {
            state: State::Rejected {
                rejection: Some(rejection),
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
                    return Poll::Ready(Err(rejection as BoxError));
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;
    use std::future::Ready;
    use std::mem::size_of;

    type Inner = tower::util::ServiceFn<fn(u64) -> Ready<Result<u64, Infallible>>>;

    #[test]
    fn the_happy_path_future_is_no_bigger_than_the_inner_one() {
        // The inner `Ready` has a spare niche in its tag, which holds ours: the rare states
        // are one thin pointer each, so they fit beside it.
        assert_eq!(
            size_of::<ResponseFuture<Inner, u64>>(),
            size_of::<Ready<Result<u64, Infallible>>>()
        );
    }
}
