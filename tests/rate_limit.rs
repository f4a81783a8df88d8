//! Rate limit: behaviour with paused time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use seawall::error::{RateLimited, Rejection};
use seawall::rate_limit::{key_fn, RateLimitLayer};
use tokio::time::{advance, Instant};
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};

const SEC: Duration = Duration::from_secs(1);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A call for client `client` (None: no key).
#[derive(Debug, Clone, Copy)]
struct Call {
    client: Option<u32>,
}

fn from(client: u32) -> Call {
    Call {
        client: Some(client),
    }
}

fn echo() -> impl Service<Call, Response = Call, Error = BoxError, Future: Send> + Clone {
    service_fn(|c: Call| async move { Ok::<_, BoxError>(c) })
}

fn retry_after(err: &BoxError) -> Duration {
    match Rejection::find(&**err) {
        Some(Rejection::RateLimited(r)) => r.retry_after(),
        other => panic!("expected RateLimited, got {other:?} ({err})"),
    }
}

async fn admitted<S>(svc: &S, call: Call) -> bool
where
    S: Service<Call, Response = Call, Error = BoxError> + Clone,
{
    match svc.clone().oneshot(call).await {
        Ok(_) => true,
        Err(e) => {
            assert!(e.downcast_ref::<RateLimited>().is_some(), "{e}");
            false
        }
    }
}

#[test]
fn zero_rate_period_or_burst_are_config_errors() {
    let field = |b: seawall::rate_limit::RateLimitBuilder| b.build().unwrap_err().field();
    assert_eq!(field(RateLimitLayer::builder()), "rate");
    assert_eq!(field(RateLimitLayer::builder().rate(0, SEC)), "rate");
    assert_eq!(
        field(RateLimitLayer::builder().rate(5, Duration::ZERO)),
        "per"
    );
    assert_eq!(
        field(RateLimitLayer::builder().rate(5, SEC).burst(0)),
        "burst"
    );
    assert_eq!(
        field(RateLimitLayer::builder().rate(5, SEC).max_keys(0)),
        "max_keys"
    );
    assert_eq!(
        field(
            RateLimitLayer::builder()
                .rate(5, SEC)
                .wait_up_to(Duration::ZERO)
        ),
        "wait_up_to"
    );
    assert_eq!(
        field(
            RateLimitLayer::builder()
                .rate(1, Duration::from_secs(1 << 40))
                .burst(2)
        ),
        "burst"
    );
    let err = RateLimitLayer::builder().rate(0, SEC).build().unwrap_err();
    assert_eq!(err.layer(), "rate_limit");
}

