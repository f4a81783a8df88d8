//! Arbitrary settings for every builder and every config struct: durations up to
//! `Duration::MAX`, integers up to their maximum, floats including NaN and infinities. Each
//! gives either a `ConfigError` or a layer that serves calls through a trip, a wait, a
//! rejection and a recovery without a panic (with paused time, so waits of a day cost
//! nothing).
#![cfg(all(
    feature = "circuit-breaker",
    feature = "bulkhead",
    feature = "retry",
    feature = "rate-limit",
    feature = "correlation-id",
    feature = "http"
))]

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use http::{HeaderValue, Request, Response};
use proptest::prelude::*;
use seawall::bulkhead::{BulkheadBuilder, BulkheadLayer};
use seawall::circuit_breaker::{Builder as BreakerBuilder, CircuitBreakerLayer, State};
use seawall::correlation::{CharSet, CorrelationIdLayer};
use seawall::error::{BulkheadFull, CircuitOpen, ConfigError, RateLimited, MAX_DELAY};
use seawall::http::format_retry_after;
use seawall::rate_limit::{RateLimitBuilder, RateLimitLayer};
use seawall::retry::{Jitter, RetryBudget, RetryLayer};
use seawall::stack::ClientStack;
use tokio::time::Instant;
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};

// ----- values ----------------------------------------------------------------------------

