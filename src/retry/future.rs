//! The response future of [`Retry`](super::Retry).

use super::error::{AttemptTimedOut, DeadlineExceeded};
use super::handle::RetryEvent;
use super::policy::{Policy, Replay};
use super::shared::{Config, Core, CoreRef};
use crate::error::Rejection;
use crate::events::EventKind;
use pin_project_lite::pin_project;
use std::fmt;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
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
        // The attempt in flight; `Done` once it is over (from a failed attempt to the next
        // one, so that whatever a finished attempt holds, a permit, a connection, is not
        // kept through the backoff). Dropped first: on the success path the compiler knows
        // it is `Done` and drops nothing.
        #[pin]
        future: Attempt<
            <S as Service<<P as Replay<Req>>::Request>>::Future,
            Answer<P, S, Req>,
        >,
        policy: P,
        // What a retry needs (a clone of the inner service, the kept request); `None` when
        // the request is not retryable. One option for both: one tag to write per call.
        retry: Option<Retryable<S, <P as Replay<Req>>::Stash>>,
        // The shared state, or the boxed bookkeeping that holds it. Dropped last: its
        // release is an out-of-line call, after which nothing is left to look at.
        link: Link<<P as Replay<Req>>::Request>,
    }
}

/// How a response future reaches the shared state: on the first attempt without a timer, the
/// [`CoreRef`] alone (two words, the success path); with a timer or once a retry happens, a
/// box of [`Extra`] that holds the `CoreRef` besides the timers and the retry bookkeeping. (A
/// `tokio::time::Sleep` is over a hundred bytes; a future carrying one inline is copied with a
/// `memmove` call at every move.)
///
/// Its drop looks at the state in line and releases anything out of line: left to itself, the
/// compiler puts the whole response future's drop out of line (an `Arc`, a boxed `Sleep`), and
/// every success path then pays a call for a drop that has nothing to do. The link is the
/// response future's last field: a release that panics leaves no other field to drop, so the
/// drop needs no cleanup path after it and goes in line whole.
pub(crate) struct Link<R>(ManuallyDrop<LinkState<R>>);

enum LinkState<R> {
    /// The first attempt, no timer, a static core.
    Static(&'static Core),
    /// The first attempt, no timer, a reference-counted core.
    Counted(Arc<Core>),
    /// Timers, or retries: the bookkeeping, which holds the core.
    Busy(Pin<Box<Extra<R>>>),
    /// While moving from the first attempt to `Busy`, and after a release.
    Moved,
}

impl<R> Link<R> {
    /// The link of a call that starts now: boxed bookkeeping when `core` asks for a timer.
    pub(crate) fn new(core: CoreRef) -> Self {
        if core.config.timed {
            let mut extra = Extra::new(core);
            extra.as_mut().arm();
            return Link(ManuallyDrop::new(LinkState::Busy(extra)));
        }
        Link(ManuallyDrop::new(match core {
            CoreRef::Static(core) => LinkState::Static(core),
            CoreRef::Counted(core) => LinkState::Counted(core),
        }))
    }

    /// The link of a call with a static core and no timer: the success path.
    #[inline]
    pub(crate) fn first(core: &'static Core) -> Self {
        Link(ManuallyDrop::new(LinkState::Static(core)))
    }

    /// Whether the call is on its first attempt without a timer.
    #[inline]
    fn is_first(&self) -> bool {
        matches!(*self.0, LinkState::Static(_) | LinkState::Counted(_))
    }

    /// The bookkeeping, if any.
    fn extra(&self) -> Option<&Extra<R>> {
        match &*self.0 {
            LinkState::Busy(extra) => Some(extra),
            _ => None,
        }
    }

    /// The bookkeeping, if any.
    fn extra_mut(&mut self) -> Option<Pin<&mut Extra<R>>> {
        match &mut *self.0 {
            LinkState::Busy(extra) => Some(extra.as_mut()),
            _ => None,
        }
    }

    /// The bookkeeping, built now if the call has none yet.
    fn busy(&mut self) -> Pin<&mut Extra<R>> {
        let core = match std::mem::replace(&mut *self.0, LinkState::Moved) {
            LinkState::Static(core) => Some(CoreRef::Static(core)),
            LinkState::Counted(core) => Some(CoreRef::Counted(core)),
            busy => {
                *self.0 = busy;
                None
            }
        };
        if let Some(core) = core {
            *self.0 = LinkState::Busy(Extra::new(core));
        }
        match &mut *self.0 {
            LinkState::Busy(extra) => extra.as_mut(),
            _ => unreachable!("a link is on its first attempt or `Busy` until dropped"),
        }
    }

