//! The response future of [`CircuitBreaker`](super::CircuitBreaker).

use super::layer::{give_back, Token};
use super::state::Admission;
use crate::classify::{Classify, Outcome};
use crate::error::CircuitOpen;
use pin_project_lite::pin_project;
use std::fmt;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::time::Instant;
use tower::BoxError;

/// Holds a call's place in the breaker: records its outcome, and gives a probe slot back if
/// the call is dropped before it ends.
///
/// The token is taken out when the outcome is recorded and handed back to the thread at once,
/// so a finished call's drop is one inline test; the token is in a `ManuallyDrop` so that the
/// compiler adds no drop glue of its own (every path takes it out: [`Guard::finish`] or
/// [`Guard::abandon`]).
pub(crate) struct Guard {
    // `Some` until the call's outcome is recorded or the call is dropped.
    token: ManuallyDrop<Option<Arc<Token>>>,
    admission: Admission,
}

impl Guard {
    #[inline]
    pub(crate) fn new(token: Arc<Token>, admission: Admission) -> Self {
        Self {
            token: ManuallyDrop::new(Some(token)),
            admission,
        }
    }

    /// Whether the call's outcome is still to be recorded.
    #[inline]
    fn is_live(&self) -> bool {
        self.token.is_some()
    }

    /// Whether calls are timed (slow-call detection is on); `false` once finished.
    #[inline]
    fn times_calls(&self) -> bool {
        self.token
            .as_deref()
            .is_some_and(|token| token.core.times_calls())
    }

    /// Records the outcome the first time; does nothing after.
    #[inline(always)]
    fn finish(&mut self, outcome: impl FnOnce() -> Outcome, started: Option<Instant>) {
        if let Some(token) = self.token.take() {
            token.core.finish(self.admission, outcome(), started);
            give_back(token);
        }
    }

    /// A call dropped before its outcome: gives its probe slot back, if it holds one.
    #[cold]
    #[inline(never)]
    fn abandon(&mut self) {
        if let Some(token) = self.token.take() {
            if let Admission::Probe(epoch) = self.admission {
                token.core.release_probe(epoch);
            }
            give_back(token);
        }
    }
}

impl Drop for Guard {
    #[inline(always)]
    fn drop(&mut self) {
        if self.is_live() {
            self.abandon();
        }
    }
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("admission", &self.admission)
            .field("done", &!self.is_live())
            .finish()
    }
}

pin_project! {
    /// Resolves to the inner service's response, or to its error (boxed), or to
    /// [`CircuitOpen`] when the breaker rejected the call.
    #[derive(Debug)]
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F, C>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<F, C> {
        Called {
            #[pin]
            future: F,
            guard: Guard,
            classifier: C,
            // When the call was first seen waiting (slow-call detection only).
            started: Option<Instant>,
        },
        Rejected {
            error: Option<CircuitOpen>,
        },
    }
}

impl<F, C> ResponseFuture<F, C> {
    #[inline]
    pub(crate) fn called(future: F, guard: Guard, classifier: C) -> Self {
        Self {
            kind: Kind::Called {
                future,
                guard,
                classifier,
                started: None,
            },
        }
    }

    pub(crate) fn rejected(error: CircuitOpen) -> Self {
        Self {
            kind: Kind::Rejected { error: Some(error) },
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, E>,
{
    type Output = Result<T, BoxError>;

    // Always inlined: the success path is the inner poll, one load of the state word and one
    // plain counter store; everything else in `Core::finish` is out of line.
    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Called {
                future,
                guard,
                classifier,
                started,
            } => {
                let result = match future.poll(cx) {
                    Poll::Ready(result) => result,
                    Poll::Pending => {
                        if started.is_none() && guard.times_calls() {
                            *started = Some(Instant::now());
                        }
                        return Poll::Pending;
                    }
                };
                guard.finish(|| classifier.classify(&result), *started);
                Poll::Ready(result.map_err(Into::into))
            }
            KindProj::Rejected { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion")
                .into())),
        }
    }
}