/// Durations: the edges, usable ones, and anything up to `Duration::MAX`.
fn duration() -> BoxedStrategy<Duration> {
    prop_oneof![
        1 => Just(Duration::ZERO),
        1 => Just(Duration::MAX),
        1 => Just(MAX_DELAY),
        1 => Just(MAX_DELAY + Duration::from_nanos(1)),
        1 => Just(Duration::from_secs(u64::MAX)),
        1 => Just(Duration::from_nanos(1)),
        3 => (1u64..5_000).prop_map(Duration::from_millis),
        1 => (0u64..=86_400, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        2 => (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
    .boxed()
}

/// Counts: mostly small (so that a trip or a full bulkhead is reached in a few calls), and
/// the edges.
fn count_u32() -> BoxedStrategy<u32> {
    prop_oneof![
        6 => 1u32..6,
        1 => Just(0),
        1 => Just(u32::MAX),
        1 => any::<u32>(),
    ]
    .boxed()
}

fn count_usize() -> BoxedStrategy<usize> {
    prop_oneof![
        6 => 1usize..6,
        1 => Just(0),
        1 => Just(usize::MAX),
        1 => Just(1 << 62),
        1 => any::<usize>(),
    ]
    .boxed()
}

/// Floats: ordinary ratios and multipliers, and NaN, the infinities, zero, negatives, huge.
fn float() -> BoxedStrategy<f64> {
    prop_oneof![
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => Just(0.0),
        1 => Just(-0.0),
        1 => Just(1.0),
        1 => Just(f64::MAX),
        1 => Just(f64::MIN_POSITIVE),
        1 => Just(1e10),
        4 => 0.0f64..=1.0,
        1 => 1.0f64..100.0,
        1 => any::<f64>(),
    ]
    .boxed()
}

fn jitter() -> BoxedStrategy<Jitter> {
    prop_oneof![
        Just(Jitter::None),
        Just(Jitter::Full),
        Just(Jitter::Equal),
        Just(Jitter::Decorrelated)
    ]
    .boxed()
}

/// Runs `f` on a current-thread runtime whose clock is paused (and advances by itself when
/// every task waits).
fn paused<F: Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(Box::pin(f))
}

/// A refusal names a field and says what it allows.
fn refused(e: &ConfigError) {
    assert!(!e.field().is_empty());
    assert!(!e.allowed().is_empty());
    assert!(e.to_string().contains(e.field()), "{e}");
}

/// A `retry_after` a layer hands out is usable as a `Retry-After` header.
fn header_of(retry_after: Duration) {
    let v = format_retry_after(retry_after);
    let secs: u64 = v.to_str().unwrap().parse().unwrap();
    assert!(secs <= MAX_DELAY.as_secs());
    assert!(Duration::from_secs(secs) >= retry_after.min(MAX_DELAY));
}

// ----- circuit breaker -------------------------------------------------------------------

#[derive(Debug, Clone)]
struct BreakerIn {
    consecutive: Option<u32>,
    failure_rate: Option<f64>,
    count_window: Option<u32>,
    time_window: Option<(Duration, u32)>,
    minimum_calls: Option<u32>,
    slow: Option<(Duration, f64)>,
    open: Option<Duration>,
    growth: Option<(f64, Duration)>,
    jitter: Option<f64>,
    probes: Option<u32>,
    events: Option<usize>,
}

fn breaker_in() -> BoxedStrategy<BreakerIn> {
    (
        (
            prop::option::of(count_u32()),
            prop::option::of(float()),
            prop::option::of(count_u32()),
            prop::option::of((duration(), count_u32())),
            prop::option::of(count_u32()),
            prop::option::weighted(0.2, (duration(), float())),
        ),
        (
            prop::option::of(duration()),
            prop::option::of((float(), duration())),
            prop::option::of(float()),
            prop::option::of(count_u32()),
            prop::option::of(count_usize()),
        ),
    )
        .prop_map(
            |(
                (consecutive, failure_rate, count_window, time_window, minimum_calls, slow),
                (open, growth, jitter, probes, events),
            )| BreakerIn {
                consecutive,
                failure_rate,
                count_window,
                time_window,
                minimum_calls,
                slow,
                open,
                growth,
                jitter,
                probes,
                events,
            },
        )
        .boxed()
}

fn breaker_builder(i: &BreakerIn) -> BreakerBuilder {
    let mut b = CircuitBreakerLayer::builder().jitter_seed(7);
    if let Some(n) = i.consecutive {
        b = b.consecutive_failures(n);
    }
    if let Some(r) = i.failure_rate {
        b = b.failure_rate(r);
    }
    if let Some(n) = i.count_window {
        b = b.count_window(n);
    }
    if let Some((length, buckets)) = i.time_window {
        b = b.time_window(length, buckets);
    }
    if let Some(n) = i.minimum_calls {
        b = b.minimum_calls(n);
    }
    if let Some((d, r)) = i.slow {
        b = b.slow_calls(d, r);
    }
    if let Some(d) = i.open {
        b = b.open_duration(d);
    }
    if let Some((m, max)) = i.growth {
        b = b.open_duration_growth(m, max);
    }
    if let Some(j) = i.jitter {
        b = b.jitter(j);
    }
    if let Some(n) = i.probes {
        b = b.half_open_probes(n);
    }
    if let Some(n) = i.events {
        b = b.event_capacity(n);
    }
    b
}

/// One call, once the service is ready.
async fn once<S: Service<()>>(svc: &mut S) -> Result<S::Response, S::Error> {
    svc.ready().await?.call(()).await
}

/// Calls made to trip a breaker before the test gives up on tripping it (a policy may need
/// more calls than that: a window of 100,000).
const TRIP_CALLS: usize = 300;

/// Trips the breaker with failures, checks a call is then refused, waits out the longest
/// open duration, fails a probe (which reopens it, grown), waits again, and closes it with
/// successes.
async fn breaker_serves(layer: CircuitBreakerLayer) {
    let handle = layer.handle();
    let mut events = handle.subscribe();
    let failing = Arc::new(AtomicBool::new(true));
    let mut svc = layer.layer(service_fn({
        let failing = failing.clone();
        move |()| {
            let fail = failing.load(Ordering::SeqCst);
            async move {
                if fail {
                    Err::<(), BoxError>("boom".into())
                } else {
                    Ok(())
                }
            }
        }
    }));
    // A trip.
    let mut tripped = false;
    for _ in 0..TRIP_CALLS {
        if let Err(e) = once(&mut svc).await {
            if e.is::<CircuitOpen>() {
                tripped = true;
                break;
            }
        }
        let _ = handle.metrics();
    }
    if !tripped {
        assert_eq!(handle.state(), State::Closed);
        return;
    }
    for round in 0..2 {
        // A rejection, with a retry_after within a day.
        let err = once(&mut svc).await.unwrap_err();
        let open = err
            .downcast_ref::<CircuitOpen>()
            .expect("refused while open");
        let retry_after = open.retry_after().expect("known while open");
        assert!(retry_after <= MAX_DELAY, "{retry_after:?}");
        header_of(retry_after);
        let shown = handle.metrics().retry_after.expect("shown while open");
        assert!(shown <= MAX_DELAY, "{shown:?}");
        // A wait: every open duration is at most a day.
        tokio::time::advance(MAX_DELAY + Duration::from_millis(1)).await;
        if round == 0 {
            // Probes that fail reopen the breaker, for a grown duration, once they reach
            // the threshold's share of the probes.
            assert!(!once(&mut svc).await.unwrap_err().is::<CircuitOpen>());
            for _ in 0..4095 {
                if handle.state() != State::HalfOpen {
                    break;
                }
                assert!(!once(&mut svc).await.unwrap_err().is::<CircuitOpen>());
            }
            assert_eq!(handle.state(), State::Open);
        }
    }
    // A recovery: probes succeed until the breaker closes (at most 4095 of them).
    failing.store(false, Ordering::SeqCst);
    for _ in 0..4096 {
        once(&mut svc).await.unwrap();
        if handle.state() == State::Closed {
            break;
        }
    }
    assert_eq!(handle.state(), State::Closed);
    // Every state change was published, and each open one says for how long, within a day.
    while let Ok(change) = events.try_recv() {
        if let Some(d) = change.open_for {
            assert!(d > Duration::ZERO && d <= MAX_DELAY, "{d:?}");
        }
    }
}

// ----- bulkhead --------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct BulkheadIn {
    max_concurrent: Option<usize>,
    max_wait: Option<Duration>,
    max_waiting: Option<usize>,
    retry_after: Option<Duration>,
}

fn bulkhead_in() -> BoxedStrategy<BulkheadIn> {
    (
        prop::option::of(count_usize()),
        prop::option::of(duration()),
        prop::option::weighted(0.3, count_usize()),
        prop::option::of(duration()),
    )
        .prop_map(
            |(max_concurrent, max_wait, max_waiting, retry_after)| BulkheadIn {
                max_concurrent,
                max_wait,
                max_waiting,
                retry_after,
            },
        )
        .boxed()
}

fn make_bulkhead(i: &BulkheadIn) -> BulkheadBuilder {
    let mut b = BulkheadLayer::builder();
    if let Some(n) = i.max_concurrent {
        b = b.max_concurrent(n);
    }
    if let Some(d) = i.max_wait {
        b = b.max_wait(d);
    }
    if let Some(n) = i.max_waiting {
        b = b.max_waiting(n);
    }
    if let Some(d) = i.retry_after {
        b = b.retry_after(d);
    }
    b
}

/// Fills the bulkhead with calls that last two days (when its capacity is small enough to
/// fill), checks one more is refused at once or after waiting at most a day, then lets the
/// calls go and checks a new one goes through.
async fn bulkhead_serves(layer: BulkheadLayer) {
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|d: Duration| async move {
        tokio::time::sleep(d).await;
        Ok::<_, BoxError>(())
    }));
    let capacity = handle.capacity();
    if capacity <= 8 {
        let mut held = Vec::new();
        for _ in 0..capacity {
            held.push(svc.ready().await.unwrap().call(2 * MAX_DELAY));
        }
        assert_eq!(handle.in_flight(), capacity);
        // A rejection, at once or after a wait of at most a day.
        let start = Instant::now();
        let err = svc
            .ready()
            .await
            .unwrap()
            .call(Duration::ZERO)
            .await
            .unwrap_err();
        let full = err
            .downcast_ref::<BulkheadFull>()
            .expect("refused when full");
        assert!(start.elapsed() <= MAX_DELAY);
        if let Some(d) = full.retry_after() {
            assert!(d <= MAX_DELAY);
            header_of(d);
        }
        drop(held);
    }
    // A recovery.
    assert_eq!(handle.in_flight(), 0);
    svc.ready()
        .await
        .unwrap()
        .call(Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(handle.metrics().in_flight, 0);
}

