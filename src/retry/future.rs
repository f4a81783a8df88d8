//! The response future of [`Retry`](super::Retry).

use super::error::{AttemptTimedOut, DeadlineExceeded};
use super::handle::RetryEvent;
use super::policy::{Policy, Replay};
use super::shared::{Config, CoreRef};
use crate::error::Rejection;
use crate::events::EventKind;
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
        // Timers and retry bookkeeping, boxed and built only when a timeout or deadline is set
        // or a retry happens: a `tokio::time::Sleep` is over a hundred bytes, and a future that
        // carries one inline is copied with a `memmove` call at every move, which cost the
        // success path more than everything else in it.
        extra: Option<Pin<Box<Extra>>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, R> {
        Calling { #[pin] future: F },
        Sleeping { request: Option<R> },
        Readying { request: Option<R> },
    }
}

pin_project! {
    /// Timers and retry bookkeeping of one call.
    pub(crate) struct Extra {
        // The backoff sleep, or the cut-off of the attempt in flight when `armed`.
        #[pin]
        sleep: Sleep,
        // What the sleep means while an attempt is in flight; `None`: no cut-off.
        armed: Option<Cause>,
        // When the whole call must end, with the configured deadline.
        deadline: Option<(Instant, Duration)>,
        // Attempts made so far, the one in flight included.
        attempt: u32,
        previous_delay: Option<Duration>,
    }
}

#[derive(Debug, Clone, Copy)]
enum Cause {
    Attempt(Duration),
    Deadline(Duration),
}

impl Extra {
    /// Bookkeeping for a call that started now.
    fn new(config: &Config) -> Pin<Box<Self>> {
        let now = Instant::now();
        let deadline = config
            .deadline
            .and_then(|d| now.checked_add(d).map(|at| (at, d)));
        Box::pin(Extra {
            sleep: tokio::time::sleep_until(now),
            armed: None,
            deadline,
            attempt: 1,
            previous_delay: None,
        })
    }

    /// Arms the cut-off for the attempt starting now: the per-attempt timeout or the
    /// deadline, whichever ends first.
    fn arm(self: Pin<&mut Self>, config: &Config) {
        let this = self.project();
        let cut = match (config.attempt_timeout, *this.deadline) {
            (None, None) => None,
            (None, Some((at, d))) => Some((at, Cause::Deadline(d))),
            (Some(t), deadline) => {
                let end = Instant::now().checked_add(t);
                match (end, deadline) {
                    (Some(end), Some((at, _))) if end < at => Some((end, Cause::Attempt(t))),
                    (_, Some((at, d))) => Some((at, Cause::Deadline(d))),
                    (Some(end), None) => Some((end, Cause::Attempt(t))),
                    (None, None) => None,
                }
            }
        };
        *this.armed = cut.map(|(_, cause)| cause);
        if let Some((at, _)) = cut {
            this.sleep.reset(at);
        }
    }
}

