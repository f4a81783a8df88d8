//! The breaker under many tasks on a multi-thread runtime.
#![cfg(feature = "circuit-breaker")]

use futures::FutureExt;
use seawall::circuit_breaker::{CircuitBreakerLayer, State};
use seawall::error::CircuitOpen;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Barrier, Semaphore};
use tower::{service_fn, Layer, ServiceExt};

const TASKS: usize = 64;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn half_open_never_admits_more_than_its_probes_under_concurrency() {
    runtime().block_on(async {
        for round in 0..40 {
            let probes = 1 + round % 6;
            // Open for 1µs: half-open as soon as a task asks, without waiting on a clock.
            let layer = CircuitBreakerLayer::builder()
                .consecutive_failures(1)
                .open_duration(Duration::from_micros(1))
                .half_open_probes(probes as u32)
                .build()
                .unwrap();
            let handle = layer.handle();
            let admitted = Arc::new(AtomicUsize::new(0));
            let gate = Arc::new(Semaphore::new(0));
            let (a, g) = (Arc::clone(&admitted), Arc::clone(&gate));
            let svc = layer.layer(service_fn(move |fail: bool| {
                let (a, g) = (Arc::clone(&a), Arc::clone(&g));
                async move {
                    if fail {
                        return Err::<(), std::io::Error>(std::io::Error::other("boom"));
                    }
                    a.fetch_add(1, Ordering::SeqCst);
                    g.acquire().await.unwrap().forget();
                    Ok(())
                }
            }));
            svc.clone().oneshot(true).await.unwrap_err();
            // Open for 1 µs: `state()` may already find the time up and half-open it.
            assert_ne!(handle.state(), State::Closed);

            let rejected = Arc::new(AtomicUsize::new(0));
            let barrier = Arc::new(Barrier::new(TASKS));
            let tasks: Vec<_> = (0..TASKS)
                .map(|_| {
                    let (svc, barrier, rejected) =
                        (svc.clone(), Arc::clone(&barrier), Arc::clone(&rejected));
                    tokio::spawn(async move {
                        barrier.wait().await;
                        loop {
                            match svc.clone().oneshot(false).await {
                                Ok(()) => return,
                                Err(e) => {
                                    let open = e.downcast_ref::<CircuitOpen>().unwrap();
                                    if open.retry_after().is_none() {
                                        // Half-open and every slot taken.
                                        rejected.fetch_add(1, Ordering::SeqCst);
                                        return;
                                    }
                                    // Still open for a fraction of a microsecond.
                                    tokio::task::yield_now().await;
                                }
                            }
                        }
                    })
                })
                .collect();
            while admitted.load(Ordering::SeqCst) + rejected.load(Ordering::SeqCst) < TASKS {
                tokio::task::yield_now().await;
            }
            assert_eq!(admitted.load(Ordering::SeqCst), probes, "round {round}");
            assert_eq!(handle.state(), State::HalfOpen);
            gate.add_permits(TASKS);
            for t in tasks {
                t.await.unwrap();
            }
            assert_eq!(handle.state(), State::Closed, "all probes succeeded");
        }
    });
}

#[test]
fn dropped_probes_free_their_slots_under_concurrency() {
    runtime().block_on(async {
        let layer = CircuitBreakerLayer::builder()
            .consecutive_failures(1)
            .open_duration(Duration::from_micros(1))
            .half_open_probes(4)
            .build()
            .unwrap();
        let handle = layer.handle();
        let entered = Arc::new(AtomicUsize::new(0));
        let e = Arc::clone(&entered);
        let svc = layer.layer(service_fn(move |fail: bool| {
            let e = Arc::clone(&e);
            async move {
                if fail {
                    return Err::<(), std::io::Error>(std::io::Error::other("boom"));
                }
                e.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<()>().await;
                Ok(())
            }
        }));
        svc.clone().oneshot(true).await.unwrap_err();
        // Many tasks race for the probe slots; the winners are aborted mid-call.
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| tokio::spawn(svc.clone().oneshot(false)))
            .collect();
        while entered.load(Ordering::SeqCst) < 4 {
            tokio::task::yield_now().await;
        }
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        assert_eq!(handle.state(), State::HalfOpen);
        let before = entered.load(Ordering::SeqCst);
        // Every slot is free again: four new probes are admitted, a fifth is not.
        let pending: Vec<_> = (0..4)
            .map(|_| tokio::spawn(svc.clone().oneshot(false)))
            .collect();
        while entered.load(Ordering::SeqCst) < before + 4 {
            tokio::task::yield_now().await;
        }
        let fifth = svc.clone().oneshot(false).now_or_never();
        let err = fifth.expect("rejected at once").unwrap_err();
        assert_eq!(
            err.downcast_ref::<CircuitOpen>().unwrap().retry_after(),
            None
        );
        for t in pending {
            t.abort();
        }
    });
}

#[test]
fn concurrent_failures_trip_exactly_once() {
    runtime().block_on(async {
        let layer = CircuitBreakerLayer::builder()
            .consecutive_failures(10)
            .open_duration(Duration::from_secs(3600))
            .build()
            .unwrap();
        let handle = layer.handle();
        let mut events = handle.subscribe();
        let svc = layer.layer(service_fn(|_: ()| async {
            Err::<(), std::io::Error>(std::io::Error::other("boom"))
        }));
        let tasks: Vec<_> = (0..TASKS)
            .map(|_| {
                let svc = svc.clone();
                tokio::spawn(async move {
                    for _ in 0..20 {
                        let _ = svc.clone().oneshot(()).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(handle.state(), State::Open);
        let m = handle.metrics();
        assert_eq!(m.calls + m.rejections, (TASKS * 20) as u64);
        assert!(m.failures >= 10);
        assert_eq!(events.try_recv().unwrap().to, State::Open);
        assert!(events.try_recv().is_err(), "tripped more than once");
    });
}