// ----- retry -----------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct RetryIn {
    max_attempts: Option<u32>,
    initial_delay: Option<Duration>,
    multiplier: Option<f64>,
    max_delay: Option<Duration>,
    jitter: Option<Jitter>,
    max_retry_after: Option<Duration>,
    attempt_timeout: Option<Duration>,
    deadline: Option<Duration>,
    budget: Option<(Option<f64>, Option<u32>, Option<Duration>)>,
    hints: (Duration, Duration),
}

fn retry_in() -> BoxedStrategy<RetryIn> {
    (
        (
            prop::option::of(count_u32()),
            prop::option::of(duration()),
            prop::option::of(float()),
            prop::option::of(duration()),
            prop::option::of(jitter()),
        ),
        (
            prop::option::of(duration()),
            prop::option::weighted(0.3, duration()),
            prop::option::weighted(0.3, duration()),
            prop::option::weighted(
                0.5,
                (
                    prop::option::of(float()),
                    prop::option::of(any::<u32>()),
                    prop::option::of(duration()),
                ),
            ),
            (duration(), duration()),
        ),
    )
        .prop_map(
            |(
                (max_attempts, initial_delay, multiplier, max_delay, jitter),
                (max_retry_after, attempt_timeout, deadline, budget, hints),
            )| RetryIn {
                max_attempts,
                initial_delay,
                multiplier,
                max_delay,
                jitter,
                max_retry_after,
                attempt_timeout,
                deadline,
                budget,
                hints,
            },
        )
        .boxed()
}