impl<P, S, Req> ResponseFuture<P, S, Req>
where
    P: Policy<Req, <S as Service<<P as Replay<Req>>::Request>>::Response>,
    S: Service<<P as Replay<Req>>::Request>,
{
    /// The bookkeeping a call needs from its start: only with a timeout or a deadline.
    #[inline]
    pub(crate) fn timers(core: &CoreRef) -> Option<Pin<Box<Extra>>> {
        let config = &core.config;
        if config.attempt_timeout.is_none() && config.deadline.is_none() {
            return None;
        }
        let mut extra = Extra::new(config);
        extra.as_mut().arm(config);
        Some(extra)
    }

    /// `future` should be the last argument computed: nothing then stands between the inner
    /// call and this constructor, and the inner future is written straight into place.
    #[inline]
    pub(crate) fn new(
        service: Option<S>,
        policy: P,
        stash: Option<<P as Replay<Req>>::Stash>,
        core: CoreRef,
        extra: Option<Pin<Box<Extra>>>,
        future: <S as Service<<P as Replay<Req>>::Request>>::Future,
    ) -> Self {
        Self {
            state: State::Calling { future },
            service,
            policy,
            stash,
            core,
            extra,
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

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    let result: Result<_, BoxError> = match future.poll(cx) {
                        Poll::Ready(result) => result.map_err(Into::into),
                        Poll::Pending => {
                            let Some(extra) = this.extra.as_mut() else {
                                return Poll::Pending;
                            };
                            let extra = extra.as_mut().project();
                            let Some(cause) = *extra.armed else {
                                return Poll::Pending;
                            };
                            ready!(extra.sleep.poll(cx));
                            match cause {
                                Cause::Attempt(t) => Err(AttemptTimedOut::new(t).into()),
                                Cause::Deadline(d) => {
                                    tracing::debug!(
                                        target: "seawall::retry",
                                        attempt = *extra.attempt,
                                        deadline_ms = d.as_millis() as u64,
                                        "deadline passed during an attempt; giving up"
                                    );
                                    return Poll::Ready(Err(DeadlineExceeded::new(d).into()));
                                }
                            }
                        }
                    };
                    let Some(stash) = this.stash.as_mut() else {
                        return Poll::Ready(result);
                    };
                    if !this.policy.classify(&result).is_failure() {
                        return Poll::Ready(result);
                    }
                    let config = &this.core.config;
                    let extra = this.extra.get_or_insert_with(|| Extra::new(config));
                    let next = decide(&*this.policy, stash, this.core, extra.as_mut(), &result);
                    match next {
                        None => return Poll::Ready(result),
                        Some(request) => this.state.set(State::Sleeping {
                            request: Some(request),
                        }),
                    }
                }
                StateProj::Sleeping { request } => {
                    let extra = this.extra.as_mut().expect("a retry has its bookkeeping");
                    ready!(extra.as_mut().project().sleep.poll(cx));
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
                    let extra = this.extra.as_mut().expect("a retry has its bookkeeping");
                    *extra.as_mut().project().attempt += 1;
                    extra.as_mut().arm(&this.core.config);
                    this.state.set(State::Calling { future });
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
    extra: Pin<&mut Extra>,
    result: &Result<Res, BoxError>,
) -> Option<<P as Replay<Req>>::Request>
where
    P: Policy<Req, Res>,
{
    let extra = extra.project();
    let attempt = *extra.attempt;
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
    let deadline_at = extra.deadline.map(|(at, _)| at);
    let hint = policy.retry_after(result);
    let circuit_open = matches!(result, Err(e) if matches!(Rejection::find(&**e), Some(Rejection::CircuitOpen(_))));
    let delay = if circuit_open {
        // Not retried blindly: only when the breaker says when, and that fits.
        let now = Instant::now();
        // With a deadline, waiting for the half-open is fine while it fits. Without one, the
        // layer waits no longer than its backoff would for any other failure (the delay before
        // jitter): a breaker exists to fail fast, and an open circuit must not park a call for
        // the breaker's whole open duration.
        let (room, inclusive) = match deadline_at {
            Some(at) => (at.saturating_duration_since(now), false),
            None => (config.backoff.exponential(attempt - 1), true),
        };
        match hint {
            Some(wait) if wait < room || (inclusive && wait == room) => wait,
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
        let backoff = config
            .backoff
            .delay(attempt - 1, *extra.previous_delay, &mut rng);
        *extra.previous_delay = Some(backoff);
        match hint {
            Some(h) => backoff.max(h.min(config.max_retry_after)),
            None => backoff,
        }
    };
    if let Some(at) = deadline_at {
        let fits = Instant::now()
            .checked_add(delay)
            .is_some_and(|end| end < at);
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
            if let Some(events) = &core.events {
                events.publish("retry", EventKind::RetryBudgetExhausted);
            }
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
    if let Some(events) = &core.events {
        events.publish("retry", EventKind::Retrying { attempt, delay });
    }
    if let Some(hook) = &core.on_retry {
        hook(&RetryEvent {
            attempt,
            delay,
            reason,
            server_hint: hint,
        });
    }
    // The attempt's cut-off is off while sleeping; the sleep waits for the next attempt.
    *extra.armed = None;
    match Instant::now().checked_add(delay) {
        Some(at) => extra.sleep.reset(at),
        None => return None,
    }
    Some(request)
}

impl<P, S, Req> fmt::Debug for ResponseFuture<P, S, Req>
where
    P: Policy<Req, <S as Service<<P as Replay<Req>>::Request>>::Response>,
    S: Service<<P as Replay<Req>>::Request>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("attempt", &self.extra.as_ref().map_or(1, |e| e.attempt))
            .field("retryable", &self.stash.is_some())
            .finish_non_exhaustive()
    }
}