    /// Drops the core reference or the bookkeeping.
    #[cold]
    #[inline(never)]
    fn release(&mut self) {
        drop(ManuallyDrop::into_inner(std::mem::replace(
            &mut self.0,
            ManuallyDrop::new(LinkState::Moved),
        )));
    }
}

impl<R> Drop for Link<R> {
    #[inline]
    fn drop(&mut self) {
        if !matches!(*self.0, LinkState::Static(_)) {
            self.release();
        }
    }
}

/// What a retryable call keeps for its retries.
pub(crate) struct Retryable<S, T> {
    /// A clone of the inner service (readied again before each retry).
    pub(crate) service: S,
    /// What the next attempt's request is built from.
    pub(crate) stash: T,
}

pin_project! {
    #[project = AttemptProj]
    #[project_replace = AttemptReplace]
    enum Attempt<F, O> {
        Running { #[pin] future: F },
        Done,
        // The failed attempt's answer, kept through the backoff when the layer has a budget:
        // the budget is asked when the retry starts, and if it refuses, this is returned.
        Failed { last: O },
        // What the out-of-line path came to, until `poll` returns it. (The out-of-line
        // functions return `Poll<()>`, so that the answer of the success path is not merged
        // with theirs through memory.)
        Answered { answer: O },
    }
}

/// What a call resolves to.
type Answer<P, S, Req> = Result<<S as Service<<P as Replay<Req>>::Request>>::Response, BoxError>;

/// Where a call with bookkeeping stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// An attempt is in flight.
    Calling,
    /// Waiting out the backoff before the next attempt.
    Sleeping,
    /// Waiting for the inner service to be ready for the next attempt.
    Readying,
}

pin_project! {
    /// Timers and retry bookkeeping of one call.
    pub(crate) struct Extra<R> {
        // The backoff sleep, or the cut-off of the attempt in flight when `armed`.
        #[pin]
        sleep: Sleep,
        core: CoreRef,
        // What the sleep means while an attempt is in flight; `None`: no cut-off.
        armed: Option<Cause>,
        // When the whole call must end, with the configured deadline.
        deadline: Option<(Instant, Duration)>,
        // Attempts made so far, the one in flight included.
        attempt: u32,
        previous_delay: Option<Duration>,
        // The wait before the next attempt, for the event published when it starts.
        delay: Duration,
        phase: Phase,
        // The next attempt's request, while sleeping or readying.
        request: Option<R>,
    }
}

#[derive(Debug, Clone, Copy)]
enum Cause {
    Attempt(Duration),
    Deadline(Duration),
}

impl<R> Extra<R> {
    /// Bookkeeping for a call that started now.
    fn new(core: CoreRef) -> Pin<Box<Self>> {
        let now = Instant::now();
        let deadline = core
            .config
            .deadline
            .and_then(|d| now.checked_add(d).map(|at| (at, d)));
        Box::pin(Extra {
            sleep: tokio::time::sleep_until(now),
            core,
            armed: None,
            deadline,
            attempt: 1,
            previous_delay: None,
            delay: Duration::ZERO,
            phase: Phase::Calling,
            request: None,
        })
    }

