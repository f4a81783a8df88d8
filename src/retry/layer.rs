use super::backoff::{Backoff, Jitter, SeedSource};
use super::budget::RetryBudget;
use super::handle::{Metrics, RetryEvent, RetryHandle};
use super::policy::{CloneRequest, CloneWith, Fallback};
use super::service::Retry;
#[cfg(test)]
use super::shared::counted_core_ref;
use super::shared::{core_ref, Config, Core, CoreRef, OnRetry};
use crate::classify::ErrorsAsFailures;
use crate::error::{check, ConfigError};
use crate::events::EventSource;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tower::BoxError;
use tower_layer::Layer;

const LAYER: &str = "retry";
/// The longest wait any setting may ask for: a longer wait belongs in a queue, not a retry loop.
const LONGEST_WAIT: Duration = Duration::from_secs(3600);

/// Wraps services in [`Retry`]. Built by [`RetryLayer::builder`]; see [the module docs](super).
///
/// # Clone
/// Every service this layer value builds, and every clone of the layer and of those services,
/// shares one set of metrics, one budget and one RNG.
///
/// # Memory
/// Every response future must reach the shared state in case it has to retry, and a reference
/// count would cost every call two atomic operations (about 20 ns on a small VM, four times a
/// bare call). So the first 256 layers a process builds keep their shared state (a few hundred
/// bytes each) for the life of the process, and their futures reach it for free; builds past
/// that are reference-counted and freed as usual. Build a layer once, at start-up, not per
/// request.
///
/// # Panics
/// Retries, per-attempt timeouts and deadlines use `tokio::time`: polling a response future
/// that needs one outside a Tokio runtime with time enabled panics, as any Tokio timer does.
#[derive(Clone)]
pub struct RetryLayer<P = CloneRequest<ErrorsAsFailures>> {
    policy: P,
    core: CoreRef,
}

impl RetryLayer {
    /// A builder with the defaults (see [`RetryLayerBuilder`]).
    pub fn builder() -> RetryLayerBuilder<CloneRequest<ErrorsAsFailures>> {
        RetryLayerBuilder::new(CloneRequest::default())
    }
}

impl<P> RetryLayer<P> {
    /// Runtime control and metrics, shared by every service this layer builds.
    pub fn handle(&self) -> RetryHandle {
        RetryHandle::new(self.core.clone())
    }
}

impl<P: fmt::Debug> fmt::Debug for RetryLayer<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayer")
            .field("policy", &self.policy)
            .field("config", &self.core.config)
            .finish()
    }
}

impl<S, P: Clone> Layer<S> for RetryLayer<P> {
    type Service = Retry<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::from_parts(inner, self.policy.clone(), self.core.clone())
    }
}

/// Builds a [`RetryLayer`]. Every setting has a default, named with the practice it follows:
///
/// | setting | default | anchor |
/// |---|---|---|
/// | [`max_attempts`](Self::max_attempts) | 3 (the first included) | AWS SDKs' standard retry mode |
/// | [`initial_delay`](Self::initial_delay) | 100 ms | Google Cloud client libraries' initial retry delay |
/// | [`multiplier`](Self::multiplier) | 2.0 | the AWS Architecture Blog's exponential backoff |
/// | [`fixed_backoff`](Self::fixed_backoff), [`linear_backoff`](Self::linear_backoff) | off: the backoff is exponential | Polly's `DelayBackoffType.Constant` / `Linear` |
/// | [`max_delay`](Self::max_delay) | 20 s | AWS SDKs' standard mode maximum backoff |
/// | [`jitter`](Self::jitter) | [`Jitter::Full`] | the AWS Architecture Blog's recommendation |
/// | [`max_retry_after`](Self::max_retry_after) | 60 s | seawall's choice: longer hints are clamped |
/// | [`attempt_timeout`](Self::attempt_timeout) | none | |
/// | [`deadline`](Self::deadline) | none | |
/// | [`budget`](Self::budget) | none ([`RetryBudget::default`] follows Finagle: 20%, 10/s, 10 s) | |
/// | policy | [`CloneRequest`] with [`ErrorsAsFailures`]; [`http`](Self::http) for HTTP | |
pub struct RetryLayerBuilder<P> {
    pub(crate) policy: P,
    max_attempts: u32,
    initial_delay: Duration,
    multiplier: f64,
    step: Duration,
    max_delay: Duration,
    jitter: Jitter,
    max_retry_after: Duration,
    attempt_timeout: Option<Duration>,
    deadline: Option<Duration>,
    budget: Option<RetryBudget>,
    seed: Option<u64>,
    on_retry: Option<OnRetry>,
    events: Option<EventSource>,
}

