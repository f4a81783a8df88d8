//! One event stream: breaker, bulkhead and retry publish to one bus.
#![cfg(all(feature = "circuit-breaker", feature = "bulkhead", feature = "retry"))]

use std::time::Duration;

use seawall::bulkhead::BulkheadLayer;
use seawall::circuit_breaker::CircuitBreakerLayer;
use seawall::events::{Event, EventBus, EventKind};
use seawall::retry::{Jitter, RetryLayer};
use tokio::sync::broadcast::Receiver;
use tower::{service_fn, BoxError, Layer, ServiceBuilder, ServiceExt};

fn drain(rx: &mut Receiver<Event>) -> Vec<Event> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

#[tokio::test(start_paused = true)]
async fn retries_trips_and_rejections_arrive_on_one_stream_in_order() {
    let bus = EventBus::new(64);
    let mut rx = bus.subscribe();
    let breaker = CircuitBreakerLayer::consecutive_failures(2)
        .open_duration(Duration::from_secs(10))
        .events(bus.source("payments"))
        .build()
        .unwrap();
    let retry = RetryLayer::builder()
        .max_attempts(3)
        .initial_delay(Duration::from_millis(100))
        .jitter(Jitter::None)
        .deadline(Duration::from_secs(1))
        .events(bus.source("payments-retry"))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(retry)
        .layer(breaker)
        .service(service_fn(|_: ()| async {
            Err::<(), BoxError>("connection refused".into())
        }));

    // Attempt 1 fails, retry; attempt 2 fails and trips the breaker, retry; attempt 3 is
    // refused by the open breaker (10 s does not fit the 1 s deadline, so retry stops).
    assert!(svc.oneshot(()).await.is_err());

    let events = drain(&mut rx);
    let seen: Vec<(&str, &EventKind)> = events.iter().map(|e| (e.source(), e.kind())).collect();
    assert_eq!(
        seen,
        vec![
            (
                "payments-retry",
                &EventKind::Retrying {
                    attempt: 1,
                    delay: Duration::from_millis(100)
                }
            ),
            (
                "payments",
                &EventKind::StateChanged {
                    from: "CLOSED",
                    to: "OPEN",
                    open_for: Some(Duration::from_secs(10))
                }
            ),
            (
                "payments-retry",
                &EventKind::Retrying {
                    attempt: 2,
                    delay: Duration::from_millis(200)
                }
            ),
            (
                "payments",
                &EventKind::Rejected {
                    retry_after: Some(Duration::from_millis(9_800))
                }
            ),
        ]
    );
    assert_eq!(events[1].layer(), "circuit_breaker");
    assert_eq!(events[0].layer(), "retry");
}

#[tokio::test]
async fn bulkhead_rejections_are_published() {
    let bus = EventBus::new(8);
    let mut rx = bus.subscribe();
    let bulkhead = BulkheadLayer::builder()
        .max_concurrent(1)
        .retry_after(Duration::from_secs(2))
        .events(bus.source("search"))
        .build()
        .unwrap();
    let (tx, gate) = tokio::sync::oneshot::channel::<()>();
    let gate = std::sync::Arc::new(std::sync::Mutex::new(Some(gate)));
    let svc = bulkhead.layer(service_fn(move |_: ()| {
        let gate = gate.lock().unwrap().take();
        async move {
            if let Some(gate) = gate {
                let _ = gate.await;
            }
            Ok::<(), BoxError>(())
        }
    }));
    let first = tokio::spawn(svc.clone().oneshot(()));
    tokio::task::yield_now().await;
    while bulkhead.handle().in_flight() == 0 {
        tokio::task::yield_now().await;
    }
    assert!(svc.oneshot(()).await.is_err());
    tx.send(()).unwrap();
    first.await.unwrap().unwrap();

    let events = drain(&mut rx);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].layer(), "bulkhead");
    assert_eq!(
        events[0].kind(),
        &EventKind::Rejected {
            retry_after: Some(Duration::from_secs(2))
        }
    );
}

#[cfg(feature = "rate-limit")]
#[tokio::test(start_paused = true)]
async fn rate_limit_rejections_carry_the_exact_retry_after() {
    use seawall::rate_limit::RateLimitLayer;

    let bus = EventBus::new(8);
    let mut rx = bus.subscribe();
    let limit = RateLimitLayer::builder()
        .rate(2, Duration::from_secs(1))
        .burst(1)
        .events(bus.source("api"))
        .build()
        .unwrap();
    let svc = limit.layer(service_fn(|_: ()| async { Ok::<(), BoxError>(()) }));
    svc.clone().oneshot(()).await.unwrap();
    assert!(svc.oneshot(()).await.is_err());

    let events = drain(&mut rx);
    assert_eq!(events.len(), 1, "only the rejection is published");
    assert_eq!(events[0].layer(), "rate_limit");
    assert_eq!(
        events[0].kind(),
        &EventKind::Rejected {
            retry_after: Some(Duration::from_millis(500))
        }
    );
}

#[tokio::test(start_paused = true)]
async fn a_rate_trip_says_which_rate_crossed_and_metrics_only_says_it_without_rejecting() {
    for metrics_only in [false, true] {
        let bus = EventBus::new(64);
        let mut rx = bus.subscribe();
        let layer = CircuitBreakerLayer::builder()
            .failure_rate(0.5)
            .count_window(4)
            .minimum_calls(4)
            .metrics_only(metrics_only)
            .events(bus.source("payments"))
            .build()
            .unwrap();
        let svc = layer.layer(service_fn(|fail: bool| async move {
            if fail {
                Err::<(), BoxError>("down".into())
            } else {
                Ok(())
            }
        }));
        for fail in [false, true, false, true] {
            let _ = svc.clone().oneshot(fail).await;
        }
        // Open (or, metrics only, would be): the next call is rejected only when enforced.
        let next = svc.clone().oneshot(false).await;
        assert_eq!(next.is_err(), !metrics_only);
        let kinds: Vec<EventKind> = drain(&mut rx).iter().map(|e| e.kind().clone()).collect();
        assert_eq!(
            kinds[..2],
            [
                EventKind::FailureRateExceeded {
                    failure_rate: 0.5,
                    slow_call_rate: 0.0
                },
                EventKind::StateChanged {
                    from: "CLOSED",
                    to: "OPEN",
                    open_for: kinds.get(1).and_then(|k| match k {
                        EventKind::StateChanged { open_for, .. } => *open_for,
                        _ => None,
                    }),
                },
            ],
            "metrics only: {metrics_only}"
        );
        assert_eq!(kinds.len(), if metrics_only { 2 } else { 3 }, "{kinds:?}");
    }
}