fn retry_budget(
    ratio: Option<f64>,
    min: Option<u32>,
    ttl: Option<Duration>,
) -> Result<RetryBudget, ConfigError> {
    let mut b = RetryBudget::builder();
    if let Some(r) = ratio {
        b = b.ratio(r);
    }
    if let Some(n) = min {
        b = b.min_per_sec(n);
    }
    if let Some(d) = ttl {
        b = b.ttl(d);
    }
    b.build()
}

fn retry_layer(i: &RetryIn) -> Result<RetryLayer, ConfigError> {
    let mut b = RetryLayer::builder().seed(3);
    if let Some(n) = i.max_attempts {
        b = b.max_attempts(n);
    }
    if let Some(d) = i.initial_delay {
        b = b.initial_delay(d);
    }
    if let Some(m) = i.multiplier {
        b = b.multiplier(m);
    }
    if let Some(d) = i.max_delay {
        b = b.max_delay(d);
    }
    if let Some(j) = i.jitter {
        b = b.jitter(j);
    }
    if let Some(d) = i.max_retry_after {
        b = b.max_retry_after(d);
    }
    if let Some(d) = i.attempt_timeout {
        b = b.attempt_timeout(d);
    }
    if let Some(d) = i.deadline {
        b = b.deadline(d);
    }
    if let Some((ratio, min, ttl)) = i.budget {
        b = b.budget(retry_budget(ratio, min, ttl)?);
    }
    b.build()
}

