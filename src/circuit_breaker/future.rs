//! The response future of [`CircuitBreaker`](super::CircuitBreaker).

use super::layer::{give_back, Token};
use super::state::Admission;
use crate::classify::{Classify, Outcome};
use crate::error::CircuitOpen;
use pin_project_lite::pin_project;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::time::Instant;
use tower::BoxError;

/// Holds a call's place in the breaker: records its outcome, and gives a probe slot back if
/// the call is dropped before it ends.
pub(crate) struct Guard {
    // `Some` until dropped.
    token: Option<Arc<Token>>,
    admission: Admission,
    done: bool,
}

impl Guard {
    #[inline]
    pub(crate) fn new(token: Arc<Token>, admission: Admission) -> Self {
        Self {
            token: Some(token),
            admission,
            done: false,
        }
    }

    #[inline]
    fn token(&self) -> &Token {
        self.token.as_deref().expect("a live guard has its token")
    }

    #[inline]
    fn times_calls(&self) -> bool {
        self.token().core.times_calls()
    }

    #[inline]
    fn finish(&mut self, outcome: Outcome, started: Option<Instant>) {
        self.done = true;
        let token = self.token();
        token
            .core
            .finish(token.shard, self.admission, outcome, started);
    }
}

impl Drop for Guard {
    #[inline]
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            if !self.done {
                if let Admission::Probe(epoch) = self.admission {
                    token.core.release_probe(epoch);
                }
            }
            give_back(token);
        }
    }
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("admission", &self.admission)
            .field("done", &self.done)
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

    #[inline]
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
                        if started.is_none() && !guard.done && guard.times_calls() {
                            *started = Some(Instant::now());
                        }
                        return Poll::Pending;
                    }
                };
                if !guard.done {
                    let outcome = classifier.classify(&result);
                    guard.finish(outcome, *started);
                }
                Poll::Ready(result.map_err(Into::into))
            }
            KindProj::Rejected { error } => Poll::Ready(Err(error
                .take()
                .expect("ResponseFuture polled after completion")
                .into())),
        }
    }
}
