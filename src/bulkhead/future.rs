//! The response future of [`Bulkhead`](super::Bulkhead).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::BoxError;
use tower_service::Service;

use super::state::{Node, Permit, Shared};
use crate::error::BulkheadFull;

pin_project! {
    /// Resolves to the inner service's response, holding the call's permit until then.
    ///
    /// In wait mode a call that found the bulkhead full first waits here for a permit (first
    /// come, first served, up to the maximum wait), then calls the inner service. Dropping the
    /// future at any point gives back its permit or its place in the queue.
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
        Called {
            #[pin]
            future: S::Future,
            permit: Option<Permit>,
        },
        Waiting {
            wait: Waiting<S, Req>,
        },
        Rejected {
            // Boxed at once (it would be at the first poll anyway): pointer-sized fields keep
            // this variant from splitting the happy path's fields in the enum's layout.
            error: Option<BoxError>,
        },
    }
}

/// A call waiting for a permit, boxed: the happy path's future stays small.
pub(crate) struct Waiting<S, Req>(Box<Wait<S, Req>>);

impl<S, Req> Waiting<S, Req> {
    pub(crate) fn new(
        shared: Arc<Shared>,
        node: Arc<Node>,
        service: S,
        request: Req,
        deadline: Instant,
    ) -> Self {
        Self(Box::new(Wait {
            shared,
            node,
            service,
            request: Some(request),
            deadline,
            sleep: None,
        }))
    }
}

/// A call waiting for a permit: the readied service and the request, kept until then.
struct Wait<S, Req> {
    shared: Arc<Shared>,
    node: Arc<Node>,
    service: S,
    request: Option<Req>,
    deadline: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<S, Req> Wait<S, Req> {
    fn poll_permit(&mut self, cx: &mut Context<'_>) -> Poll<Result<(Permit, Req), BulkheadFull>> {
        if !self.node.poll_granted(cx.waker()) {
            let deadline = self.deadline;
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
            ready!(sleep.as_mut().poll(cx));
            if !self.shared.expire(&self.node) {
                self.request = None; // out of the queue: nothing for Drop to do
                return Poll::Ready(Err(self.shared.reject("max wait expired")));
            }
        }
        let request = self.request.take().expect("polled after completion");
        Poll::Ready(Ok((self.shared.granted_permit(), request)))
    }
}

impl<S, Req> Drop for Wait<S, Req> {
    fn drop(&mut self) {
        // Still waiting, or granted a permit never used: leave the queue or give it back.
        if self.request.is_some() {
            self.shared.abandon(&self.node);
        }
    }
}

impl<S, Req> ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    #[inline]
    pub(crate) fn called(future: S::Future, permit: Permit) -> Self {
        Self {
            state: State::Called {
                future,
                permit: Some(permit),
            },
        }
    }

    pub(crate) fn rejected(error: BulkheadFull) -> Self {
        Self {
            state: State::Rejected {
                error: Some(error.into()),
            },
        }
    }

    pub(crate) fn waiting(wait: Waiting<S, Req>) -> Self {
        Self {
            state: State::Waiting { wait },
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
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            if let StateProj::Called { future, permit } = this.state.as_mut().project() {
                let output = ready!(future.poll(cx));
                // Give the permit back as soon as the call is over.
                drop(permit.take());
                return Poll::Ready(output.map_err(Into::into));
            }
            // Rejected (an error), still waiting (pending), or called now: then the loop polls
            // the inner future at once.
            ready!(poll_not_called(this.state.as_mut(), cx))?;
        }
    }
}

/// The states other than `Called`, out of line so that the happy path's `poll` stays small:
/// a rejection, or a wait that ends with the call made (and the state moved to `Called`).
#[inline(never)]
fn poll_not_called<S, Req>(
    mut state: Pin<&mut State<S, Req>>,
    cx: &mut Context<'_>,
) -> Poll<Result<(), BoxError>>
where
    S: Service<Req>,
{
    let (future, permit) = match state.as_mut().project() {
        StateProj::Called { .. } => return Poll::Ready(Ok(())),
        StateProj::Rejected { error } => {
            let error = error.take().expect("polled after completion");
            return Poll::Ready(Err(error));
        }
        StateProj::Waiting { wait } => {
            let wait = &mut *wait.0;
            let (permit, request) = ready!(wait.poll_permit(cx))?;
            (wait.service.call(request), permit)
        }
    };
    state.set(State::Called {
        future,
        permit: Some(permit),
    });
    Poll::Ready(Ok(()))
}

impl<S, Req> fmt::Debug for ResponseFuture<S, Req>
where
    S: Service<Req>,
{
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