/// One call whose attempts fail with a rate limit (`hints.0`), an open circuit (`hints.1`),
/// a slow failure and a plain failure, then succeed: every wait is one the layer chose or
/// capped; then a call that succeeds at once. The attempts counted are the calls made.
async fn retry_serves(layer: RetryLayer, hints: (Duration, Duration)) {
    let handle = layer.handle();
    let calls = Arc::new(AtomicU32::new(0));
    let step = Arc::new(AtomicU32::new(0));
    let svc = layer.layer(service_fn({
        let (calls, step) = (calls.clone(), step.clone());
        move |()| {
            calls.fetch_add(1, Ordering::SeqCst);
            let n = step.fetch_add(1, Ordering::SeqCst);
            async move {
                match n {
                    0 => Err::<u32, BoxError>(RateLimited::new(hints.0).into()),
                    1 => Err(CircuitOpen::new(Some(hints.1)).into()),
                    2 => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        Err("slow".into())
                    }
                    3 => Err("refused".into()),
                    _ => Ok(n),
                }
            }
        }
    }));
    let start = Instant::now();
    let _ = svc.clone().oneshot(()).await;
    // At most four waits of an hour each, a 30 s attempt, and one more 30 s attempt cut.
    assert!(
        start.elapsed() <= Duration::from_secs(5 * 3600),
        "{:?}",
        start.elapsed()
    );
    step.store(4, Ordering::SeqCst);
    assert_eq!(svc.oneshot(()).await.unwrap(), 4);
    // Every service is gone, so every first attempt is published: the count is the calls.
    let m = handle.metrics();
    assert_eq!(m.attempts, u64::from(calls.load(Ordering::SeqCst)), "{m:?}");
    assert!(m.retries < m.attempts);
}

// ----- rate limit ------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct RateIn {
    rate: Option<(u32, Duration)>,
    burst: Option<u32>,
    wait: Option<Duration>,
    max_keys: Option<usize>,
}

fn rate_in() -> BoxedStrategy<RateIn> {
    (
        prop::option::weighted(0.9, (count_u32(), duration())),
        prop::option::of(count_u32()),
        prop::option::weighted(0.3, duration()),
        prop::option::of(count_usize()),
    )
        .prop_map(|(rate, burst, wait, max_keys)| RateIn {
            rate,
            burst,
            wait,
            max_keys,
        })
        .boxed()
}

fn rate_builder(i: &RateIn) -> RateLimitBuilder {
    let mut b = RateLimitLayer::builder();
    if let Some((n, per)) = i.rate {
        b = b.rate(n, per);
    }
    if let Some(n) = i.burst {
        b = b.burst(n);
    }
    if let Some(d) = i.wait {
        b = b.wait_up_to(d);
    }
    if let Some(n) = i.max_keys {
        b = b.max_keys(n);
    }
    b
}

/// Spends the burst (when it is small enough to spend), checks the next call is refused
/// (or waits), waits as long as the refusal says, and checks a call then goes through.
async fn rate_limit_serves(layer: RateLimitLayer) {
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|()| async { Ok::<_, BoxError>(()) }));
    if handle.burst() > 64 {
        svc.ready().await.unwrap().call(()).await.unwrap();
        return;
    }
    let mut retry_after = None;
    for _ in 0..=handle.burst() {
        match svc.ready().await.unwrap().call(()).await {
            Ok(()) => {}
            Err(e) => {
                let limited = e.downcast_ref::<RateLimited>().expect("a rate limit");
                retry_after = Some(limited.retry_after());
                header_of(limited.retry_after());
                break;
            }
        }
    }
    if let Some(d) = retry_after {
        tokio::time::advance(d + Duration::from_nanos(1)).await;
        svc.ready().await.unwrap().call(()).await.unwrap();
    }
    let _ = handle.remaining();
}

// ----- correlation -----------------------------------------------------------------------

#[derive(Debug, Clone)]
struct CorrelationIn {
    names: Option<Vec<String>>,
    max_len: Option<usize>,
    chars: Option<Vec<u8>>,
}

fn correlation_in() -> BoxedStrategy<CorrelationIn> {
    (
        prop::option::of(prop::collection::vec("[a-z-]{1,12}|.{0,4}", 0..10)),
        prop::option::of(prop_oneof![4 => 1usize..200, 1 => any::<usize>()]),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
    )
        .prop_map(|(names, max_len, chars)| CorrelationIn {
            names,
            max_len,
            chars,
        })
        .boxed()
}