#[tokio::test(start_paused = true)]
async fn admitted_count_never_exceeds_rate_times_window_plus_burst() {
    let (n, per, burst) = (5u32, SEC, 3u32);
    let layer = RateLimitLayer::builder()
        .rate(n, per)
        .burst(burst)
        .build()
        .unwrap();
    let svc = layer.layer(echo());
    let start = Instant::now();
    let mut rng = SmallRng::seed_from_u64(7);
    let mut times = Vec::new();
    for _ in 0..3_000 {
        // Bursts and lulls: mostly tight gaps, sometimes long pauses.
        let gap = if rng.random_bool(0.05) {
            rng.random_range(0..3_000_000_000u64)
        } else {
            rng.random_range(0..60_000_000u64)
        };
        advance(Duration::from_nanos(gap)).await;
        if admitted(&svc, Call { client: None }).await {
            times.push(Instant::now().duration_since(start));
        }
    }
    assert!(times.len() > 100, "the limiter admitted something");
    let rate = f64::from(n) / per.as_secs_f64();
    for w in [
        ms(1),
        ms(100),
        ms(199),
        ms(200),
        ms(201),
        SEC,
        ms(3_500),
        SEC * 30,
    ] {
        let bound = (rate * w.as_secs_f64()).floor() as usize + burst as usize;
        let mut j = 0;
        for i in 0..times.len() {
            while times[i] - times[j] > w {
                j += 1;
            }
            assert!(
                i - j < bound,
                "{} calls admitted within {w:?} (bound {bound})",
                i - j + 1
            );
        }
    }
    // The bound is reached: a full burst, then exactly `rate` per second.
    advance(SEC * 10).await;
    let mut got = 0;
    for _ in 0..100 {
        got += usize::from(admitted(&svc, Call { client: None }).await);
    }
    assert_eq!(got, burst as usize);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_exact_and_rejections_spend_nothing() {
    // 3 per second: one call every 333_333_334 ns (rounded up).
    let layer = RateLimitLayer::builder()
        .rate(3, SEC)
        .burst(1)
        .build()
        .unwrap();
    let svc = layer.layer(echo());
    assert!(admitted(&svc, from(1)).await);
    let err = svc.clone().oneshot(from(1)).await.unwrap_err();
    assert_eq!(retry_after(&err), Duration::from_nanos(333_333_334));

    advance(ms(100)).await;
    // However many rejections come in between, none moves the next slot.
    for _ in 0..50 {
        let err = svc.clone().oneshot(from(1)).await.unwrap_err();
        assert_eq!(retry_after(&err), Duration::from_nanos(233_333_334));
    }
    advance(Duration::from_nanos(233_333_333)).await;
    let err = svc.clone().oneshot(from(1)).await.unwrap_err();
    assert_eq!(retry_after(&err), Duration::from_nanos(1));
    advance(Duration::from_nanos(1)).await;
    assert!(admitted(&svc, from(1)).await);
    assert_eq!(layer.handle().limited(), 52);
    assert_eq!(layer.handle().allowed(), 2);
}

#[tokio::test(start_paused = true)]
async fn wait_mode_waits_for_its_slot_then_calls_the_inner_service() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = {
        let calls = Arc::clone(&calls);
        service_fn(move |c: Call| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, BoxError>(c) }
        })
    };
    let layer = RateLimitLayer::builder()
        .rate(1, SEC)
        .burst(1)
        .wait_up_to(ms(2_500))
        .build()
        .unwrap();
    let svc = layer.layer(counted);
    let start = Instant::now();

    // Four calls at t = 0: slots at 0, 1 s, 2 s; the fourth's (3 s) is beyond the max wait.
    let mut futures = Vec::new();
    for _ in 0..4 {
        let mut s = svc.clone();
        s.ready().await.unwrap();
        futures.push(s.call(from(1)));
    }
    let fourth = futures.pop().unwrap();
    let err = fourth.await.unwrap_err();
    assert_eq!(
        retry_after(&err),
        SEC * 3,
        "rejected at once, not after waiting"
    );
    assert_eq!(Instant::now(), start);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "waiting calls are not passed on yet"
    );

    let mut finished = Vec::new();
    for f in futures {
        f.await.unwrap();
        finished.push(Instant::now().duration_since(start));
    }
    assert_eq!(finished, [Duration::ZERO, SEC, SEC * 2]);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let h = layer.handle();
    assert_eq!((h.allowed(), h.limited()), (3, 1));
}

