//! Behaviour of the retry layer on generic services, with paused time.
#![cfg(feature = "retry")]

use seawall::classify::Outcome;
use seawall::error::{CircuitOpen, RateLimited};
use seawall::retry::error::{AttemptTimedOut, DeadlineExceeded};
use seawall::retry::{Jitter, RetryBudget, RetryLayer};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};

/// Records when each attempt starts.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Instant>>>);

impl Log {
    /// Records an attempt; returns its index (0 for the first).
    fn record(&self) -> usize {
        let mut v = self.0.lock().unwrap();
        v.push(Instant::now());
        v.len() - 1
    }
    fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    fn gaps(&self) -> Vec<Duration> {
        let v = self.0.lock().unwrap();
        v.windows(2).map(|w| w[1] - w[0]).collect()
    }
}

/// A service that fails its first `failures` attempts with `"refused"`, then answers the
/// attempt number.
fn flaky(
    log: &Log,
    failures: usize,
) -> impl Service<(), Response = usize, Error = BoxError, Future = impl Send> + Clone {
    let log = log.clone();
    service_fn(move |()| {
        let n = log.record();
        async move {
            if n < failures {
                Err::<usize, BoxError>("refused".into())
            } else {
                Ok(n)
            }
        }
    })
}

fn ms(v: &[u64]) -> Vec<Duration> {
    v.iter().map(|&m| Duration::from_millis(m)).collect()
}

/// The delays a seeded layer picks for an always-failing call with six attempts, as reported
/// to the retry hook; checks the time between attempts matches them (the paused clock rounds
/// a sleep up to the next millisecond).
async fn delays_for(jitter: Jitter, seed: u64) -> Vec<Duration> {
    let log = Log::default();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let layer = {
        let seen = seen.clone();
        RetryLayer::builder()
            .max_attempts(6)
            .initial_delay(Duration::from_millis(100))
            .multiplier(2.0)
            .max_delay(Duration::from_millis(1000))
            .jitter(jitter)
            .seed(seed)
            .on_retry(move |e| seen.lock().unwrap().push(e.delay()))
            .build()
            .unwrap()
    };
    let err = layer.layer(flaky(&log, usize::MAX)).oneshot(()).await;
    assert!(err.is_err());
    assert_eq!(log.count(), 6);
    let delays = seen.lock().unwrap().clone();
    for (gap, delay) in log.gaps().iter().zip(&delays) {
        assert!(
            *gap >= *delay && *gap - *delay < Duration::from_millis(1),
            "{gap:?} vs {delay:?}"
        );
    }
    delays
}

#[tokio::test(start_paused = true)]
async fn no_jitter_delays_are_exact_exponential_capped_at_max_delay() {
    assert_eq!(
        delays_for(Jitter::None, 1).await,
        ms(&[100, 200, 400, 800, 1000])
    );
}

#[tokio::test(start_paused = true)]
async fn full_jitter_delays_are_exact_under_a_seed_and_within_zero_to_exp() {
    let d = delays_for(Jitter::Full, 42).await;
    assert_eq!(
        d,
        delays_for(Jitter::Full, 42).await,
        "same seed, same delays"
    );
    assert_ne!(
        d,
        delays_for(Jitter::Full, 43).await,
        "another seed, other delays"
    );
    let exp = ms(&[100, 200, 400, 800, 1000]);
    for (got, cap) in d.iter().zip(&exp) {
        assert!(got <= cap, "{got:?} > {cap:?}");
    }
    assert_eq!(d, FULL_42.map(Duration::from_nanos).to_vec());
}

#[tokio::test(start_paused = true)]
async fn equal_jitter_delays_are_exact_under_a_seed_and_within_half_to_exp() {
    let d = delays_for(Jitter::Equal, 42).await;
    assert_eq!(d, delays_for(Jitter::Equal, 42).await);
    let exp = ms(&[100, 200, 400, 800, 1000]);
    for (got, cap) in d.iter().zip(&exp) {
        assert!(
            *got >= *cap / 2 && got <= cap,
            "{got:?} not in [{:?}, {cap:?}]",
            *cap / 2
        );
    }
    assert_eq!(d, EQUAL_42.map(Duration::from_nanos).to_vec());
}

