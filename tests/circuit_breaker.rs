//! Integration tests of the circuit breaker, in paused time.
#![cfg(all(feature = "circuit-breaker", feature = "http"))]

use seawall::circuit_breaker::{
    Builder, CircuitBreaker, CircuitBreakerHandle, CircuitBreakerLayer, State, StateChange,
};
use seawall::classify::{Outcome, ServerErrorsAsFailures};
use seawall::error::{CircuitOpen, Rejection};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{advance, sleep};
use tower::util::BoxCloneService;
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};

/// What the inner service does for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Ok,
    Fail,
    Ignore,
    /// Succeeds after this many milliseconds.
    Slow(u64),
}

#[derive(Debug)]
struct InnerError(&'static str);
impl std::fmt::Display for InnerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}
impl std::error::Error for InnerError {}

type Reply = Result<&'static str, InnerError>;
type InnerFuture = Pin<Box<dyn Future<Output = Reply> + Send>>;

fn respond(call: Call) -> InnerFuture {
    Box::pin(async move {
        match call {
            Call::Ok => Ok("ok"),
            Call::Fail => Err(InnerError("boom")),
            Call::Ignore => Err(InnerError("ignore me")),
            Call::Slow(ms) => {
                sleep(Duration::from_millis(ms)).await;
                Ok("slow")
            }
        }
    })
}

fn classify(result: &Reply) -> Outcome {
    match result {
        Ok(_) => Outcome::Success,
        Err(InnerError("ignore me")) => Outcome::Ignored,
        Err(_) => Outcome::Failure,
    }
}

type Svc = BoxCloneService<Call, &'static str, BoxError>;

fn breaker(builder: Builder) -> (Svc, CircuitBreakerHandle) {
    let layer = builder
        .classifier(classify as fn(&Reply) -> Outcome)
        .build()
        .expect("valid config");
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|c: Call| respond(c)));
    (BoxCloneService::new(svc), handle)
}

async fn call(svc: &mut Svc, c: Call) -> Result<&'static str, BoxError> {
    svc.ready().await?.call(c).await
}

fn is_open(result: &Result<&'static str, BoxError>) -> Option<CircuitOpen> {
    result
        .as_ref()
        .err()
        .and_then(|e| e.downcast_ref::<CircuitOpen>())
        .copied()
}

/// A consecutive-failures breaker with a fixed open duration of 10 s (no growth, no jitter),
/// so that tests can assert exact times.
fn consecutive(n: u32) -> Builder {
    CircuitBreakerLayer::builder()
        .consecutive_failures(n)
        .open_duration(Duration::from_secs(10))
        .open_duration_growth(1.0, Duration::from_secs(10))
        .jitter(0.0)
        .half_open_probes(2)
}

/// Trips a consecutive-failures breaker of threshold `n`.
/// Waits out the open duration and closes the breaker with one successful probe.
async fn wait_and_close(svc: &mut Svc) {
    let d = is_open(&call(svc, Call::Ok).await)
        .unwrap()
        .retry_after()
        .unwrap();
    advance(d).await;
    call(svc, Call::Ok).await.unwrap();
}