/// One request with a value under each name, one without: the id that comes out is valid.
fn correlation_serves(layer: CorrelationIdLayer, value: &HeaderValue) {
    let names = Arc::new(layer.handle().header_names().to_vec());
    let svc = layer.layer(service_fn({
        let names = names.clone();
        move |req: Request<()>| {
            // The handler sees one value, under the first name only.
            assert_eq!(req.headers().get_all(&names[0]).iter().count(), 1);
            for name in &names[1..] {
                assert!(req.headers().get(name).is_none());
            }
            async { Ok::<_, BoxError>(Response::new(())) }
        }
    }));
    for with_value in [true, false] {
        let mut req = Request::new(());
        if with_value {
            for name in names.iter() {
                req.headers_mut().append(name.clone(), value.clone());
            }
        }
        let res = svc.clone().oneshot(req).now_or_never().unwrap().unwrap();
        assert_eq!(res.headers().get_all(&names[0]).iter().count(), 1);
        for name in &names[1..] {
            assert!(res.headers().get(name).is_none());
        }
    }
}

// ----- the properties --------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn circuit_breaker_builder(i in breaker_in()) {
        paused(async {
            match breaker_builder(&i).build() {
                Err(e) => refused(&e),
                Ok(layer) => breaker_serves(layer).await,
            }
        })
    }

    #[test]
    fn bulkhead_builder(i in bulkhead_in()) {
        paused(async {
            match make_bulkhead(&i).build() {
                Err(e) => refused(&e),
                Ok(layer) => bulkhead_serves(layer).await,
            }
        })
    }

    #[test]
    fn bulkhead_resize(n in count_usize()) {
        let layer = BulkheadLayer::new(2).unwrap();
        match layer.handle().set_max_concurrent(n) {
            Err(e) => {
                refused(&e);
                prop_assert_eq!(layer.handle().capacity(), 2);
            }
            Ok(()) => paused(bulkhead_serves(layer)),
        }
    }

    #[test]
    fn retry_builder(i in retry_in()) {
        match retry_layer(&i) {
            Err(e) => refused(&e),
            Ok(layer) => paused(retry_serves(layer, i.hints)),
        }
    }

    #[test]
    fn rate_limit_builder(i in rate_in()) {
        paused(async {
            match rate_builder(&i).build() {
                Err(e) => refused(&e),
                Ok(layer) => rate_limit_serves(layer).await,
            }
        })
    }

    #[test]
    fn rate_limit_resize(n in count_u32(), per in duration(), burst in count_u32()) {
        paused(async {
            let layer = RateLimitLayer::builder().rate(2, Duration::from_secs(1)).build().unwrap();
            let handle = layer.handle();
            if let Err(e) = handle.set_rate(n, per) {
                refused(&e);
            }
            if let Err(e) = handle.set_burst(burst) {
                refused(&e);
            }
            rate_limit_serves(layer).await;
        });
    }

    #[test]
    fn correlation_builder(i in correlation_in(), value in "[ -~]{0,40}") {
        let mut b = CorrelationIdLayer::builder();
        if let Some(names) = &i.names {
            let Ok(names) = names
                .iter()
                .map(|n| http::header::HeaderName::try_from(n.as_str()))
                .collect::<Result<Vec<_>, _>>()
            else {
                return Ok(());
            };
            b = b.header_names(names);
        }
        if let Some(n) = i.max_len {
            b = b.max_len(n);
        }
        if let Some(chars) = &i.chars {
            match CharSet::from_bytes(chars) {
                Ok(chars) => b = b.allowed_chars(chars),
                Err(e) => {
                    refused(&e);
                    return Ok(());
                }
            }
        }
        match b.build() {
            Err(e) => refused(&e),
            Ok(layer) => correlation_serves(layer, &HeaderValue::from_str(&value).unwrap()),
        }
    }

    #[test]
    fn client_stack_attempt_timeout(timeout in duration()) {
        match ClientStack::new().with_attempt_timeout(timeout) {
            Err(e) => refused(&e),
            Ok(stack) => paused(async move {
                let client = stack.layer(service_fn(|_: Request<String>| async {
                    Ok::<_, BoxError>(Response::new(String::new()))
                }));
                client.oneshot(Request::new(String::new())).await.unwrap();
            }),
        }
    }
}