#[tokio::test(start_paused = true)]
async fn decorrelated_jitter_delays_are_exact_under_a_seed_and_within_base_to_3x_previous() {
    let d = delays_for(Jitter::Decorrelated, 42).await;
    assert_eq!(d, delays_for(Jitter::Decorrelated, 42).await);
    let mut previous = Duration::from_millis(100);
    for got in &d {
        assert!(*got >= Duration::from_millis(100), "{got:?} below base");
        assert!(
            *got <= (previous * 3).min(Duration::from_secs(1)),
            "{got:?}"
        );
        previous = *got;
    }
    assert_eq!(d, DECORRELATED_42.map(Duration::from_nanos).to_vec());
}

// Recorded from seed 42; the bounds above hold for any seed.
const FULL_42: [u64; 5] = [66913288, 37346044, 398898066, 69733604, 997594297];
const EQUAL_42: [u64; 5] = [83456644, 118673022, 399449033, 434866802, 998797149];
const DECORRELATED_42: [u64; 5] = [233826576, 212314443, 635464139, 257457817, 770755920];

#[tokio::test(start_paused = true)]
async fn max_attempts_is_never_exceeded_and_the_last_error_is_returned() {
    let log = Log::default();
    let layer = RetryLayer::builder().max_attempts(4).build().unwrap();
    let handle = layer.handle();
    let err = layer
        .layer(flaky(&log, usize::MAX))
        .oneshot(())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "refused");
    assert_eq!(log.count(), 4);
    let m = handle.metrics();
    assert_eq!((m.attempts, m.retries, m.exhausted), (4, 3, 1));
}

#[tokio::test(start_paused = true)]
async fn success_after_failures_is_returned() {
    let log = Log::default();
    let layer = RetryLayer::builder().max_attempts(5).build().unwrap();
    let n = layer.layer(flaky(&log, 2)).oneshot(()).await.unwrap();
    assert_eq!(n, 2);
    assert_eq!(log.count(), 3);
}