async fn trip(svc: &mut Svc, n: u32) {
    for _ in 0..n {
        let r = call(svc, Call::Fail).await;
        assert!(is_open(&r).is_none(), "rejected before tripping");
    }
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_trip_closed_to_open() {
    let (mut svc, handle) = breaker(consecutive(3));
    call(&mut svc, Call::Fail).await.unwrap_err();
    call(&mut svc, Call::Fail).await.unwrap_err();
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.metrics().consecutive_failures, 2);
    call(&mut svc, Call::Fail).await.unwrap_err();
    assert_eq!(handle.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn a_success_resets_the_failure_streak() {
    let (mut svc, handle) = breaker(consecutive(3));
    for _ in 0..5 {
        call(&mut svc, Call::Fail).await.unwrap_err();
        call(&mut svc, Call::Fail).await.unwrap_err();
        call(&mut svc, Call::Ok).await.unwrap();
    }
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.metrics().consecutive_failures, 0);
}

#[tokio::test(start_paused = true)]
async fn ignored_outcomes_count_neither_way() {
    let (mut svc, handle) = breaker(consecutive(2));
    call(&mut svc, Call::Fail).await.unwrap_err();
    for _ in 0..10 {
        call(&mut svc, Call::Ignore).await.unwrap_err();
    }
    // The ignored calls neither reset the streak nor extended it.
    assert_eq!(handle.metrics().consecutive_failures, 1);
    assert_eq!(handle.metrics().ignored, 10);
    call(&mut svc, Call::Fail).await.unwrap_err();
    assert_eq!(handle.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn open_rejects_at_once_with_time_until_half_open() {
    let (mut svc, handle) = breaker(consecutive(1));
    trip(&mut svc, 1).await;
    let r = call(&mut svc, Call::Ok).await;
    assert_eq!(
        is_open(&r).unwrap().retry_after(),
        Some(Duration::from_secs(10))
    );
    advance(Duration::from_secs(4)).await;
    let r = call(&mut svc, Call::Ok).await;
    assert_eq!(
        is_open(&r).unwrap().retry_after(),
        Some(Duration::from_secs(6))
    );
    let err = r.unwrap_err();
    let rejection = Rejection::find(&*err).unwrap();
    assert_eq!(rejection.layer(), "circuit_breaker");
    assert_eq!(handle.metrics().rejections, 2);
    assert_eq!(handle.metrics().retry_after, Some(Duration::from_secs(6)));
}

#[tokio::test(start_paused = true)]
async fn rejected_calls_never_reach_the_inner_service() {
    let hits = Arc::new(AtomicUsize::new(0));
    let layer = CircuitBreakerLayer::builder()
        .consecutive_failures(1)
        .build()
        .unwrap();
    let h = Arc::clone(&hits);
    let mut svc = layer.layer(service_fn(move |_: ()| {
        h.fetch_add(1, Ordering::SeqCst);
        async { Err::<(), _>(InnerError("boom")) }
    }));
    svc.ready().await.unwrap().call(()).await.unwrap_err();
    for _ in 0..5 {
        let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
        assert!(err.is::<CircuitOpen>());
    }
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through_unchanged() {
    let (mut svc, _) = breaker(consecutive(5));
    let err = call(&mut svc, Call::Fail).await.unwrap_err();
    assert_eq!(err.downcast_ref::<InnerError>().unwrap().0, "boom");
    assert!(Rejection::find(&*err).is_none());
}

#[tokio::test(start_paused = true)]
async fn open_half_opens_after_the_open_duration_and_closes_after_enough_probes() {
    let (mut svc, handle) = breaker(consecutive(1));
    trip(&mut svc, 1).await;
    advance(Duration::from_millis(9_999)).await;
    assert!(is_open(&call(&mut svc, Call::Ok).await).is_some());
    advance(Duration::from_millis(1)).await;
    assert_eq!(
        handle.state(),
        State::HalfOpen,
        "half-open once the time is up, no call needed"
    );
    call(&mut svc, Call::Ok).await.unwrap();
    assert_eq!(handle.state(), State::HalfOpen);
    call(&mut svc, Call::Ok).await.unwrap();
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens() {
    let (mut svc, handle) = breaker(consecutive(1));
    trip(&mut svc, 1).await;
    advance(Duration::from_secs(10)).await;
    call(&mut svc, Call::Ok).await.unwrap();
    assert_eq!(handle.state(), State::HalfOpen);
    call(&mut svc, Call::Fail).await.unwrap_err();
    assert_eq!(handle.state(), State::Open);
    let r = call(&mut svc, Call::Ok).await;
    assert_eq!(
        is_open(&r).unwrap().retry_after(),
        Some(Duration::from_secs(10))
    );
}

/// A rate breaker (50% of 10 calls) tripped and waited out, now half-open with 10 probes.
async fn half_open_rate_breaker() -> (Svc, CircuitBreakerHandle) {
    let (mut svc, handle) = breaker(
        CircuitBreakerLayer::builder()
            .failure_rate(0.5)
            .count_window(10)
            .minimum_calls(10)
            .open_duration(Duration::from_secs(10))
            .jitter(0.0)
            .half_open_probes(10),
    );
    for _ in 0..10 {
        call(&mut svc, Call::Fail).await.unwrap_err();
    }
    assert_eq!(handle.state(), State::Open);
    advance(Duration::from_secs(10)).await;
    (svc, handle)
}

#[tokio::test(start_paused = true)]
async fn half_open_closes_when_a_fifth_of_its_probes_fail() {
    // 20% of the probes fail, under the 50% threshold: Resilience4j closes; the old rule (any
    // failed probe reopens) did not.
    let (mut svc, handle) = half_open_rate_breaker().await;
    for i in 0..10 {
        let c = if i % 5 == 0 { Call::Fail } else { Call::Ok };
        let r = call(&mut svc, c).await;
        assert!(is_open(&r).is_none(), "probe {i} was rejected");
        if i < 5 {
            // Five successes are not yet enough to be sure.
            assert_eq!(handle.state(), State::HalfOpen, "after probe {i}");
        }
    }
    // Decided as soon as it was certain: 2 failures of 10 can no longer reach 5.
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn half_open_reopens_when_three_fifths_of_its_probes_fail() {
    let (mut svc, handle) = half_open_rate_breaker().await;
    // Three of every five probes fail (fail, fail, fail, ok, ok, fail, fail): the fifth
    // failure, at the seventh probe, reaches 50% of the ten and reopens it.
    let mut probes = 0;
    loop {
        let c = if probes % 5 < 3 { Call::Fail } else { Call::Ok };
        let r = call(&mut svc, c).await;
        assert!(is_open(&r).is_none());
        probes += 1;
        if handle.state() != State::HalfOpen {
            break;
        }
    }
    assert_eq!(handle.state(), State::Open);
    assert_eq!(
        probes, 7,
        "5 failures of 10 probes settle it at the seventh"
    );
    let m = handle.metrics();
    // The metrics show the probes that reopened it.
    assert_eq!((m.window_calls, m.failure_rate), (7, 5.0 / 7.0), "{m:?}");
}

#[tokio::test(start_paused = true)]
async fn a_slow_probe_reopens_when_slow_calls_are_detected() {
    let (mut svc, handle) = breaker(
        CircuitBreakerLayer::builder()
            .failure_rate(0.5)
            .count_window(4)
            .minimum_calls(2)
            .slow_calls(Duration::from_millis(100), 1.0)
            .open_duration(Duration::from_secs(1))
            .half_open_probes(1),
    );
    call(&mut svc, Call::Fail).await.unwrap_err();
    call(&mut svc, Call::Fail).await.unwrap_err();
    assert_eq!(handle.state(), State::Open);
    advance(Duration::from_secs(1)).await;
    call(&mut svc, Call::Slow(150)).await.unwrap();
    assert_eq!(handle.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn open_duration_grows_on_repeated_trips_up_to_the_cap() {
    let (mut svc, _) = breaker(
        consecutive(1)
            .open_duration(Duration::from_secs(1))
            .open_duration_growth(2.0, Duration::from_secs(5))
            .half_open_probes(1),
    );
    trip(&mut svc, 1).await;
    let mut seen = Vec::new();
    for _ in 0..5 {
        let r = call(&mut svc, Call::Ok).await;
        let d = is_open(&r).unwrap().retry_after().unwrap();
        seen.push(d.as_secs());
        advance(d).await;
        // The probe fails: open again, for longer.
        call(&mut svc, Call::Fail).await.unwrap_err();
    }
    assert_eq!(seen, [1, 2, 4, 5, 5]);
    // A close that does not last: the next trip keeps the grown duration.
    wait_and_close(&mut svc).await;
    advance(Duration::from_millis(4_900)).await;
    trip(&mut svc, 1).await;
    let r = call(&mut svc, Call::Ok).await;
    assert_eq!(
        is_open(&r).unwrap().retry_after(),
        Some(Duration::from_secs(5))
    );
    // Closed for the longest open duration (5 s): the growth is forgotten.
    wait_and_close(&mut svc).await;
    advance(Duration::from_secs(5)).await;
    trip(&mut svc, 1).await;
    let r = call(&mut svc, Call::Ok).await;
    assert_eq!(
        is_open(&r).unwrap().retry_after(),
        Some(Duration::from_secs(1))
    );
}

#[tokio::test(start_paused = true)]
async fn jitter_shortens_the_open_duration_within_its_fraction() {
    let mut durations = Vec::new();
    for seed in 0..20 {
        let (mut svc, _) = breaker(consecutive(1).jitter(0.5).jitter_seed(seed));
        trip(&mut svc, 1).await;
        let r = call(&mut svc, Call::Ok).await;
        durations.push(is_open(&r).unwrap().retry_after().unwrap());
    }
    assert!(durations
        .iter()
        .all(|d| *d >= Duration::from_secs(5) && *d <= Duration::from_secs(10)));
    durations.sort();
    durations.dedup();
    assert!(durations.len() > 10, "jitter varies: {durations:?}");
}

#[tokio::test(start_paused = true)]
async fn count_window_trips_on_the_failure_rate_once_minimum_calls_are_seen() {
    let (mut svc, handle) = breaker(
        CircuitBreakerLayer::builder()
            .failure_rate(0.5)
            .count_window(10)
            .minimum_calls(4),
    );
    // Three failures: 100 %, but below the minimum number of calls.
    for _ in 0..3 {
        call(&mut svc, Call::Fail).await.unwrap_err();
    }
    assert_eq!(handle.state(), State::Closed);
    // A success makes four calls at 75 %; the breaker trips on failures only.
    call(&mut svc, Call::Ok).await.unwrap();
    assert_eq!(handle.state(), State::Closed);
    call(&mut svc, Call::Fail).await.unwrap_err();
    assert_eq!(handle.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn count_window_forgets_failures_that_slid_out() {
    let (mut svc, handle) = breaker(
        CircuitBreakerLayer::builder()
            .failure_rate(0.5)
            .count_window(4)
            .minimum_calls(4),
    );
    // F F S S: 50 % would trip, but the window only fills with the fourth call, a success.
    for c in [
        Call::Fail,
        Call::Ok,
        Call::Ok,
        Call::Ok,
        Call::Ok,
        Call::Fail,
    ] {
        let _ = call(&mut svc, c).await;
    }
    // Window: S S S F: 25 %.
    assert_eq!(handle.state(), State::Closed);
    assert_eq!(handle.metrics().failure_rate, 0.25);
    assert_eq!(handle.metrics().window_calls, 4);
    call(&mut svc, Call::Fail).await.unwrap_err(); // S S F F: 50 %
    assert_eq!(handle.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn time_window_counts_only_the_last_buckets() {
    let (mut svc, handle) = breaker(
        CircuitBreakerLayer::builder()
            .failure_rate(0.5)
            .time_window(Duration::from_secs(10), 10)
            .minimum_calls(4),
    );
    for _ in 0..3 {
        call(&mut svc, Call::Fail).await.unwrap_err();
    }
    assert_eq!(handle.state(), State::Closed);
    // Those three failures slide out of the window.
    advance(Duration::from_secs(11)).await;
    for _ in 0..3 {
        call(&mut svc, Call::Ok).await.unwrap();
    }
    call(&mut svc, Call::Fail).await.unwrap_err();
    assert_eq!(
        handle.state(),
        State::Closed,
        "1 failure of 4 in the window"
    );
    call(&mut svc, Call::Fail).await.unwrap_err();
    call(&mut svc, Call::Fail).await.unwrap_err();
    assert_eq!(handle.state(), State::Open, "3 of 6 in the window");
}

#[tokio::test(start_paused = true)]
async fn slow_call_rate_trips_the_breaker() {
    let (mut svc, handle) = breaker(
        CircuitBreakerLayer::builder()
            .failure_rate(1.0)
            .count_window(4)
            .minimum_calls(4)
            .slow_calls(Duration::from_millis(500), 0.5),
    );
    call(&mut svc, Call::Slow(499)).await.unwrap();
    call(&mut svc, Call::Slow(600)).await.unwrap();
    call(&mut svc, Call::Ok).await.unwrap();
    assert_eq!(handle.state(), State::Closed);
    call(&mut svc, Call::Slow(500)).await.unwrap();
    assert_eq!(
        handle.state(),
        State::Open,
        "2 of 4 calls took 500 ms or more"
    );
    assert_eq!(handle.metrics().slow_calls, 2);
}

#[tokio::test(start_paused = true)]
async fn force_open_force_closed_disable_and_reset() {
    let (mut svc, handle) = breaker(consecutive(2));
    handle.force_open();
    assert_eq!(handle.state(), State::ForcedOpen);
    let r = call(&mut svc, Call::Ok).await;
    assert_eq!(is_open(&r).unwrap().retry_after(), None);
    advance(Duration::from_secs(3600)).await;
    assert!(
        is_open(&call(&mut svc, Call::Ok).await).is_some(),
        "stays open"
    );

    handle.force_closed();
    assert_eq!(handle.state(), State::Closed);
    call(&mut svc, Call::Ok).await.unwrap();

    handle.disable();
    for _ in 0..10 {
        call(&mut svc, Call::Fail).await.unwrap_err();
    }
    assert_eq!(
        handle.state(),
        State::Disabled,
        "failures don't trip a disabled breaker"
    );

    handle.reset();
    assert_eq!(handle.state(), State::Closed);
    let m = handle.metrics();
    assert_eq!((m.calls, m.failures, m.rejections), (0, 0, 0));
    call(&mut svc, Call::Fail).await.unwrap_err();
    call(&mut svc, Call::Fail).await.unwrap_err();
    assert_eq!(handle.state(), State::Open, "trips again after a reset");
}

#[tokio::test(start_paused = true)]
async fn force_closed_starts_an_empty_window() {
    let (mut svc, handle) = breaker(consecutive(2));
    call(&mut svc, Call::Fail).await.unwrap_err();
    handle.force_closed();
    call(&mut svc, Call::Fail).await.unwrap_err();
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn metrics_count_calls_failures_and_rejections() {
    let (mut svc, handle) = breaker(consecutive(2));
    call(&mut svc, Call::Ok).await.unwrap();
    call(&mut svc, Call::Fail).await.unwrap_err();
    call(&mut svc, Call::Fail).await.unwrap_err();
    call(&mut svc, Call::Ok).await.unwrap_err();
    let m = handle.metrics();
    assert_eq!(m.state, State::Open);
    assert_eq!((m.calls, m.failures, m.rejections), (3, 2, 1));
    assert!((m.failure_rate - 2.0 / 3.0).abs() < 1e-9);
}

#[tokio::test(start_paused = true)]
async fn events_follow_every_transition() {
    let (mut svc, handle) = breaker(consecutive(1).half_open_probes(1));
    let mut events = handle.subscribe();
    trip(&mut svc, 1).await;
    advance(Duration::from_secs(10)).await;
    call(&mut svc, Call::Fail).await.unwrap_err(); // half-open, probe fails: open
    advance(Duration::from_secs(10)).await;
    call(&mut svc, Call::Ok).await.unwrap(); // half-open, probe succeeds: closed
    handle.force_open();
    handle.disable();
    handle.reset();
    let mut seen = Vec::new();
    while let Ok(StateChange { from, to, .. }) = events.try_recv() {
        seen.push((from, to));
    }
    use State::*;
    assert_eq!(
        seen,
        [
            (Closed, Open),
            (Open, HalfOpen),
            (HalfOpen, Open),
            (Open, HalfOpen),
            (HalfOpen, Closed),
            (Closed, ForcedOpen),
            (ForcedOpen, Disabled),
            (Disabled, Closed),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn opening_event_carries_the_open_duration() {
    let (mut svc, handle) = breaker(consecutive(1));
    let mut events = handle.subscribe();
    trip(&mut svc, 1).await;
    let e = events.try_recv().unwrap();
    assert_eq!(e.open_for, Some(Duration::from_secs(10)));
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_the_probe_count() {
    let (svc, handle) = breaker(consecutive(1).half_open_probes(3));
    trip(&mut svc.clone(), 1).await;
    advance(Duration::from_secs(10)).await;
    let mut probes = Vec::new();
    for _ in 0..3 {
        probes.push(tokio::spawn(svc.clone().oneshot(Call::Slow(100))));
    }
    tokio::task::yield_now().await;
    for _ in 0..5 {
        let r = svc.clone().oneshot(Call::Ok).await;
        assert!(is_open(&r).is_some(), "a fourth probe got through");
    }
    assert_eq!(handle.state(), State::HalfOpen);
    for p in probes {
        p.await.unwrap().unwrap();
    }
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_future_frees_its_slot() {
    let (mut svc, handle) = breaker(consecutive(1).half_open_probes(1));
    trip(&mut svc, 1).await;
    advance(Duration::from_secs(10)).await;
    let probe = svc.ready().await.unwrap().call(Call::Slow(1_000));
    assert_eq!(handle.state(), State::HalfOpen);
    assert!(
        is_open(&call(&mut svc, Call::Ok).await).is_some(),
        "slot taken"
    );
    drop(probe);
    call(&mut svc, Call::Ok).await.unwrap();
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn an_ignored_probe_frees_its_slot() {
    let (mut svc, handle) = breaker(consecutive(1).half_open_probes(1));
    trip(&mut svc, 1).await;
    advance(Duration::from_secs(10)).await;
    call(&mut svc, Call::Ignore).await.unwrap_err();
    assert_eq!(handle.state(), State::HalfOpen);
    call(&mut svc, Call::Ok).await.unwrap();
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_late_outcome_from_the_closed_state_is_not_taken_for_a_probe() {
    let (mut svc, handle) = breaker(consecutive(1).half_open_probes(1));
    let late = tokio::spawn(svc.clone().oneshot(Call::Slow(15_000)));
    tokio::task::yield_now().await;
    trip(&mut svc, 1).await;
    advance(Duration::from_secs(10)).await;
    let probe = tokio::spawn(svc.clone().oneshot(Call::Slow(10_000)));
    tokio::task::yield_now().await;
    assert_eq!(handle.state(), State::HalfOpen);
    // The late call succeeds while the probe is still running: no close.
    late.await.unwrap().unwrap();
    assert_eq!(handle.state(), State::HalfOpen);
    probe.await.unwrap().unwrap();
    assert_eq!(handle.state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn state_is_shared_by_clones_and_by_every_service_of_one_layer() {
    let layer = consecutive(2).build().unwrap();
    let handle = layer.handle();
    let mut a = layer.layer(service_fn(|c: Call| respond(c)));
    let mut b = layer.clone().layer(service_fn(|c: Call| respond(c)));
    let mut a2 = a.clone();
    a.ready().await.unwrap().call(Call::Fail).await.unwrap_err();
    b.ready().await.unwrap().call(Call::Fail).await.unwrap_err();
    assert_eq!(handle.state(), State::Open);
    let err = a2.ready().await.unwrap().call(Call::Ok).await.unwrap_err();
    assert!(err.is::<CircuitOpen>());
    assert_eq!(b.handle().state(), State::Open);

    // A second layer value is a second breaker.
    let other = consecutive(2).build().unwrap();
    let mut c = other.layer(service_fn(|c: Call| respond(c)));
    c.ready().await.unwrap().call(Call::Ok).await.unwrap();
    assert_eq!(other.handle().state(), State::Closed);
}

#[tokio::test(start_paused = true)]
async fn poll_ready_passes_the_inner_readiness_through() {
    let (mock, mut controller) = tower_test::mock::pair::<(), ()>();
    let layer = consecutive(1).build().unwrap();
    let mut svc = tower_test::mock::Spawn::new(layer.layer(mock));
    controller.allow(0);
    assert!(svc.poll_ready().is_pending());
    controller.allow(1);
    assert!(svc.poll_ready().is_ready());
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_leaves_the_inner_readiness_alone() {
    let (mock, mut controller) = tower_test::mock::pair::<(), ()>();
    let layer = consecutive(1).build().unwrap();
    let handle = layer.handle();
    let mut svc: CircuitBreaker<_, _> = layer.layer(mock);
    handle.force_open();
    controller.allow(1);
    let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
    assert!(err.is::<CircuitOpen>());
    // The permit was not spent: the inner service is still ready.
    handle.force_closed();
    let fut = svc.ready().await.unwrap().call(());
    controller.next_request().await.unwrap().1.send_response(());
    fut.await.unwrap();
}

mod http_face {
    use super::*;
    use ::http::{Request, Response, StatusCode};
    use axum::body::Body;
    use axum::routing::get;
    use axum::Router;
    use seawall::http::RejectionResponseLayer;
    use tower::ServiceBuilder;

    fn status_service(
        status: StatusCode,
    ) -> impl Service<(), Response = Response<()>, Error = BoxError, Future: Send> + Clone {
        service_fn(move |_: ()| async move {
            Ok::<_, BoxError>(Response::builder().status(status).body(()).unwrap())
        })
    }

    #[tokio::test(start_paused = true)]
    async fn server_errors_trip_a_breaker_and_client_errors_do_not() {
        let layer = CircuitBreakerLayer::builder()
            .consecutive_failures(3)
            .classifier(ServerErrorsAsFailures)
            .build()
            .unwrap();
        let handle = layer.handle();
        let mut not_found = layer.layer(status_service(StatusCode::NOT_FOUND));
        for _ in 0..10 {
            let res = not_found.ready().await.unwrap().call(()).await.unwrap();
            assert_eq!(res.status(), StatusCode::NOT_FOUND);
        }
        assert_eq!(handle.state(), State::Closed);
        assert_eq!(handle.metrics().failures, 0);

        let mut broken = layer.layer(status_service(StatusCode::INTERNAL_SERVER_ERROR));
        for _ in 0..3 {
            let res = broken.ready().await.unwrap().call(()).await.unwrap();
            assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        }
        assert_eq!(handle.state(), State::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn axum_router_answers_503_with_retry_after_while_open() {
        let breaker = CircuitBreakerLayer::builder()
            .consecutive_failures(2)
            .open_duration(Duration::from_secs(30))
            .jitter(0.0)
            .classifier(ServerErrorsAsFailures)
            .build()
            .unwrap();
        let handle = breaker.handle();
        let app: Router = Router::new()
            .route(
                "/fail",
                get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "down") }),
            )
            .route("/ok", get(|| async { "fine" }))
            .layer(
                ServiceBuilder::new()
                    .layer(RejectionResponseLayer::new())
                    .layer(breaker),
            );
        let get = |uri: &str| Request::get(uri).body(Body::empty()).unwrap();
        for _ in 0..2 {
            let res = app.clone().oneshot(get("/fail")).await.unwrap();
            assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        }
        assert_eq!(
            handle.state(),
            State::Open,
            "one breaker across routes and clones"
        );
        let res = app.clone().oneshot(get("/ok")).await.unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()["retry-after"], "30");

        advance(Duration::from_millis(20_500)).await;
        let res = app.clone().oneshot(get("/ok")).await.unwrap();
        assert_eq!(res.headers()["retry-after"], "10", "rounded up");

        advance(Duration::from_secs(10)).await;
        let res = app.clone().oneshot(get("/ok")).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
}

mod complete {
    //! What users of Resilience4j and Polly look for (#22): state true without traffic, a
    //! maximum wait in half-open, failing fast while open, manual transitions.
    use super::*;
    use seawall::circuit_breaker::IllegalTransition;
    use std::task::{Context, Poll};

    /// A probe of an hour, in a task of its own.
    fn spawn_stuck_probe(svc: &Svc) -> tokio::task::JoinHandle<Result<&'static str, BoxError>> {
        let mut probe = svc.clone();
        tokio::spawn(async move { call(&mut probe, Call::Slow(3_600_000)).await })
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_is_reported_and_published_when_the_time_is_up_without_traffic() {
        let (mut svc, handle) = breaker(consecutive(1));
        let mut changes = handle.subscribe();
        trip(&mut svc, 1).await;
        assert_eq!(changes.recv().await.unwrap().to, State::Open);
        advance(Duration::from_secs(10)).await;
        // The timer half-opens it: the event arrives with no call and no `state()` read.
        let change = tokio::time::timeout(Duration::from_millis(10), changes.recv())
            .await
            .expect("the half-open event comes when the time is up")
            .unwrap();
        assert_eq!((change.from, change.to), (State::Open, State::HalfOpen));
        assert_eq!(handle.state(), State::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_that_never_answers_cannot_hold_half_open_past_its_max_wait() {
        let (mut svc, handle) = breaker(
            consecutive(1)
                .half_open_probes(1)
                .max_wait_in_half_open(Duration::from_secs(30), State::Open),
        );
        trip(&mut svc, 1).await;
        advance(Duration::from_secs(10)).await;
        // The one probe hangs (an hour).
        let stuck = spawn_stuck_probe(&svc);
        tokio::task::yield_now().await;
        assert_eq!(handle.state(), State::HalfOpen);
        assert!(
            is_open(&call(&mut svc, Call::Ok).await).is_some(),
            "no slot left"
        );
        advance(Duration::from_secs(29)).await;
        assert_eq!(handle.state(), State::HalfOpen);
        advance(Duration::from_secs(1)).await;
        // Past the maximum wait: open again, for the configured period.
        assert_eq!(handle.state(), State::Open);
        let open = is_open(&call(&mut svc, Call::Ok).await).expect("open again");
        assert_eq!(open.retry_after(), Some(Duration::from_secs(10)));
        // The stuck probe's late success is ignored: it does not close the breaker.
        advance(Duration::from_secs(3_600)).await;
        stuck.await.unwrap().unwrap();
        let m = handle.metrics();
        assert_ne!(handle.state(), State::Closed, "{m:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_max_wait_can_close_instead_and_zero_waits_forever() {
        let b = || {
            consecutive(1)
                .half_open_probes(1)
                .max_wait_in_half_open(Duration::from_secs(30), State::Closed)
        };
        let (mut svc, handle) = breaker(b());
        trip(&mut svc, 1).await;
        advance(Duration::from_secs(10)).await;
        let _stuck = spawn_stuck_probe(&svc);
        tokio::task::yield_now().await;
        advance(Duration::from_secs(30)).await;
        assert_eq!(handle.state(), State::Closed);

        let (mut svc, handle) = breaker(
            consecutive(1)
                .half_open_probes(1)
                .max_wait_in_half_open(Duration::ZERO, State::Open),
        );
        trip(&mut svc, 1).await;
        advance(Duration::from_secs(10)).await;
        let _stuck = spawn_stuck_probe(&svc);
        tokio::task::yield_now().await;
        advance(Duration::from_secs(86_400)).await;
        assert_eq!(handle.state(), State::HalfOpen);

        let bad = CircuitBreakerLayer::builder()
            .max_wait_in_half_open(Duration::from_secs(1), State::Disabled);
        assert_eq!(bad.build().unwrap_err().field(), "max_wait_in_half_open");
    }

    #[tokio::test(start_paused = true)]
    async fn metrics_only_trips_and_reports_but_never_rejects() {
        let (mut svc, handle) = breaker(consecutive(2).metrics_only(true));
        let mut changes = handle.subscribe();
        trip(&mut svc, 2).await;
        assert_eq!(handle.state(), State::Open);
        assert_eq!(changes.recv().await.unwrap().to, State::Open);
        // Open, but every call goes through, and counts as a call it would have rejected.
        for _ in 0..3 {
            assert_eq!(call(&mut svc, Call::Ok).await.unwrap(), "ok");
        }
        let m = handle.metrics();
        assert_eq!((m.rejections, m.calls), (3, 5), "{m:?}");
        // It half-opens, judges its probes and closes as configured.
        advance(Duration::from_secs(10)).await;
        assert_eq!(handle.state(), State::HalfOpen);
        call(&mut svc, Call::Ok).await.unwrap();
        call(&mut svc, Call::Ok).await.unwrap();
        assert_eq!(handle.state(), State::Closed);
    }

    /// A service that is never ready, and counts its calls (it must get none).
    #[derive(Clone, Default)]
    struct NeverReady(Arc<AtomicUsize>);

    impl tower::Service<Call> for NeverReady {
        type Response = &'static str;
        type Error = InnerError;
        type Future = Pin<Box<dyn Future<Output = Result<&'static str, InnerError>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), InnerError>> {
            Poll::Pending
        }

        fn call(&mut self, _: Call) -> Self::Future {
            self.0.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok("never") })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_fails_fast_in_front_of_a_never_ready_service() {
        let layer = CircuitBreakerLayer::builder()
            .consecutive_failures(1)
            .build()
            .unwrap();
        let handle = layer.handle();
        let calls = NeverReady::default();
        let mut svc = layer.layer(calls.clone());
        // Closed: the inner service's readiness, so not ready.
        assert!(futures::poll!(std::pin::pin!(svc.ready())).is_pending());
        handle.force_open();
        let ready = tokio::time::timeout(Duration::from_secs(1), svc.ready()).await;
        let err = ready
            .expect("ready at once while open")
            .unwrap()
            .call(Call::Ok)
            .await
            .unwrap_err();
        assert!(err.is::<CircuitOpen>());
        handle.open_for(Duration::from_secs(5)).unwrap_err();
        handle.force_closed();
        handle.open_for(Duration::from_secs(5)).unwrap();
        let ready = tokio::time::timeout(Duration::from_secs(1), svc.ready()).await;
        let err = ready.unwrap().unwrap().call(Call::Ok).await.unwrap_err();
        let open = err.downcast_ref::<CircuitOpen>().unwrap();
        assert_eq!(open.retry_after(), Some(Duration::from_secs(5)));
        assert_eq!(
            calls.0.load(Ordering::SeqCst),
            0,
            "the inner service was never called"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn manual_transitions_open_for_a_time_and_half_open_or_say_why_not() {
        let (mut svc, handle) = breaker(consecutive(3));
        let refused = handle.half_open().unwrap_err();
        assert_eq!(
            (refused.from(), refused.to_state()),
            (State::Closed, State::HalfOpen)
        );
        assert!(refused.to_string().contains("CLOSED"), "{refused}");

        handle.open_for(Duration::from_secs(42)).unwrap();
        assert_eq!(handle.state(), State::Open);
        let open = is_open(&call(&mut svc, Call::Ok).await).unwrap();
        assert_eq!(open.retry_after(), Some(Duration::from_secs(42)));
        // It half-opens as if it had tripped.
        advance(Duration::from_secs(42)).await;
        assert_eq!(handle.state(), State::HalfOpen);
        assert!(handle.half_open().is_err(), "already half-open");

        handle.open_for(Duration::from_secs(600)).unwrap();
        handle.half_open().unwrap();
        assert_eq!(handle.state(), State::HalfOpen);
        call(&mut svc, Call::Ok).await.unwrap();
        call(&mut svc, Call::Ok).await.unwrap();
        assert_eq!(handle.state(), State::Closed);

        handle.disable();
        let e: IllegalTransition = handle.open_for(Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.from(), State::Disabled);
        assert!(handle.open_for(Duration::ZERO).is_err());
    }
}
