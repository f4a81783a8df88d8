//! Adaptive throttling (`Builder::adaptive_throttling`), with paused time: the rejection
//! probability follows Google SRE's formula over the window, against a reference model.
#![cfg(feature = "circuit-breaker")]

use proptest::prelude::*;
use seawall::circuit_breaker::{CircuitBreakerLayer, State};
use seawall::error::CircuitOpen;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::advance;
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};

const BUCKET_US: u64 = 100_000;
const BUCKETS: u64 = 20;

fn throttled(
    k: f64,
    seed: u64,
) -> (
    impl Service<bool, Response = (), Error = BoxError> + Clone,
    seawall::circuit_breaker::CircuitBreakerHandle,
) {
    let layer = CircuitBreakerLayer::builder()
        .adaptive_throttling(k)
        .minimum_calls(1)
        .jitter_seed(seed)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(service_fn(|fail: bool| async move {
        if fail {
            Err::<(), BoxError>("down".into())
        } else {
            Ok(())
        }
    }));
    (svc, handle)
}

/// The reference: every call of the window that reached the dependency and whether it
/// succeeded, by 100 ms bucket; the probability is recomputed when the breaker does (after a
/// failure, and after a success while it is above 0).
struct Model {
    k: f64,
    window: VecDeque<(u64, bool)>,
    p: f64,
}

impl Model {
    fn record(&mut self, now_us: u64, accepted: bool) {
        self.window.push_back((now_us / BUCKET_US, accepted));
        if !accepted || self.p > 0.0 {
            let bucket = now_us / BUCKET_US;
            let live = self.window.iter().filter(|e| e.0 + BUCKETS > bucket);
            let requests = live.clone().count() as f64;
            let accepts = live.filter(|e| e.1).count() as f64;
            self.p = ((requests - self.k * accepts) / (requests + 1.0)).clamp(0.0, 1.0);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_rejection_probability_follows_the_reference_model(
        k in 1.0f64..4.0,
        seed in any::<u64>(),
        ops in proptest::collection::vec((any::<bool>(), 0u64..300), 1..200),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        rt.block_on(async {
            let (mut svc, handle) = throttled(k, seed);
            let mut model = Model { k, window: VecDeque::new(), p: 0.0 };
            let start = tokio::time::Instant::now();
            for (fail, wait_ms) in ops {
                advance(Duration::from_millis(wait_ms)).await;
                let now_us = start.elapsed().as_micros() as u64;
                let r = svc.ready().await.unwrap().call(fail).await;
                let rejected = matches!(&r, Err(e) if e.is::<CircuitOpen>());
                prop_assert!(!rejected || model.p > 0.0, "rejected at probability 0");
                if !rejected {
                    model.record(now_us, !fail);
                }
                let p = handle.metrics().rejection_probability;
                prop_assert!((p - model.p).abs() < 1e-12, "breaker {} model {}", p, model.p);
                prop_assert_eq!(handle.state(), State::Closed);
            }
            Ok(())
        })?;
    }
}

#[tokio::test(start_paused = true)]
async fn two_calls_in_five_failing_are_never_throttled_at_k_2() {
    let (mut svc, handle) = throttled(2.0, 1);
    for i in 0..2_000u64 {
        advance(Duration::from_millis(3)).await;
        let r = svc.ready().await.unwrap().call(i % 5 >= 3).await;
        assert!(!matches!(&r, Err(e) if e.is::<CircuitOpen>()), "call {i}");
    }
    assert_eq!(handle.metrics().rejections, 0);
}

#[tokio::test(start_paused = true)]
async fn a_dead_dependency_is_throttled_and_traffic_comes_back_with_the_window() {
    let (mut svc, handle) = throttled(2.0, 7);
    // 300 calls a second, all failing, for 3 s.
    let (mut reached, mut calls) = (0u64, 0u64);
    for _ in 0..900 {
        advance(Duration::from_micros(3_333)).await;
        calls += 1;
        let r = svc.ready().await.unwrap().call(true).await;
        reached += u64::from(!matches!(&r, Err(e) if e.is::<CircuitOpen>()));
    }
    let p = handle.metrics().rejection_probability;
    assert!(p > 0.9, "{p}");
    // Once the window is full of failures, about 1 in (requests + 1) calls gets through.
    assert!(
        reached * 10 < calls,
        "{reached} of {calls} calls reached a dead dependency"
    );
    // Recovered: within the 2 s window, traffic is back.
    let mut ok_last_second = 0;
    for i in 0..900 {
        advance(Duration::from_micros(3_333)).await;
        let r = svc.ready().await.unwrap().call(false).await;
        if i >= 600 {
            ok_last_second += u32::from(r.is_ok());
        }
    }
    assert_eq!(
        ok_last_second, 300,
        "2 s after recovery every call goes through"
    );
    assert_eq!(handle.metrics().rejection_probability, 0.0);
}

#[test]
fn adaptive_throttling_refuses_a_count_window_and_a_bad_k() {
    let b = CircuitBreakerLayer::builder;
    for builder in [
        b().adaptive_throttling(0.5),
        b().adaptive_throttling(f64::NAN),
        b().adaptive_throttling(2.0).count_window(100),
        b().adaptive_throttling(2.0).consecutive_failures(3),
    ] {
        let field = builder.build().unwrap_err().field();
        assert!(
            field == "adaptive_throttling" || field == "consecutive_failures",
            "{field}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn metrics_only_throttling_counts_what_it_would_reject_and_rejects_nothing() {
    let layer = CircuitBreakerLayer::builder()
        .adaptive_throttling(2.0)
        .minimum_calls(1)
        .metrics_only(true)
        .jitter_seed(3)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|()| async {
        Err::<(), BoxError>("down".into())
    }));
    for _ in 0..300 {
        advance(Duration::from_millis(3)).await;
        let r = svc.ready().await.unwrap().call(()).await;
        assert!(!matches!(&r, Err(e) if e.is::<CircuitOpen>()), "rejected");
    }
    let m = handle.metrics();
    assert!(m.rejection_probability > 0.9, "{m:?}");
    assert!(
        m.rejections > 200,
        "it would have rejected most calls: {m:?}"
    );
    assert_eq!(m.calls, 300);
}