impl<P: fmt::Debug> fmt::Debug for RetryLayerBuilder<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryLayerBuilder")
            .field("policy", &self.policy)
            .field("max_attempts", &self.max_attempts)
            .field("initial_delay", &self.initial_delay)
            .field("multiplier", &self.multiplier)
            .field("step", &self.step)
            .field("max_delay", &self.max_delay)
            .field("jitter", &self.jitter)
            .field("max_retry_after", &self.max_retry_after)
            .field("attempt_timeout", &self.attempt_timeout)
            .field("deadline", &self.deadline)
            .field("budget", &self.budget)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

impl<P> RetryLayerBuilder<P> {
    fn new(policy: P) -> Self {
        Self {
            policy,
            max_attempts: 3,
            initial_delay: Duration::from_millis(100),
            multiplier: 2.0,
            step: Duration::ZERO,
            max_delay: Duration::from_secs(20),
            jitter: Jitter::Full,
            max_retry_after: Duration::from_secs(60),
            attempt_timeout: None,
            deadline: None,
            budget: None,
            seed: None,
            on_retry: None,
            events: None,
        }
    }

    /// Replaces the policy, keeping every other setting.
    pub fn policy<Q>(self, policy: Q) -> RetryLayerBuilder<Q> {
        self.map_policy(|_| policy)
    }

    fn map_policy<Q>(self, f: impl FnOnce(P) -> Q) -> RetryLayerBuilder<Q> {
        RetryLayerBuilder {
            policy: f(self.policy),
            max_attempts: self.max_attempts,
            initial_delay: self.initial_delay,
            multiplier: self.multiplier,
            step: self.step,
            max_delay: self.max_delay,
            jitter: self.jitter,
            max_retry_after: self.max_retry_after,
            attempt_timeout: self.attempt_timeout,
            deadline: self.deadline,
            budget: self.budget,
            seed: self.seed,
            on_retry: self.on_retry,
            events: self.events,
        }
    }

    /// The most attempts per call, the first included (`1` turns retries off). Default 3.
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// The base of the exponential backoff. Default 100 ms.
    pub fn initial_delay(mut self, delay: Duration) -> Self {
        self.initial_delay = delay;
        self
    }

    /// The growth factor of the exponential backoff, at least 1.0. Default 2.0.
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// The cap on any backoff delay, at most an hour. Default 20 s.
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// Waits `delay` before every retry: sets the initial delay and the cap to `delay`, the
    /// multiplier to 1.0 and the jitter to [`Jitter::None`] (Polly's `Constant` backoff).
    /// A later [`jitter`](Self::jitter) randomises it again; a later
    /// [`max_delay`](Self::max_delay) must not be below `delay`.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use seawall::retry::RetryLayer;
    ///
    /// // 500 ms between attempts, every time.
    /// let layer = RetryLayer::builder()
    ///     .fixed_backoff(Duration::from_millis(500))
    ///     .build()
    ///     .unwrap();
    /// # let _ = layer;
    /// ```
    pub fn fixed_backoff(mut self, delay: Duration) -> Self {
        self.initial_delay = delay;
        self.multiplier = 1.0;
        self.step = Duration::ZERO;
        self.max_delay = delay;
        self.jitter = Jitter::None;
        self
    }