#[tokio::test(start_paused = true)]
async fn one_attempt_means_no_retry() {
    let log = Log::default();
    let layer = RetryLayer::builder().max_attempts(1).build().unwrap();
    assert!(layer.layer(flaky(&log, 1)).oneshot(()).await.is_err());
    assert_eq!(log.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn outcomes_other_than_failure_are_not_retried() {
    let log = Log::default();
    let layer = RetryLayer::builder()
        .classify(|r: &Result<usize, BoxError>| match r {
            Err(e) if e.to_string() == "refused" => Outcome::Ignored,
            Err(_) => Outcome::Failure,
            Ok(_) => Outcome::Success,
        })
        .build()
        .unwrap();
    assert!(layer.layer(flaky(&log, 1)).oneshot(()).await.is_err());
    assert_eq!(log.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_clone_function_returning_none_sends_the_request_once() {
    let log = Log::default();
    let layer = RetryLayer::builder()
        .clone_with(|req: &Option<u8>| req.map(Some))
        .build()
        .unwrap();
    let svc = {
        let log = log.clone();
        service_fn(move |_: Option<u8>| {
            log.record();
            async { Err::<(), BoxError>("refused".into()) }
        })
    };
    assert!(layer.layer(svc.clone()).oneshot(None).await.is_err());
    assert_eq!(log.count(), 1, "None: not retryable");
    assert!(layer.layer(svc).oneshot(Some(1)).await.is_err());
    assert_eq!(log.count(), 4, "Some: cloned and retried");
}

#[tokio::test(start_paused = true)]
async fn a_rejections_retry_after_sets_the_next_delay() {
    let log = Log::default();
    let svc = {
        let log = log.clone();
        service_fn(move |()| {
            let n = log.record();
            async move {
                match n {
                    0 => Err::<(), BoxError>(RateLimited::new(Duration::from_millis(750)).into()),
                    _ => Ok(()),
                }
            }
        })
    };
    let layer = RetryLayer::builder()
        .jitter(Jitter::None)
        .initial_delay(Duration::from_millis(10))
        .build()
        .unwrap();
    layer.layer(svc).oneshot(()).await.unwrap();
    assert_eq!(log.gaps(), ms(&[750]));
}

#[tokio::test(start_paused = true)]
async fn an_absurd_rejection_retry_after_is_clamped_to_the_cap() {
    let log = Log::default();
    let svc = {
        let log = log.clone();
        service_fn(move |()| {
            let n = log.record();
            async move {
                match n {
                    0 => Err::<(), BoxError>(RateLimited::new(Duration::MAX).into()),
                    _ => Ok(()),
                }
            }
        })
    };
    let layer = RetryLayer::builder()
        .jitter(Jitter::None)
        .max_retry_after(Duration::from_secs(2))
        .build()
        .unwrap();
    layer.layer(svc).oneshot(()).await.unwrap();
    assert_eq!(log.gaps(), ms(&[2000]));
}

/// A stub breaker: open (with `retry_after`) for the first `open_for` calls, then answering.
fn breaker_stub(
    log: &Log,
    open_for: usize,
    retry_after: Option<Duration>,
) -> impl Service<(), Response = (), Error = BoxError, Future = impl Send> + Clone {
    let log = log.clone();
    service_fn(move |()| {
        let n = log.record();
        async move {
            if n < open_for {
                Err::<(), BoxError>(CircuitOpen::new(retry_after).into())
            } else {
                Ok(())
            }
        }
    })
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_is_retried_after_its_retry_after_when_it_fits() {
    let log = Log::default();
    let layer = RetryLayer::builder()
        .jitter(Jitter::None)
        .deadline(Duration::from_secs(5))
        .build()
        .unwrap();
    let svc = breaker_stub(&log, 1, Some(Duration::from_millis(1500)));
    layer.layer(svc).oneshot(()).await.unwrap();
    assert_eq!(log.gaps(), ms(&[1500]));
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_whose_retry_after_passes_the_deadline_is_returned_at_once() {
    let log = Log::default();
    let layer = RetryLayer::builder()
        .deadline(Duration::from_secs(5))
        .build()
        .unwrap();
    let start = Instant::now();
    let svc = breaker_stub(&log, 1, Some(Duration::from_secs(10)));
    let err = layer.layer(svc).oneshot(()).await.unwrap_err();
    assert!(err.is::<CircuitOpen>());
    assert_eq!(log.count(), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_without_retry_after_is_returned_at_once() {
    let log = Log::default();
    let layer = RetryLayer::builder().build().unwrap();
    let svc = breaker_stub(&log, 1, None);
    let err = layer.layer(svc).oneshot(()).await.unwrap_err();
    assert!(err.is::<CircuitOpen>());
    assert_eq!(log.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_is_not_retried_past_max_attempts() {
    let log = Log::default();
    let layer = RetryLayer::builder().max_attempts(2).build().unwrap();
    let svc = breaker_stub(&log, 10, Some(Duration::from_millis(100)));
    assert!(layer.layer(svc).oneshot(()).await.is_err());
    assert_eq!(log.count(), 2);
}

/// Hangs forever on the first `hangs` attempts, then answers.
fn hanging(
    log: &Log,
    hangs: usize,
) -> impl Service<(), Response = usize, Error = BoxError, Future = impl Send> + Clone {
    let log = log.clone();
    service_fn(move |()| {
        let n = log.record();
        async move {
            if n < hangs {
                std::future::pending::<()>().await;
            }
            Ok::<_, BoxError>(n)
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_hung_attempt_is_cut_by_the_attempt_timeout_and_retried() {
    let log = Log::default();
    let layer = RetryLayer::builder()
        .jitter(Jitter::None)
        .initial_delay(Duration::from_millis(100))
        .attempt_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let n = layer.layer(hanging(&log, 1)).oneshot(()).await.unwrap();
    assert_eq!(n, 1);
    assert_eq!(log.gaps(), ms(&[1100]));
}

#[tokio::test(start_paused = true)]
async fn every_attempt_timing_out_returns_attempt_timed_out() {
    let log = Log::default();
    let layer = RetryLayer::builder()
        .max_attempts(2)
        .attempt_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = layer
        .layer(hanging(&log, usize::MAX))
        .oneshot(())
        .await
        .unwrap_err();
    assert_eq!(
        err.downcast_ref::<AttemptTimedOut>().unwrap().timeout(),
        Duration::from_millis(300)
    );
    assert_eq!(log.count(), 2);
}

#[tokio::test(start_paused = true)]
async fn no_retry_starts_after_the_deadline() {
    let log = Log::default();
    let layer = RetryLayer::builder()
        .max_attempts(10)
        .jitter(Jitter::None)
        .initial_delay(Duration::from_secs(1))
        .multiplier(1.0)
        .deadline(Duration::from_millis(2500))
        .build()
        .unwrap();
    let start = Instant::now();
    let err = layer
        .layer(flaky(&log, usize::MAX))
        .oneshot(())
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "refused", "the last error, not swallowed");
    assert_eq!(
        log.count(),
        3,
        "attempts at 0 s, 1 s, 2 s; 3 s is past 2.5 s"
    );
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn the_deadline_cancels_an_attempt_in_flight() {
    let log = Log::default();
    let layer = RetryLayer::builder()
        .deadline(Duration::from_secs(2))
        .build()
        .unwrap();
    let start = Instant::now();
    let err = layer
        .layer(hanging(&log, usize::MAX))
        .oneshot(())
        .await
        .unwrap_err();
    assert!(err.is::<DeadlineExceeded>());
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn the_budget_refuses_retries_beyond_its_ratio_under_concurrency() {
    let budget = RetryBudget::builder()
        .ratio(0.2)
        .min_per_sec(0)
        .build()
        .unwrap();
    let layer = RetryLayer::builder()
        .max_attempts(3)
        .jitter(Jitter::None)
        .budget(budget)
        .build()
        .unwrap();
    let handle = layer.handle();
    let log = Log::default();
    // Every attempt fails after 10 ms, so all 50 first attempts are in flight together.
    let svc = {
        let log = log.clone();
        service_fn(move |()| {
            log.record();
            async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Err::<(), BoxError>("refused".into())
            }
        })
    };
    let svc = layer.layer(svc);
    let tasks: Vec<_> = (0..50)
        .map(|_| tokio::spawn(svc.clone().oneshot(())))
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap_err().to_string(), "refused");
    }
    let m = handle.metrics();
    assert_eq!(m.retries, 10, "20% of 50 requests");
    assert_eq!(m.budget_rejections, 50);
    assert_eq!(log.count(), 60);
}

#[tokio::test(start_paused = true)]
async fn a_call_dropped_during_its_backoff_counts_no_retry_and_spends_no_token() {
    let budget = RetryBudget::builder()
        .ratio(0.0)
        .min_per_sec(1)
        .ttl(Duration::from_secs(2))
        .build()
        .unwrap();
    let layer = RetryLayer::builder()
        .max_attempts(5)
        .initial_delay(Duration::from_millis(100))
        .jitter(Jitter::None)
        .budget(budget.clone())
        .build()
        .unwrap();
    let handle = layer.handle();
    let log = Log::default();
    let mut svc = layer.layer(flaky(&log, usize::MAX));
    for calls in 1..=4 {
        let call = svc.ready().await.unwrap().call(());
        // The first attempt fails at once; the call is dropped 50 ms into its 100 ms backoff.
        let cut = tokio::time::timeout(Duration::from_millis(50), call).await;
        assert!(cut.is_err(), "still in its backoff");
        assert_eq!(log.count(), calls);
    }
    drop(svc); // publishes the first attempts counted by this clone
    let m = handle.metrics();
    assert_eq!((m.attempts, m.retries), (4, 0), "{m:?}");
    assert_eq!(m.attempts, log.count() as u64);
    assert_eq!(budget.available(), 2, "no token spent");

    // A retry that does start is counted, and spends its token, when it starts.
    let mut svc = layer.layer(flaky(&log, usize::MAX));
    let call = svc.ready().await.unwrap().call(());
    let cut = tokio::time::timeout(Duration::from_millis(150), call).await;
    assert!(cut.is_err(), "in its second backoff");
    assert_eq!(log.count(), 6);
    assert_eq!(handle.metrics().retries, 1);
    assert_eq!(budget.available(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_budget_spent_during_the_backoff_refuses_at_the_start_and_returns_the_last_result() {
    // One token; two calls fail together, both see it, both wait: the first to start takes it.
    let budget = RetryBudget::builder()
        .ratio(0.0)
        .min_per_sec(1)
        .ttl(Duration::from_secs(1))
        .build()
        .unwrap();
    let layer = RetryLayer::builder()
        .max_attempts(3)
        .initial_delay(Duration::from_millis(100))
        .jitter(Jitter::None)
        .budget(budget.clone())
        .build()
        .unwrap();
    let log = Log::default();
    let svc = layer.layer(flaky(&log, 2));
    let (a, b) = tokio::join!(svc.clone().oneshot(()), svc.oneshot(()));
    let mut answers = [a.map_err(|e| e.to_string()), b.map_err(|e| e.to_string())];
    answers.sort();
    assert_eq!(answers, [Ok(2), Err("refused".to_string())]);
    let m = layer.handle().metrics();
    assert_eq!(
        (m.attempts, m.retries, m.budget_rejections),
        (3, 1, 1),
        "{m:?}"
    );
    assert_eq!(log.count(), 3);
    assert_eq!(budget.available(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_budget_floor_allows_retries_with_no_traffic_yet() {
    let budget = RetryBudget::builder()
        .ratio(0.0)
        .min_per_sec(1)
        .ttl(Duration::from_secs(2))
        .build()
        .unwrap();
    let layer = RetryLayer::builder()
        .max_attempts(10)
        .budget(budget)
        .build()
        .unwrap();
    let log = Log::default();
    assert!(layer
        .layer(flaky(&log, usize::MAX))
        .oneshot(())
        .await
        .is_err());
    assert_eq!(log.count(), 3, "a reserve of 1/s * 2 s = 2 retries");
    assert_eq!(layer.handle().metrics().budget_rejections, 1);
}

#[tokio::test(start_paused = true)]
async fn clones_and_services_of_one_layer_share_metrics() {
    let layer = RetryLayer::builder().build().unwrap();
    let log = Log::default();
    let a = layer.layer(flaky(&log, usize::MAX));
    let b = layer.clone().layer(flaky(&log, usize::MAX));
    let _ = a.clone().oneshot(()).await;
    let _ = b.oneshot(()).await;
    assert_eq!(layer.handle().metrics().attempts, 6);
    assert_eq!(a.handle().metrics().retries, 4);
}

#[tokio::test(start_paused = true)]
async fn the_retry_hook_sees_attempt_delay_and_reason() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let layer = {
        let seen = seen.clone();
        RetryLayer::builder()
            .jitter(Jitter::None)
            .on_retry(move |e| {
                seen.lock()
                    .unwrap()
                    .push((e.attempt(), e.delay(), e.reason().to_string()))
            })
            .build()
            .unwrap()
    };
    let log = Log::default();
    layer.layer(flaky(&log, 2)).oneshot(()).await.unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            (1, Duration::from_millis(100), "error: refused".to_string()),
            (2, Duration::from_millis(200), "error: refused".to_string()),
        ]
    );
}

#[derive(Clone)]
struct NeverReady;

impl Service<()> for NeverReady {
    type Response = ();
    type Error = BoxError;
    type Future = std::future::Ready<Result<(), BoxError>>;
    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Err("not ready".into()))
    }
    fn call(&mut self, _: ()) -> Self::Future {
        unreachable!("never ready")
    }
}

#[tokio::test(start_paused = true)]
async fn readiness_errors_pass_through() {
    let layer = RetryLayer::builder().build().unwrap();
    let err = layer.layer(NeverReady).oneshot(()).await.unwrap_err();
    assert_eq!(err.to_string(), "not ready");
}

#[test]
fn bad_configuration_is_an_error_naming_the_field() {
    let field = |r: Result<RetryLayer, seawall::ConfigError>| r.unwrap_err().field();
    assert_eq!(
        field(RetryLayer::builder().max_attempts(0).build()),
        "max_attempts"
    );
    assert_eq!(
        field(RetryLayer::builder().multiplier(f64::NAN).build()),
        "multiplier"
    );
    assert_eq!(
        field(RetryLayer::builder().multiplier(0.5).build()),
        "multiplier"
    );
    assert_eq!(
        field(
            RetryLayer::builder()
                .initial_delay(Duration::from_secs(5))
                .max_delay(Duration::from_secs(1))
                .build()
        ),
        "max_delay"
    );
    assert_eq!(
        field(
            RetryLayer::builder()
                .max_retry_after(Duration::from_secs(7200))
                .build()
        ),
        "max_retry_after"
    );
    assert_eq!(
        field(
            RetryLayer::builder()
                .attempt_timeout(Duration::ZERO)
                .build()
        ),
        "attempt_timeout"
    );
    assert_eq!(
        field(RetryLayer::builder().deadline(Duration::ZERO).build()),
        "deadline"
    );
}

#[test]
fn services_and_futures_are_send_sync_and_static() {
    fn assert_send_sync<T: Send + Sync + 'static>(_: &T) {}
    fn assert_send<T: Send + 'static>(_: &T) {}
    let layer = RetryLayer::builder().build().unwrap();
    let mut svc = layer.layer(service_fn(|()| async { Ok::<(), BoxError>(()) }));
    assert_send_sync(&layer);
    assert_send_sync(&svc);
    let fut = svc.call(());
    assert_send(&fut);
}

/// Collects what a `tracing` subscriber writes.
#[tokio::test(start_paused = true)]
async fn without_a_deadline_an_open_circuit_is_not_waited_for_longer_than_the_backoff() {
    // The breaker half-opens in 30 s: well under the 60 s `max_retry_after`, far over the
    // 100 ms first backoff. Without a deadline the call fails fast instead of sitting it out.
    let log = Log::default();
    let layer = RetryLayer::builder().max_attempts(3).build().unwrap();
    let start = Instant::now();
    let svc = breaker_stub(&log, 1, Some(Duration::from_secs(30)));
    let err = layer.layer(svc).oneshot(()).await.unwrap_err();
    assert!(err.is::<CircuitOpen>());
    assert_eq!(log.count(), 1);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn without_a_deadline_an_open_circuit_within_the_backoff_is_retried_after_it() {
    let log = Log::default();
    let layer = RetryLayer::builder()
        .initial_delay(Duration::from_millis(200))
        .build()
        .unwrap();
    let svc = breaker_stub(&log, 1, Some(Duration::from_millis(150)));
    layer.layer(svc).oneshot(()).await.unwrap();
    assert_eq!(log.gaps(), ms(&[150]));
}

/// What a failed attempt's future holds (a permit, a connection) is released before the
/// backoff, not kept until the next attempt.
#[tokio::test]
async fn a_failed_attempt_is_dropped_before_the_backoff() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts the attempt futures alive.
    struct Held(Arc<AtomicUsize>);
    impl Drop for Held {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// An attempt that keeps its `Held` after it has answered, as a permit-holding future
    /// (tower's `ConcurrencyLimit`'s, say) does until it is dropped.
    struct Attempt {
        _held: Held,
        result: Option<Result<usize, BoxError>>,
    }
    impl std::future::Future for Attempt {
        type Output = Result<usize, BoxError>;
        fn poll(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Self::Output> {
            std::task::Poll::Ready(self.result.take().expect("polled after completion"))
        }
    }

    tokio::time::pause();
    let alive = Arc::new(AtomicUsize::new(0));
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = {
        let alive = alive.clone();
        service_fn(move |()| {
            alive.fetch_add(1, Ordering::SeqCst);
            let held = Held(alive.clone());
            let n = calls.fetch_add(1, Ordering::SeqCst);
            let result = if n == 0 {
                Err::<usize, BoxError>("refused".into())
            } else {
                Ok(n)
            };
            Attempt {
                _held: held,
                result: Some(result),
            }
        })
    };
    let layer = RetryLayer::builder()
        .max_attempts(2)
        .initial_delay(Duration::from_secs(1))
        .jitter(Jitter::None)
        .build()
        .unwrap();
    let mut call = Box::pin(layer.layer(svc).oneshot(()));
    // The first attempt fails; the call now waits out the backoff.
    assert!(futures::poll!(call.as_mut()).is_pending());
    assert_eq!(
        alive.load(Ordering::SeqCst),
        0,
        "the failed attempt is still held"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(call.await.unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn fixed_backoff_waits_the_same_delay_before_every_retry_even_past_the_default_cap() {
    let log = Log::default();
    // 30 s is past the default `max_delay` of 20 s: the fixed delay is its own cap.
    let layer = RetryLayer::builder()
        .max_attempts(4)
        .fixed_backoff(Duration::from_secs(30))
        .build()
        .unwrap();
    assert!(layer
        .layer(flaky(&log, usize::MAX))
        .oneshot(())
        .await
        .is_err());
    assert_eq!(log.gaps(), ms(&[30_000, 30_000, 30_000]));
}

#[tokio::test(start_paused = true)]
async fn linear_backoff_adds_its_step_before_each_retry_up_to_max_delay() {
    let log = Log::default();
    let layer = RetryLayer::builder()
        .max_attempts(6)
        .linear_backoff(Duration::from_millis(100), Duration::from_millis(50))
        .max_delay(Duration::from_millis(220))
        .build()
        .unwrap();
    assert!(layer
        .layer(flaky(&log, usize::MAX))
        .oneshot(())
        .await
        .is_err());
    assert_eq!(log.gaps(), ms(&[100, 150, 200, 220, 220]));
}

#[tokio::test(start_paused = true)]
async fn a_jitter_set_after_fixed_backoff_randomises_it_within_the_fixed_delay() {
    let log = Log::default();
    let layer = RetryLayer::builder()
        .max_attempts(6)
        .fixed_backoff(Duration::from_millis(500))
        .jitter(Jitter::Full)
        .seed(3)
        .build()
        .unwrap();
    assert!(layer
        .layer(flaky(&log, usize::MAX))
        .oneshot(())
        .await
        .is_err());
    let gaps = log.gaps();
    assert_eq!(gaps.len(), 5);
    // The paused clock rounds a sleep up to the next millisecond.
    assert!(
        gaps.iter().all(|g| *g <= Duration::from_millis(501)),
        "{gaps:?}"
    );
    assert!(
        gaps.iter().any(|g| *g < Duration::from_millis(500)),
        "{gaps:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn calls_saved_by_a_retry_are_counted_and_no_others() {
    for timed in [false, true] {
        let mut builder = RetryLayer::builder().max_attempts(3);
        if timed {
            // A timer puts even first attempts on the out-of-line path.
            builder = builder.attempt_timeout(Duration::from_secs(1));
        }
        let layer = builder.build().unwrap();
        let log = Log::default();
        layer.layer(flaky(&log, 0)).oneshot(()).await.unwrap();
        assert_eq!(
            layer.handle().metrics().succeeded_after_retry,
            0,
            "timed: {timed}"
        );
        layer
            .layer(flaky(&Log::default(), 1))
            .oneshot(())
            .await
            .unwrap();
        layer
            .layer(flaky(&Log::default(), 2))
            .oneshot(())
            .await
            .unwrap();
        let failed = layer.layer(flaky(&Log::default(), 3)).oneshot(()).await;
        assert!(failed.is_err());
        let m = layer.handle().metrics();
        assert_eq!(
            (m.succeeded_after_retry, m.exhausted, m.retries),
            (2, 1, 5),
            "timed: {timed}"
        );
    }
}

/// A fallback hook that counts its calls and answers 99 for an error.
fn counting_fallback(
    seen: &Arc<Mutex<Vec<String>>>,
) -> impl Fn(Result<usize, BoxError>) -> Result<usize, BoxError> + Clone {
    let seen = seen.clone();
    move |last: Result<usize, BoxError>| {
        seen.lock()
            .unwrap()
            .push(format!("{:?}", last.as_ref().map_err(|e| e.to_string())));
        last.or(Ok(99))
    }
}

#[tokio::test(start_paused = true)]
async fn on_exhausted_maps_the_last_failure_once_and_never_a_success() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let layer = RetryLayer::builder()
        .max_attempts(3)
        .on_exhausted(counting_fallback(&seen))
        .build()
        .unwrap();
    let log = Log::default();
    assert_eq!(
        layer
            .layer(flaky(&log, usize::MAX))
            .oneshot(())
            .await
            .unwrap(),
        99
    );
    assert_eq!(log.count(), 3, "every attempt made first");
    assert_eq!(*seen.lock().unwrap(), [r#"Err("refused")"#]);
    assert_eq!(
        layer
            .layer(flaky(&Log::default(), 2))
            .oneshot(())
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        layer
            .layer(flaky(&Log::default(), 0))
            .oneshot(())
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "successes never reach the hook"
    );
    let m = layer.handle().metrics();
    assert_eq!((m.exhausted, m.succeeded_after_retry), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn on_exhausted_sees_failures_the_budget_refuses_and_requests_that_cannot_be_retried() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let empty = RetryBudget::builder()
        .ratio(0.0)
        .min_per_sec(0)
        .build()
        .unwrap();
    let layer = RetryLayer::builder()
        .max_attempts(3)
        .budget(empty)
        .on_exhausted(counting_fallback(&seen))
        .build()
        .unwrap();
    let log = Log::default();
    assert_eq!(
        layer
            .layer(flaky(&log, usize::MAX))
            .oneshot(())
            .await
            .unwrap(),
        99
    );
    assert_eq!(log.count(), 1, "the budget refused every retry");
    assert_eq!(layer.handle().metrics().budget_rejections, 1);

    let once = RetryLayer::builder()
        .clone_with(|_: &()| None)
        .on_exhausted(counting_fallback(&seen))
        .build()
        .unwrap();
    let log = Log::default();
    assert_eq!(
        once.layer(flaky(&log, usize::MAX))
            .oneshot(())
            .await
            .unwrap(),
        99
    );
    assert_eq!(log.count(), 1);
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn on_exhausted_sees_the_deadline_cutting_an_attempt_in_flight() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let layer = RetryLayer::builder()
        .deadline(Duration::from_millis(300))
        .on_exhausted(counting_fallback(&seen))
        .build()
        .unwrap();
    let hung = service_fn(|()| std::future::pending::<Result<usize, BoxError>>());
    assert_eq!(layer.layer(hung).oneshot(()).await.unwrap(), 99);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].contains("deadline"), "{seen:?}");
}
