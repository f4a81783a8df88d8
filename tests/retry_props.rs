//! Properties of the retry layer and its budget, held against simple bounds.
#![cfg(feature = "retry")]

use proptest::prelude::*;
use seawall::retry::{Jitter, RetryBudget, RetryLayer};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tower::{service_fn, BoxError, Layer, ServiceExt};

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

fn jitter() -> impl Strategy<Value = Jitter> {
    prop_oneof![
        Just(Jitter::None),
        Just(Jitter::Full),
        Just(Jitter::Equal),
        Just(Jitter::Decorrelated)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    /// Every delay lies in `[0, max_delay]`, whatever the settings and the seed.
    #[test]
    fn delays_stay_within_zero_and_max_delay(
        initial_ms in 0u64..2_000,
        extra_ms in 0u64..5_000,
        multiplier in 1.0f64..10.0,
        jitter in jitter(),
        seed in any::<u64>(),
        attempts in 2u32..12,
    ) {
        let max = Duration::from_millis(initial_ms + extra_ms);
        let delays = Arc::new(Mutex::new(Vec::new()));
        let layer = {
            let delays = delays.clone();
            RetryLayer::builder()
                .max_attempts(attempts)
                .initial_delay(Duration::from_millis(initial_ms))
                .multiplier(multiplier)
                .max_delay(max)
                .jitter(jitter)
                .seed(seed)
                .on_retry(move |e| delays.lock().unwrap().push(e.delay()))
                .build()
                .unwrap()
        };
        let svc = layer.layer(service_fn(|()| async { Err::<(), BoxError>("down".into()) }));
        let _ = paused_runtime().block_on(svc.oneshot(()));
        let delays = delays.lock().unwrap();
        prop_assert_eq!(delays.len() as u32, attempts - 1);
        for d in delays.iter() {
            prop_assert!(*d <= max, "{:?} > {:?}", d, max);
        }
    }

    /// However the inner service answers, a call never makes more than `max_attempts`.
    #[test]
    fn attempts_never_exceed_the_maximum(
        max_attempts in 1u32..10,
        pattern in proptest::collection::vec(any::<bool>(), 1..20),
    ) {
        let calls = Arc::new(AtomicU32::new(0));
        let svc = {
            let calls = calls.clone();
            let pattern = Arc::new(pattern.clone());
            service_fn(move |()| {
                let n = calls.fetch_add(1, Ordering::SeqCst) as usize;
                let fail = pattern[n % pattern.len()];
                async move { if fail { Err::<(), BoxError>("down".into()) } else { Ok(()) } }
            })
        };
        let layer = RetryLayer::builder()
            .max_attempts(max_attempts)
            .jitter(Jitter::Full)
            .build()
            .unwrap();
        let result = paused_runtime().block_on(layer.layer(svc).oneshot(()));
        let made = calls.load(Ordering::SeqCst);
        prop_assert!(made <= max_attempts);
        // It stops at the first success.
        let first_success = pattern.iter().position(|f| !f).map(|i| i as u32 + 1);
        match first_success {
            Some(k) if k <= max_attempts => {
                prop_assert!(result.is_ok());
                prop_assert_eq!(made, k);
            }
            _ => {
                prop_assert!(result.is_err());
                prop_assert_eq!(made, max_attempts);
            }
        }
    }

    /// At one instant, a budget never grants more than `floor(ratio * deposits) + reserve`,
    /// and grants exactly that much when asked for more.
    #[test]
    fn budget_grants_at_most_ratio_times_requests_plus_floor(
        ratio in 0.0f64..3.0,
        min_per_sec in 0u32..5,
        ttl_secs in 1u64..10,
        deposits in 0u64..2_000,
        asks in 0u64..3_000,
    ) {
        let rt = paused_runtime();
        let _guard = rt.enter();
        let budget = RetryBudget::builder()
            .ratio(ratio)
            .min_per_sec(min_per_sec)
            .ttl(Duration::from_secs(ttl_secs))
            .build()
            .unwrap();
        for _ in 0..deposits {
            budget.deposit();
        }
        let granted = (0..asks).filter(|_| budget.try_withdraw()).count() as u64;
        let bound = (ratio * deposits as f64 + 1e-9).floor() as u64 + u64::from(min_per_sec) * ttl_secs;
        prop_assert!(granted <= bound, "granted {} > bound {}", granted, bound);
        prop_assert!(granted + 1 >= bound.min(asks), "granted {} of {}", granted, bound.min(asks));
    }

    /// Over time, with deposits and withdrawals interleaved, retries never exceed the ratio of
    /// all requests plus the floor of each TTL window the run spans.
    #[test]
    fn budget_over_time_never_exceeds_ratio_plus_floor(
        ratio in 0.0f64..1.0,
        min_per_sec in 0u32..3,
        steps in proptest::collection::vec((0u64..20, 0u64..20, 0u64..400), 1..40),
    ) {
        let rt = paused_runtime();
        let ttl = Duration::from_secs(1);
        let (granted, deposits, elapsed) = rt.block_on(async {
            let budget = RetryBudget::builder()
                .ratio(ratio)
                .min_per_sec(min_per_sec)
                .ttl(ttl)
                .build()
                .unwrap();
            let (mut granted, mut deposits) = (0u64, 0u64);
            let start = tokio::time::Instant::now();
            for (dep, asks, wait_ms) in &steps {
                for _ in 0..*dep {
                    budget.deposit();
                }
                deposits += dep;
                granted += (0..*asks).filter(|_| budget.try_withdraw()).count() as u64;
                tokio::time::advance(Duration::from_millis(*wait_ms)).await;
            }
            (granted, deposits, start.elapsed())
        });
        // A window spans at least nine tenths of the TTL (ten slots), so the floor can be spent
        // once per 0.9 s, plus once more at the start.
        let windows = (elapsed.as_secs_f64() / (0.9 * ttl.as_secs_f64())).floor() as u64 + 1;
        let bound = (ratio * deposits as f64 + 1e-9).floor() as u64 + u64::from(min_per_sec) * windows;
        prop_assert!(granted <= bound, "granted {} > bound {}", granted, bound);
    }
}

/// Many threads depositing and withdrawing at once never get more than the budget allows.
#[test]
fn budget_holds_under_threads() {
    let budget = RetryBudget::builder()
        .ratio(0.25)
        .min_per_sec(0)
        .ttl(Duration::from_secs(60))
        .build()
        .unwrap();
    let granted = Arc::new(AtomicU32::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let budget = budget.clone();
            let granted = granted.clone();
            std::thread::spawn(move || {
                for _ in 0..1_000 {
                    budget.deposit();
                    if budget.try_withdraw() {
                        granted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let granted = granted.load(Ordering::Relaxed);
    assert!(granted <= 1_000, "{granted} > 25% of 4000");
    assert!(
        granted >= 990,
        "{granted}: the budget should grant close to 25%"
    );
}