    /// Waits `initial + step * n` before retry `n` (counted from 0), capped at
    /// [`max_delay`](Self::max_delay): sets the initial delay, the multiplier to 1.0 and the
    /// jitter to [`Jitter::None`] (Polly's `Linear` backoff). A later
    /// [`jitter`](Self::jitter) randomises it again; a later
    /// [`multiplier`](Self::multiplier) makes the delay `initial * multiplier^n + step * n`.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use seawall::retry::RetryLayer;
    ///
    /// // 100 ms, 150 ms, 200 ms, ... up to 1 s.
    /// let layer = RetryLayer::builder()
    ///     .max_attempts(5)
    ///     .linear_backoff(Duration::from_millis(100), Duration::from_millis(50))
    ///     .max_delay(Duration::from_secs(1))
    ///     .build()
    ///     .unwrap();
    /// # let _ = layer;
    /// ```
    pub fn linear_backoff(mut self, initial: Duration, step: Duration) -> Self {
        self.initial_delay = initial;
        self.multiplier = 1.0;
        self.step = step;
        self.jitter = Jitter::None;
        self
    }

    /// How delays are randomised. Default [`Jitter::Full`].
    pub fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The cap on a wait asked for by the other side (`Retry-After`, a rejection's
    /// `retry_after`), at most an hour. Longer hints are clamped to it. Default 60 s.
    pub fn max_retry_after(mut self, cap: Duration) -> Self {
        self.max_retry_after = cap;
        self
    }

    /// Cancels an attempt after `timeout`; it then fails with
    /// [`AttemptTimedOut`](super::error::AttemptTimedOut), which is retried. Default none.
    /// Costs a clock read and one small allocation (the timer) per call.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// Bounds the whole call, retries and waits included, from the moment it is made: no
    /// retry starts after it, and an attempt in flight when it passes is cancelled with
    /// [`DeadlineExceeded`](super::error::DeadlineExceeded). Default none. Costs a clock read
    /// and one small allocation (the timer) per call.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Shares `budget` among every clone: retries beyond it are refused. Default none.
    ///
    /// A retry takes its token when it starts, after the backoff, so a call dropped during the
    /// backoff spends none. An empty budget refuses at once; one that empties during the
    /// backoff refuses when the retry would start, and the failed attempt's response or error,
    /// kept through the backoff for that, is returned.
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Seeds the jitter RNG, for reproducible delays in tests. Default: a random seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Calls `hook` when a retry is scheduled, before its backoff, with the failed attempt, the
    /// delay and the reason. A retry whose call is dropped during the backoff, or that the
    /// budget refuses when the backoff ends, was announced here but never made; the metrics
    /// and the [`Retrying`](crate::events::EventKind::Retrying) event count only retries that
    /// started.
    pub fn on_retry<F>(mut self, hook: F) -> Self
    where
        F: Fn(&RetryEvent<'_>) + Send + Sync + 'static,
    {
        self.on_retry = Some(Arc::new(hook));
        self
    }

    /// Maps the last result of every call that ends on a failure (Polly's fallback): the
    /// last attempt failed and no retry follows (attempts, budget or deadline ran out, the
    /// request cannot be sent again, an open circuit's wait does not fit), the deadline cut
    /// the attempt in flight, or the inner service failed to get ready for a retry. `hook`
    /// may answer from a cache, a default, or a clearer error; calls that do not end on a
    /// failure never reach it. Default: the last result is returned as it is.
    ///
    /// Call it after choosing the policy ([`http`](Self::http), [`classify`](Self::classify),
    /// ...): it wraps the policy in a [`Fallback`], and choosing another policy afterwards
    /// replaces it. The hook is cloned into every response future: a closure that captures
    /// nothing costs nothing; put anything bigger behind an `Arc`.
    ///
    /// # Example
    ///
    /// ```
    /// use seawall::retry::RetryLayer;
    /// use tower::{service_fn, BoxError, Layer, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # tokio::time::pause();
    /// let layer = RetryLayer::builder()
    ///     .on_exhausted(|last: Result<String, BoxError>| last.or_else(|_| Ok("cached".into())))
    ///     .build()
    ///     .unwrap();
    /// let down = service_fn(|()| async { Err::<String, BoxError>("connection refused".into()) });
    /// assert_eq!(layer.layer(down).oneshot(()).await.unwrap(), "cached");
    /// assert_eq!(layer.handle().metrics().exhausted, 1);
    /// # }
    /// ```
    pub fn on_exhausted<Res, F>(self, hook: F) -> RetryLayerBuilder<Fallback<P, F>>
    where
        F: Fn(Result<Res, BoxError>) -> Result<Res, BoxError> + Clone,
    {
        self.map_policy(|policy| Fallback::new(policy, hook))
    }

    /// Also publish retries and budget exhaustion to an [`EventBus`](crate::events::EventBus),
    /// as events of `source` (one stream for every layer; see [`crate::events`]).
    pub fn events(mut self, source: EventSource) -> Self {
        self.events = Some(source);
        self
    }

    /// Checks every setting and builds the layer.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field when `max_attempts` is 0, `multiplier` is NaN or
    /// below 1.0, `max_delay` is below `initial_delay`, a cap exceeds an hour, or a timeout
    /// or deadline is zero.
    pub fn build(self) -> Result<RetryLayer<P>, ConfigError> {
        self.build_with(core_ref)
    }

    fn build_with(self, share: fn(Core) -> CoreRef) -> Result<RetryLayer<P>, ConfigError> {
        check::nonzero(LAYER, "max_attempts", u64::from(self.max_attempts))?;
        if !(self.multiplier >= 1.0 && self.multiplier.is_finite()) {
            return Err(ConfigError::new(
                LAYER,
                "multiplier",
                self.multiplier,
                "1.0 <= x, finite",
            ));
        }
        check::ordered(
            LAYER,
            "initial_delay",
            self.initial_delay,
            "max_delay",
            self.max_delay,
        )?;
        for (field, value) in [
            ("max_delay", self.max_delay),
            ("max_retry_after", self.max_retry_after),
        ] {
            if value > LONGEST_WAIT {
                return Err(ConfigError::new(LAYER, field, value, "<= 3600s"));
            }
        }
        if let Some(t) = self.attempt_timeout {
            check::positive(LAYER, "attempt_timeout", t)?;
        }
        if let Some(d) = self.deadline {
            check::positive(LAYER, "deadline", d)?;
        }
        let seed = self.seed.unwrap_or_else(rand::random);
        let core = Core {
            config: Config {
                max_attempts: self.max_attempts,
                backoff: Backoff {
                    initial: self.initial_delay,
                    multiplier: self.multiplier,
                    step: self.step,
                    max: self.max_delay,
                    jitter: self.jitter,
                },
                max_retry_after: self.max_retry_after,
                attempt_timeout: self.attempt_timeout,
                deadline: self.deadline,
                timed: self.attempt_timeout.is_some() || self.deadline.is_some(),
            },
            budget: self.budget,
            metrics: Metrics::default(),
            seeds: SeedSource::new(seed),
            on_retry: self.on_retry,
            events: self.events,
        };
        Ok(RetryLayer {
            policy: self.policy,
            core: share(core),
        })
    }

    /// Builds a layer whose state is reference-counted, as builds past the first 256 are.
    #[cfg(test)]
    pub(crate) fn build_counted(self) -> Result<RetryLayer<P>, ConfigError> {
        self.build_with(counted_core_ref)
    }
}

impl<C0: Clone> RetryLayerBuilder<CloneRequest<C0>> {
    /// Retries any `Clone` request with `classifier` deciding what failed (any
    /// [`Classify`](crate::classify::Classify) over `Result<Response, BoxError>`, closures
    /// included).
    pub fn classify<C>(self, classifier: C) -> RetryLayerBuilder<CloneRequest<C>> {
        self.policy(CloneRequest::new(classifier))
    }

    /// Retries requests that `clone` can copy (`None`: send once, never retry), keeping the
    /// classifier.
    pub fn clone_with<F>(self, clone: F) -> RetryLayerBuilder<CloneWith<F, C0>> {
        let classifier = self.policy.classifier().clone();
        self.policy(CloneWith::new(clone, classifier))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::{service_fn, BoxError, Service, ServiceExt};

    #[tokio::test(start_paused = true)]
    async fn a_reference_counted_layer_retries_and_counts_like_a_static_one() {
        let layer = RetryLayer::builder()
            .max_attempts(3)
            .build_counted()
            .unwrap();
        assert!(matches!(layer.core, CoreRef::Counted(_)));
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let svc = {
            let calls = calls.clone();
            service_fn(move |()| {
                let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    if n < 2 {
                        Err::<u32, BoxError>("refused".into())
                    } else {
                        Ok(n)
                    }
                }
            })
        };
        assert_eq!(layer.layer(svc).oneshot(()).await.unwrap(), 2);
        let m = layer.handle().metrics();
        assert_eq!((m.attempts, m.retries), (3, 2));
    }

    /// First attempts are published 64 at a time and when a clone is dropped, whether the
    /// layer is on the success path (static, no timer) or not (a timer, a counted core).
    #[tokio::test(start_paused = true)]
    async fn first_attempts_are_published_in_batches_and_on_drop() {
        let builder = || RetryLayer::builder().max_attempts(2);
        let layers = [
            ("static", builder().build().unwrap()),
            (
                "static, timed",
                builder()
                    .attempt_timeout(Duration::from_secs(1))
                    .build()
                    .unwrap(),
            ),
            ("counted", builder().build_counted().unwrap()),
            (
                "counted, timed",
                builder()
                    .deadline(Duration::from_secs(1))
                    .build_counted()
                    .unwrap(),
            ),
        ];
        for (name, layer) in layers {
            let mut svc = layer.layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
            for n in 0..63 {
                svc.ready().await.unwrap().call(n).await.unwrap();
            }
            assert_eq!(
                layer.handle().metrics().attempts,
                0,
                "{name}: none published yet"
            );
            svc.ready().await.unwrap().call(63).await.unwrap();
            assert_eq!(layer.handle().metrics().attempts, 64, "{name}: one batch");
            for n in 0..70 {
                svc.ready().await.unwrap().call(n).await.unwrap();
            }
            assert_eq!(
                layer.handle().metrics().attempts,
                128,
                "{name}: two batches"
            );
            let clone = svc.clone();
            drop(svc);
            assert_eq!(
                layer.handle().metrics().attempts,
                134,
                "{name}: the rest, on drop"
            );
            drop(clone);
            assert_eq!(
                layer.handle().metrics().attempts,
                134,
                "{name}: a clone starts at 0"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_reference_counted_layer_with_an_attempt_timeout_cuts_and_retries() {
        let layer = RetryLayer::builder()
            .max_attempts(2)
            .attempt_timeout(Duration::from_millis(50))
            .build_counted()
            .unwrap();
        let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let svc = {
            let calls = calls.clone();
            service_fn(move |()| {
                let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    if n == 0 {
                        std::future::pending::<()>().await;
                    }
                    Ok::<u32, BoxError>(n)
                }
            })
        };
        assert_eq!(layer.layer(svc).oneshot(()).await.unwrap(), 1);
        let m = layer.handle().metrics();
        assert_eq!((m.attempts, m.retries), (2, 1));
    }
}