    /// Arms the cut-off for the attempt starting now: the per-attempt timeout or the
    /// deadline, whichever ends first.
    fn arm(self: Pin<&mut Self>) {
        let this = self.project();
        let config: &Config = &this.core.config;
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
    /// `future` should be the last argument computed: nothing then stands between the inner
    /// call and this constructor, and the inner future is written straight into place.
    #[inline]
    pub(crate) fn new(
        retry: Option<Retryable<S, <P as Replay<Req>>::Stash>>,
        policy: P,
        link: Link<<P as Replay<Req>>::Request>,
        future: <S as Service<<P as Replay<Req>>::Request>>::Future,
    ) -> Self {
        Self {
            future: Attempt::Running { future },
            retry,
            policy,
            link,
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
        let mut this = self.as_mut().project();
        // One look at the attempt decides the success path: an attempt in flight is polled
        // here whatever the call's bookkeeping; the rest (timers, backoff) is out of line.
        let AttemptProj::Running { future } = this.future.as_mut().project() else {
            let polled = self.as_mut().poll_slow(cx, false);
            return self.answer(polled);
        };
        match future.poll(cx) {
            Poll::Ready(result) => {
                // The attempt is over: dropped now, so that the response future's drop has
                // nothing left to look at but the link.
                this.future.set(Attempt::Done);
                let result: Answer<P, S, Req> = result.map_err(Into::into);
                // Only the classification here: with the default classifier an `Ok` is final,
                // and that is one look at the result. Whether the request can be retried at
                // all (it has a stash) is looked at out of line, after a failure.
                if this.policy.classify(&result).is_failure() {
                    let polled = self.as_mut().attempt_failed(result, cx);
                    return self.answer(polled);
                }
                Poll::Ready(result)
            }
            // No timer: nothing else to wait for.
            Poll::Pending if this.link.is_first() => Poll::Pending,
            Poll::Pending => {
                let polled = self.as_mut().poll_slow(cx, true);
                self.answer(polled)
            }
        }
    }
}

impl<P, S, Req> ResponseFuture<P, S, Req>
where
    P: Policy<Req, <S as Service<<P as Replay<Req>>::Request>>::Response>,
    S: Service<<P as Replay<Req>>::Request>,
    <S as Service<<P as Replay<Req>>::Request>>::Error: Into<BoxError>,
{
    /// A call with bookkeeping: the timers, the backoff, the attempts after the first.
    /// `pending`: the attempt in flight was just polled and is pending.
    #[inline(never)]
    fn poll_slow(mut self: Pin<&mut Self>, cx: &mut Context<'_>, mut pending: bool) -> Poll<()> {
        loop {
            let mut this = self.as_mut().project();
            let mut extra = this
                .link
                .extra_mut()
                .expect("`ResponseFuture` polled after completion");
            match extra.phase {
                Phase::Calling => {
                    let retried = extra.attempt > 1;
                    let AttemptProj::Running { future } = this.future.as_mut().project() else {
                        panic!("`ResponseFuture` polled after completion");
                    };
                    let polled = if std::mem::take(&mut pending) {
                        Poll::Pending
                    } else {
                        future.poll(cx)
                    };
                    let result: Result<_, BoxError> = match polled {
                        Poll::Ready(result) => result.map_err(Into::into),
                        Poll::Pending => {
                            let extra = extra.project();
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
                                        deadline_ms = millis(d),
                                        "deadline passed during an attempt; giving up"
                                    );
                                    let answer = Err(DeadlineExceeded::new(d).into());
                                    let answer = this.policy.fallback(answer);
                                    return self.answered(answer);
                                }
                            }
                        }
                    };
                    if !this.policy.classify(&result).is_failure() {
                        if let Some(extra) = this.link.extra().filter(|_| retried) {
                            saved(&extra.core);
                        }
                        return self.answered(result);
                    }
                    if let Some(result) = self.as_mut().failed(result) {
                        return self.answered(result);
                    }
                }
                Phase::Sleeping => {
                    ready!(extra.as_mut().project().sleep.poll(cx));
                    *extra.project().phase = Phase::Readying;
                }
                Phase::Readying => {
                    let service = &mut this
                        .retry
                        .as_mut()
                        .expect("a retried request has a service")
                        .service;
                    if let Err(e) = ready!(service.poll_ready(cx)) {
                        let answer = this.policy.fallback(Err(e.into()));
                        return self.answered(answer);
                    }
                    // The retry starts only now: a call dropped during the backoff made no
                    // retry, counted none and spent no token.
                    if !start_retry(&extra) {
                        let last = match this.future.as_mut().project_replace(Attempt::Done) {
                            AttemptReplace::Failed { last } => last,
                            _ => unreachable!("a budget keeps the failed attempt's answer"),
                        };
                        let answer = this.policy.fallback(last);
                        return self.answered(answer);
                    }
                    let parts = extra.as_mut().project();
                    let request = parts.request.take().expect("polled after completion");
                    this.future.set(Attempt::Running {
                        future: service.call(request),
                    });
                    *parts.attempt += 1;
                    *parts.phase = Phase::Calling;
                    extra.as_mut().arm();
                }
            }
        }
    }

    /// An attempt failed and may be retried.
    #[cold]
    #[inline(never)]
    fn attempt_failed(
        mut self: Pin<&mut Self>,
        result: Answer<P, S, Req>,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        match self.as_mut().failed(result) {
            Some(result) => self.answered(result),
            None => self.poll_slow(cx, false),
        }
    }

    /// Keeps the call's answer for [`answer`](Self::answer) to return.
    fn answered(self: Pin<&mut Self>, answer: Answer<P, S, Req>) -> Poll<()> {
        self.project().future.set(Attempt::Answered { answer });
        Poll::Ready(())
    }

    /// The answer the out-of-line path kept, once it has one.
    #[inline]
    fn answer(self: Pin<&mut Self>, polled: Poll<()>) -> Poll<<Self as Future>::Output> {
        ready!(polled);
        match self.project().future.project_replace(Attempt::Done) {
            AttemptReplace::Answered { answer } => Poll::Ready(answer),
            _ => unreachable!("the out-of-line path keeps an answer before it is ready"),
        }
    }