#[tokio::test(start_paused = true)]
async fn one_exhausted_client_leaves_the_others_their_allowance() {
    let layer = RateLimitLayer::builder()
        .rate(2, SEC)
        .burst(2)
        .key(key_fn(|c: &Call| c.client))
        .build()
        .unwrap();
    let h = layer.handle();
    let svc = layer.layer(echo());
    assert!(admitted(&svc, from(1)).await);
    assert!(admitted(&svc, from(1)).await);
    let err = svc.clone().oneshot(from(1)).await.unwrap_err();
    assert_eq!(retry_after(&err), ms(500));
    assert_eq!(h.remaining_for(&1), 0);
    assert_eq!(h.remaining_for(&2), 2);

    // Client 2 and keyless calls are untouched by client 1.
    assert!(admitted(&svc, from(2)).await);
    assert!(admitted(&svc, from(2)).await);
    assert!(!admitted(&svc, from(2)).await);
    assert!(admitted(&svc, Call { client: None }).await);
    assert!(admitted(&svc, Call { client: None }).await);
    assert!(
        !admitted(&svc, Call { client: None }).await,
        "keyless calls share the default bucket"
    );
    assert_eq!(h.remaining(), 0);
    assert_eq!(h.keys(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_new_keys_stays_under_max_keys_and_keeps_known_clients_limited() {
    let layer = RateLimitLayer::builder()
        .rate(1, SEC)
        .burst(1)
        .max_keys(100)
        .key(key_fn(|c: &Call| c.client))
        .build()
        .unwrap();
    let h = layer.handle();
    let svc = layer.layer(echo());
    // A known client spends its allowance.
    assert!(admitted(&svc, from(0)).await);

    let mut flood_admitted = 0;
    for k in 1..=20_000u32 {
        flood_admitted += usize::from(admitted(&svc, from(k)).await);
        assert!(h.keys() <= 100, "{} keys after {k} new ones", h.keys());
        if k % 2_000 == 0 {
            advance(ms(10)).await;
        }
    }
    // The table filled (99 flood keys); the rest shared the default bucket's allowance.
    assert_eq!(h.overflowed(), 20_000 - 99);
    assert_eq!(flood_admitted, 99 + 1);
    assert!(
        !admitted(&svc, from(0)).await,
        "the known client was not pushed out"
    );

    // Once a second has passed every flood key is idle: dropping them loses nothing, and new
    // clients get their own allowance again.
    advance(SEC).await;
    for k in 50_000..50_100u32 {
        assert!(admitted(&svc, from(k)).await);
    }
    assert_eq!(h.keys(), 100);
    assert_eq!(h.sweep(), 0, "nothing is idle right after a call");
    advance(SEC).await;
    assert_eq!(h.sweep(), 100);
    assert_eq!(h.keys(), 0);
}

#[tokio::test(start_paused = true)]
async fn services_from_one_layer_value_and_their_clones_share_one_allowance() {
    let layer = RateLimitLayer::builder().rate(3, SEC).build().unwrap();
    let a = layer.layer(echo());
    let b = layer.clone().layer(echo());
    assert!(admitted(&a, from(1)).await);
    assert!(admitted(&b.clone(), from(1)).await);
    assert!(admitted(&a.clone(), from(1)).await);
    assert!(!admitted(&b, from(1)).await);
    // A second build is a second, independent limit.
    let other = RateLimitLayer::builder().rate(3, SEC).build().unwrap();
    assert!(admitted(&other.layer(echo()), from(1)).await);
}

#[tokio::test(start_paused = true)]
async fn the_handle_reports_and_changes_the_rate_live() {
    let layer = RateLimitLayer::builder()
        .rate(1, SEC)
        .burst(1)
        .build()
        .unwrap();
    let h = layer.handle();
    assert_eq!(h.rate(), (1, SEC));
    assert_eq!(h.burst(), 1);
    let svc = layer.layer(echo());
    assert!(admitted(&svc, from(1)).await);
    let err = svc.clone().oneshot(from(1)).await.unwrap_err();
    assert_eq!(retry_after(&err), SEC);

    // Ten per second from now on: the spent slot refills at the new rate.
    h.set_rate(10, SEC).unwrap();
    assert_eq!(h.rate(), (10, SEC));
    advance(ms(100)).await;
    assert!(admitted(&svc, from(1)).await);
    let err = svc.clone().oneshot(from(1)).await.unwrap_err();
    assert_eq!(retry_after(&err), ms(100));

    h.set_burst(5).unwrap();
    advance(SEC).await;
    assert_eq!(h.remaining(), 5);
    assert_eq!(h.set_rate(0, SEC).unwrap_err().field(), "rate");
    assert_eq!(
        h.rate(),
        (10, SEC),
        "a bad change leaves the rate as it was"
    );
    assert_eq!((h.allowed(), h.limited()), (2, 2));
}