/// The config structs: the same values through a config document's structs, as a stack's
/// sections too.
#[cfg(feature = "serde")]
mod config {
    use super::*;
    use seawall::config::{
        BulkheadConfig, CircuitBreakerConfig, ClientStackConfig, CorrelationIdConfig,
        OpenDurationGrowth, RateLimitConfig, RetryBudgetConfig, RetryConfig, ServerStackConfig,
        SlowCalls, TimeWindow,
    };

    fn make_breaker_config(i: &BreakerIn) -> CircuitBreakerConfig {
        let mut c = CircuitBreakerConfig::default();
        c.consecutive_failures = i.consecutive;
        c.failure_rate = i.failure_rate;
        c.count_window = i.count_window;
        c.time_window = i
            .time_window
            .map(|(length, buckets)| TimeWindow { length, buckets });
        c.minimum_calls = i.minimum_calls;
        c.slow_calls = i.slow.map(|(duration, rate)| SlowCalls { duration, rate });
        c.open_duration = i.open;
        c.open_duration_growth = i
            .growth
            .map(|(multiplier, max)| OpenDurationGrowth { multiplier, max });
        c.jitter = i.jitter;
        c.jitter_seed = Some(7);
        c.half_open_probes = i.probes;
        c.event_capacity = i.events;
        c
    }

    fn make_bulkhead_config(i: &BulkheadIn) -> BulkheadConfig {
        let mut c = BulkheadConfig::default();
        c.max_concurrent = i.max_concurrent;
        c.max_wait = i.max_wait;
        c.max_waiting = i.max_waiting;
        c.retry_after = i.retry_after;
        c
    }

    fn make_retry_config(i: &RetryIn) -> RetryConfig {
        let mut c = RetryConfig::default();
        c.max_attempts = i.max_attempts;
        c.initial_delay = i.initial_delay;
        c.multiplier = i.multiplier;
        c.max_delay = i.max_delay;
        c.jitter = i.jitter;
        c.max_retry_after = i.max_retry_after;
        c.attempt_timeout = i.attempt_timeout;
        c.deadline = i.deadline;
        c.seed = Some(3);
        c.budget = i.budget.map(|(ratio, min, ttl)| {
            let mut b = RetryBudgetConfig::default();
            b.ratio = ratio;
            b.min_per_sec = min;
            b.ttl = ttl;
            b
        });
        c
    }

    fn make_rate_config(i: &RateIn) -> RateLimitConfig {
        let mut c = RateLimitConfig::default();
        c.rate = i.rate.map(|(n, _)| n);
        c.per = i.rate.map(|(_, per)| per);
        c.burst = i.burst;
        c.wait_up_to = i.wait;
        c.max_keys = i.max_keys;
        c
    }