    /// An attempt failed: either the call moves on to the backoff sleep (`None`), or the
    /// call ends with the failure, through the policy's fallback (the request cannot be sent
    /// again, or attempts, budget or deadline ran out).
    #[cold]
    #[inline(never)]
    fn failed(self: Pin<&mut Self>, result: Answer<P, S, Req>) -> Option<Answer<P, S, Req>> {
        let mut this = self.project();
        let Some(Retryable { stash, .. }) = this.retry.as_mut() else {
            return Some(this.policy.fallback(result));
        };
        let mut extra = this.link.busy();
        match decide(&*this.policy, stash, extra.as_mut(), &result) {
            None => Some(this.policy.fallback(result)),
            Some(request) => {
                let budgeted = extra.core.budget.is_some();
                let extra = extra.project();
                *extra.request = Some(request);
                *extra.phase = Phase::Sleeping;
                this.future.set(if budgeted {
                    Attempt::Failed { last: result }
                } else {
                    Attempt::Done
                });
                None
            }
        }
    }
}

/// Whether and when to retry a failed attempt: the delay and the next request, or `None` to
/// return the last result. Runs only on the retry path.
fn decide<P, Req, Res>(
    policy: &P,
    stash: &mut <P as Replay<Req>>::Stash,
    extra: Pin<&mut Extra<<P as Replay<Req>>::Request>>,
    result: &Result<Res, BoxError>,
) -> Option<<P as Replay<Req>>::Request>
where
    P: Policy<Req, Res>,
{
    let extra = extra.project();
    let core: &Core = extra.core;
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
        // the breaker's whole open duration. Either way no longer than `max_retry_after`, the
        // cap on any wait the other side asks for.
        let (room, inclusive) = match deadline_at {
            Some(at) => match at.saturating_duration_since(now) {
                room if room > config.max_retry_after => (config.max_retry_after, true),
                room => (room, false),
            },
            None => (config.backoff.exponential(attempt - 1), true),
        };
        match hint {
            Some(wait) if wait < room || (inclusive && wait == room) => wait,
            _ => {
                tracing::debug!(
                    target: "seawall::retry",
                    attempt,
                    retry_after_ms = hint.map(millis),
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
                delay_ms = millis(delay),
                "the next attempt would start after the deadline; returning the last result"
            );
            return None;
        }
    }
    let request = policy.replay(stash)?;
    // An empty budget refuses at once rather than after the backoff; the token itself is
    // taken when the retry starts (`start_retry`), which may still find the budget empty.
    if let Some(budget) = &core.budget {
        if budget.available() == 0 {
            budget_refused(core, attempt, &policy.reason(result));
            return None;
        }
    }
    let reason = policy.reason(result);
    tracing::debug!(
        target: "seawall::retry",
        attempt,
        delay_ms = millis(delay),
        reason = %reason,
        "retrying"
    );
    *extra.delay = delay;
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

/// A retry is about to start, after its backoff: takes its token from the budget, if any, and
/// counts it. `false` when the budget refuses; the last result is then returned.
fn start_retry<R>(extra: &Pin<&mut Extra<R>>) -> bool {
    let core: &Core = &extra.core;
    let attempt = extra.attempt;
    if let Some(budget) = &core.budget {
        if !budget.try_withdraw() {
            budget_refused(core, attempt, &"the budget was spent during the backoff");
            return false;
        }
    }
    core.metrics.retries.fetch_add(1, Ordering::Relaxed);
    if let Some(events) = &core.events {
        let delay = extra.delay;
        events.publish("retry", EventKind::Retrying { attempt, delay });
    }
    true
}

/// A retry's answer was not a failure: the call was saved by retrying.
#[cold]
fn saved(core: &Core) {
    core.metrics
        .succeeded_after_retry
        .fetch_add(1, Ordering::Relaxed);
}

/// The budget refused the retry after attempt `attempt`.
#[cold]
fn budget_refused(core: &Core, attempt: u32, reason: &dyn fmt::Display) {
    core.metrics
        .budget_rejections
        .fetch_add(1, Ordering::Relaxed);
    tracing::warn!(
        target: "seawall::retry",
        attempt,
        reason = %reason,
        "retry budget exhausted; returning the last result"
    );
    if let Some(events) = &core.events {
        events.publish("retry", EventKind::RetryBudgetExhausted);
    }
}

/// Whole milliseconds of `d` for a log field, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl<P, S, Req> fmt::Debug for ResponseFuture<P, S, Req>
where
    P: Policy<Req, <S as Service<<P as Replay<Req>>::Request>>::Response>,
    S: Service<<P as Replay<Req>>::Request>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("attempt", &self.link.extra().map_or(1, |e| e.attempt))
            .field("retryable", &self.retry.is_some())
            .finish_non_exhaustive()
    }
}
