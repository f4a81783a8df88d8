//! The response future of [`Retry`](super::Retry).

use super::error::{AttemptTimedOut, DeadlineExceeded};
use super::handle::RetryEvent;
use super::policy::{Policy, Replay};
use super::shared::{Config, CoreRef};
use crate::error::Rejection;
use pin_project_lite::pin_project;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tower::BoxError;
use tower_service::Service;

pin_project! {
    /// Resolves to the first response or error that is not retried: a success, something the
    /// policy does not count as a failure, or the last failure once attempts, budget or
    /// deadline run out.
    pub struct ResponseFuture<P, S, Req>
    where
        P: Policy<Req, <S as Service<<P as Replay<Req>>::Request>>::Response>,
        S: Service<<P as Replay<Req>>::Request>,
    {
        #[pin]
        state: State<<S as Service<<P as Replay<Req>>::Request>>::Future, <P as Replay<Req>>::Request>,
        // A clone of the inner service for the retries; `None` when the request is not
        // retryable.
        service: Option<S>,
        policy: P,
        stash: Option<<P as Replay<Req>>::Stash>,
        core: CoreRef,
        // Attempts made so far, the one in flight included.
        attempt: u32,
        previous_delay: Option<Duration>,
        // When the call started, if there is a deadline.
        started: Option<Instant>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, R> {
        Calling { #[pin] future: F, #[pin] timer: Timer },
        Sleeping { #[pin] sleep: Sleep, request: Option<R> },
        Readying { request: Option<R> },
    }
}

pin_project! {
    #[project = TimerProj]
    enum Timer {
        Off,
        On { #[pin] sleep: Sleep, cause: Cause },
    }
}

#[derive(Debug, Clone, Copy)]
enum Cause {
    Attempt(Duration),
    Deadline(Duration),
}

impl Timer {
    /// The cut-off for one attempt: the per-attempt timeout or the deadline, whichever ends
    /// first. Reads the clock only when one of them is set.
    fn new(config: &Config, started: Option<Instant>) -> Self {
        let deadline = match (config.deadline, started) {
            (Some(d), Some(s)) => s.checked_add(d).map(|at| (at, d)),
            _ => None,
        };
        match (config.attempt_timeout, deadline) {
            (None, None) => Timer::Off,
            (Some(t), None) => Timer::On {
                sleep: tokio::time::sleep(t),
                cause: Cause::Attempt(t),
            },
            (None, Some((at, d))) => Timer::On {
                sleep: tokio::time::sleep_until(at),
                cause: Cause::Deadline(d),
            },
            (Some(t), Some((at, d))) => {
                let now = Instant::now();
                match now.checked_add(t) {
                    Some(end) if end < at => Timer::On {
                        sleep: tokio::time::sleep_until(end),
                        cause: Cause::Attempt(t),
                    },
                    _ => Timer::On {
                        sleep: tokio::time::sleep_until(at),
                        cause: Cause::Deadline(d),
                    },
                }
            }
        }
    }
}

impl<P, S, Req> ResponseFuture<P, S, Req>
where
    P: Policy<Req, <S as Service<<P as Replay<Req>>::Request>>::Response>,
    S: Service<<P as Replay<Req>>::Request>,
{
    pub(crate) fn new(
        future: <S as Service<<P as Replay<Req>>::Request>>::Future,
        service: Option<S>,
        policy: P,
        stash: Option<<P as Replay<Req>>::Stash>,
        core: CoreRef,
    ) -> Self {
        let config = &core.config;
        let started = config.deadline.map(|_| Instant::now());
        let timer = if config.attempt_timeout.is_none() && started.is_none() {
            Timer::Off
        } else {
            Timer::new(config, started)
        };
        Self {
            state: State::Calling { future, timer },
            service,
            policy,
            stash,
            core,
            attempt: 1,
            previous_delay: None,
            started,
        }
    }
}

impl<P, S, Req> Future for ResponseFuture<P, S, Req>
where
    P: Policy<Req, <S as Service<<P as Replay<Req>>::Request>>::Response>,
    S: Service<<P as Replay<Req>>::Request>,
    <S as Service<<P as Replay<Req>>::Request>>::Error: Into<BoxError>,
{
    type Output = Result<<S as Service<<P as Replay<Req>>::Request>>::Response, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            match this.state.as_mut().project() {
                StateProj::Calling { future, timer } => {
                    let result: Result<<S as Service<<P as Replay<Req>>::Request>>::Response, BoxError> = match future.poll(cx) {
                        Poll::Ready(result) => result.map_err(Into::into),
                        Poll::Pending => match timer.project() {
                            TimerProj::Off => return Poll::Pending,
                            TimerProj::On { sleep, cause } => {
                                ready!(sleep.poll(cx));
                                match *cause {
                                    Cause::Attempt(t) => Err(AttemptTimedOut::new(t).into()),
                                    Cause::Deadline(d) => {
                                        tracing::debug!(
                                            target: "seawall::retry",
                                            attempt = *this.attempt,
                                            deadline_ms = d.as_millis() as u64,
                                            "deadline passed during an attempt; giving up"
                                        );
                                        return Poll::Ready(Err(DeadlineExceeded::new(d).into()));
                                    }
                                }
                            }
                        },
                    };
                    let Some(stash) = this.stash.as_mut() else {
                        return Poll::Ready(result);
                    };
                    if !this.policy.classify(&result).is_failure() {
                        return Poll::Ready(result);
                    }
                    let next = decide(
                        &*this.policy,
                        stash,
                        this.core,
                        *this.attempt,
                        this.previous_delay,
                        *this.started,
                        &result,
                    );
                    match next {
                        None => return Poll::Ready(result),
                        Some((delay, request)) => this.state.set(State::Sleeping {
                            sleep: tokio::time::sleep(delay),
                            request: Some(request),
                        }),
                    }
                }
                StateProj::Sleeping { sleep, request } => {
                    ready!(sleep.poll(cx));
                    let request = request.take();
                    this.state.set(State::Readying { request });
                }
                StateProj::Readying { request } => {
                    let service = this
                        .service
                        .as_mut()
                        .expect("a retried request has a service");
                    if let Err(e) = ready!(service.poll_ready(cx)) {
                        return Poll::Ready(Err(e.into()));
                    }
                    let request = request.take().expect("polled after completion");
                    let future = service.call(request);
                    *this.attempt += 1;
                    let timer = Timer::new(&this.core.config, *this.started);
                    this.state.set(State::Calling { future, timer });
                }
            }
        }
    }
}

/// Whether and when to retry a failed attempt: the delay and the next request, or `None` to
/// return the last result. Runs only on the retry path.
fn decide<P, Req, Res>(
    policy: &P,
    stash: &mut <P as Replay<Req>>::Stash,
    core: &CoreRef,
    attempt: u32,
    previous_delay: &mut Option<Duration>,
    started: Option<Instant>,
    result: &Result<Res, BoxError>,
) -> Option<(Duration, <P as Replay<Req>>::Request)>
where
    P: Policy<Req, Res>,
{
    let config = &core.config;
    let metrics = &core.metrics;
    if attempt >= config.max_attempts {
        metrics.exhausted.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            target: "seawall::retry",
            attempt,
            reason = %policy.reason(result),
            "attempts exhausted; returning the last result"
        );
        return None;
    }
    let deadline_at = match (config.deadline, started) {
        (Some(d), Some(s)) => s.checked_add(d),
        _ => None,
    };
    let hint = policy.retry_after(result);
    let circuit_open = matches!(result, Err(e) if matches!(Rejection::find(&**e), Some(Rejection::CircuitOpen(_))));
    let delay = if circuit_open {
        // Not retried blindly: only when the breaker says when, and that fits.
        let now = Instant::now();
        let room = match deadline_at {
            Some(at) => at.saturating_duration_since(now),
            None => config.max_retry_after,
        };
        match hint {
            Some(wait) if wait < room => wait,
            _ => {
                tracing::debug!(
                    target: "seawall::retry",
                    attempt,
                    retry_after_ms = hint.map(|h| h.as_millis() as u64),
                    "circuit open and its retry_after does not fit; not retried"
                );
                return None;
            }
        }
    } else {
        let mut rng = core.seeds.rng();
        let backoff = config.backoff.delay(attempt - 1, *previous_delay, &mut rng);
        *previous_delay = Some(backoff);
        match hint {
            Some(h) => backoff.max(h.min(config.max_retry_after)),
            None => backoff,
        }
    };
    if let Some(at) = deadline_at {
        let fits = Instant::now().checked_add(delay).is_some_and(|end| end < at);
        if !fits {
            tracing::debug!(
                target: "seawall::retry",
                attempt,
                delay_ms = delay.as_millis() as u64,
                "the next attempt would start after the deadline; returning the last result"
            );
            return None;
        }
    }
    let request = policy.replay(stash)?;
    if let Some(budget) = &core.budget {
        if !budget.try_withdraw() {
            metrics.budget_rejections.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                target: "seawall::retry",
                attempt,
                reason = %policy.reason(result),
                "retry budget exhausted; returning the last result"
            );
            return None;
        }
    }
    metrics.retries.fetch_add(1, Ordering::Relaxed);
    let reason = policy.reason(result);
    tracing::debug!(
        target: "seawall::retry",
        attempt,
        delay_ms = delay.as_millis() as u64,
        reason = %reason,
        "retrying"
    );
    if let Some(hook) = &core.on_retry {
        hook(&RetryEvent {
            attempt,
            delay,
            reason,
            server_hint: hint,
        });
    }
    Some((delay, request))
}

impl<P, S, Req> fmt::Debug for ResponseFuture<P, S, Req>
where
    P: Policy<Req, <S as Service<<P as Replay<Req>>::Request>>::Response>,
    S: Service<<P as Replay<Req>>::Request>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("attempt", &self.attempt)
            .field("retryable", &self.stash.is_some())
            .finish_non_exhaustive()
    }
}