    /// Refused, the path of the error names a field of the document.
    fn refused_at(e: &ConfigError) {
        refused(e);
        assert!(e.path().ends_with(e.field()), "{e}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn circuit_breaker_config(i in breaker_in()) {
            paused(async {
                match make_breaker_config(&i).build() {
                    Err(e) => refused_at(&e),
                    Ok(layer) => breaker_serves(layer).await,
                }
            })
        }

        #[test]
        fn bulkhead_config(i in bulkhead_in()) {
            paused(async {
                match make_bulkhead_config(&i).build() {
                    Err(e) => refused_at(&e),
                    Ok(layer) => bulkhead_serves(layer).await,
                }
            })
        }

        #[test]
        fn retry_config_and_budget_config(i in retry_in()) {
            paused(async {
                match make_retry_config(&i).build() {
                    Err(e) => refused_at(&e),
                    Ok(layer) => retry_serves(layer, i.hints).await,
                }
            })
        }

        #[test]
        fn rate_limit_config(i in rate_in()) {
            paused(async {
                match make_rate_config(&i).build() {
                    Err(e) => refused_at(&e),
                    Ok(layer) => rate_limit_serves(layer).await,
                }
            })
        }

        #[test]
        fn correlation_config(
            names in prop::option::of(prop::collection::vec(".{0,12}", 0..10)),
            max_len in prop::option::of(any::<usize>()),
            chars in prop::option::of(".{0,20}"),
        ) {
            let mut c = CorrelationIdConfig::default();
            c.header_names = names;
            c.max_len = max_len;
            c.allowed_chars = chars;
            match c.build() {
                Err(e) => refused_at(&e),
                Ok(layer) => correlation_serves(layer, &HeaderValue::from_static("abc")),
            }
        }

        #[test]
        fn client_stack_config(
            breaker in breaker_in(),
            bulkhead in bulkhead_in(),
            retry in retry_in(),
            timeout in prop::option::of(duration()),
        ) {
            let mut c = ClientStackConfig::default();
            c.circuit_breaker = make_breaker_config(&breaker);
            c.bulkhead = make_bulkhead_config(&bulkhead);
            c.retry = make_retry_config(&retry);
            c.attempt_timeout = timeout;
            match c.build() {
                Err(e) => refused_at(&e),
                Ok(stack) => paused(async move {
                    let breaker = stack.breaker();
                    let client = stack.layer(service_fn(|_: Request<String>| async {
                        let mut res = Response::new(String::new());
                        *res.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                        Ok::<_, BoxError>(res)
                    }));
                    // Failures through retry, breaker and bulkhead: answers or refusals, no panic.
                    for _ in 0..20 {
                        let _ = Box::pin(client.clone().oneshot(Request::new(String::new()))).await;
                    }
                    let _ = breaker.metrics();
                }),
            }
        }

        #[test]
        fn server_stack_config(
            rate in rate_in(),
            bulkhead in bulkhead_in(),
            max_len in prop::option::of(any::<usize>()),
        ) {
            let mut c = ServerStackConfig::default();
            c.rate_limit = make_rate_config(&rate);
            c.bulkhead = make_bulkhead_config(&bulkhead);
            c.correlation.max_len = max_len;
            paused(async move { match c.build() {
                Err(e) => refused_at(&e),
                Ok(stack) => {
                    let app = stack.layer(service_fn(|_: Request<String>| async {
                        Ok::<_, BoxError>(Response::new(String::new()))
                    }));
                    for _ in 0..10 {
                        let res = app.clone().oneshot(Request::new(String::new())).await.unwrap();
                        if let Some(v) = res.headers().get(http::header::RETRY_AFTER) {
                            let secs: u64 = v.to_str().unwrap().parse().unwrap();
                            assert!(secs <= MAX_DELAY.as_secs());
                        }
                        assert_eq!(res.headers().get_all("x-correlation-id").iter().count(), 1);
                    }
                }
            }});
        }
    }

    #[test]
    fn huge_capacities_in_a_document_are_config_errors() {
        for doc in [
            "event_capacity = 9223372036854775807",
            "event_capacity = 4611686018427387904",
            "open_duration = \"213503982334601d\"",
            "open_duration_growth = { multiplier = 1e10, max = \"25h\" }",
            "open_duration_growth = { multiplier = inf, max = \"1h\" }",
            "open_duration_growth = { multiplier = nan, max = \"1h\" }",
        ] {
            let config: CircuitBreakerConfig = toml::from_str(doc).unwrap();
            let e = config.build().unwrap_err();
            refused(&e);
        }
        let config: BulkheadConfig = toml::from_str("max_wait = \"213503982334601d\"").unwrap();
        assert_eq!(config.build().unwrap_err().field(), "max_wait");
    }
}
