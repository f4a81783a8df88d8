//! The response future of [`Chaos`](super::Chaos).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::BoxError;

use super::error::InjectedFault;

pin_project! {
    /// Resolves to the inner service's response, or to the fault drawn for the call.
    ///
    /// An injected delay runs first, before the inner future is first polled (so a lazy inner
    /// future, as hyper's client's is, sends its request after the delay). A hang never
    /// resolves; dropping the future ends it.
    pub struct ResponseFuture<F, T> {
        // Boxed, and only for a delayed call: the pass-through future stays small and
        // allocation-free.
        delay: Option<Pin<Box<Sleep>>>,
        #[pin]
        kind: Kind<F, T>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, T> {
        Call {
            #[pin]
            future: F,
        },
        Fail {
            fault: InjectedFault,
        },
        Respond {
            status: u16,
            make: fn(u16) -> T,
        },
        Hang,
    }
}

impl<F, T> ResponseFuture<F, T> {
    #[inline]
    pub(crate) fn pass(future: F) -> Self {
        Self {
            delay: None,
            kind: Kind::Call { future },
        }
    }

    pub(crate) fn call(delay: Option<Duration>, future: F) -> Self {
        Self {
            delay: delay.map(sleep),
            kind: Kind::Call { future },
        }
    }

    pub(crate) fn fail(delay: Option<Duration>, fault: InjectedFault) -> Self {
        Self {
            delay: delay.map(sleep),
            kind: Kind::Fail { fault },
        }
    }

    /// Answers `make(status)` after the delay.
    pub(crate) fn respond(delay: Option<Duration>, status: u16, make: fn(u16) -> T) -> Self {
        Self {
            delay: delay.map(sleep),
            kind: Kind::Respond { status, make },
        }
    }

    pub(crate) fn hang() -> Self {
        Self {
            delay: None,
            kind: Kind::Hang,
        }
    }
}

fn sleep(delay: Duration) -> Pin<Box<Sleep>> {
    Box::pin(tokio::time::sleep(delay))
}

impl<F, T, E> Future for ResponseFuture<F, T>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Some(delay) = this.delay {
            ready!(delay.as_mut().poll(cx));
            *this.delay = None;
        }
        match this.kind.project() {
            KindProj::Call { future } => future.poll(cx).map_err(Into::into),
            KindProj::Fail { fault } => Poll::Ready(Err((*fault).into())),
            KindProj::Respond { status, make } => Poll::Ready(Ok(make(*status))),
            // Nothing will wake this task for it: it ends when the future is dropped.
            KindProj::Hang => Poll::Pending,
        }
    }
}

impl<F, T> fmt::Debug for ResponseFuture<F, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Call { .. } => "call",
            Kind::Fail { .. } => "fail",
            Kind::Respond { .. } => "respond",
            Kind::Hang => "hang",
        };
        f.debug_struct("ResponseFuture")
            .field("delayed", &self.delay.is_some())
            .field("kind", &kind)
            .finish()
    }
}
