//! Behaviour of the bulkhead layer, driven with paused time (or, for the multi-thread flood,
//! with yields only: no test here reads the wall clock).
#![cfg(feature = "bulkhead")]

use std::future::Future;
use std::panic;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt;
use seawall::bulkhead::{BulkheadHandle, BulkheadLayer};
use seawall::error::{BulkheadFull, MAX_DELAY};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};

/// A service whose calls end when the request's sender fires (or is dropped).
fn gated() -> impl Service<
    oneshot::Receiver<u32>,
    Response = u32,
    Error = BoxError,
    Future = impl Future<Output = Result<u32, BoxError>> + Send,
> + Clone
       + Send {
    service_fn(|rx: oneshot::Receiver<u32>| async move { Ok::<_, BoxError>(rx.await.unwrap_or(0)) })
}

/// A service whose calls take the requested (paused-clock) time.
fn sleeper() -> impl Service<
    Duration,
    Response = Duration,
    Error = BoxError,
    Future = impl Future<Output = Result<Duration, BoxError>> + Send,
> + Clone
       + Send {
    service_fn(|d: Duration| async move {
        tokio::time::sleep(d).await;
        Ok::<_, BoxError>(d)
    })
}

fn reject(n: usize) -> BulkheadLayer {
    BulkheadLayer::builder().max_concurrent(n).build().unwrap()
}

fn waiting(n: usize, max_wait: Duration) -> BulkheadLayer {
    BulkheadLayer::builder()
        .max_concurrent(n)
        .max_wait(max_wait)
        .build()
        .unwrap()
}

fn is_full(err: &BoxError) -> bool {
    err.downcast_ref::<BulkheadFull>().is_some()
}

fn assert_quiet(handle: &BulkheadHandle) {
    let m = handle.metrics();
    assert_eq!(m.in_flight, 0, "{m:?}");
    assert_eq!(m.waiting, 0, "{m:?}");
    assert_eq!(m.available, m.capacity, "{m:?}");
}

#[test]
fn zero_capacity_is_a_config_error() {
    let err = BulkheadLayer::builder()
        .max_concurrent(0)
        .build()
        .unwrap_err();
    assert_eq!(err.layer(), "bulkhead");
    assert_eq!(err.field(), "max_concurrent");
    assert!(BulkheadLayer::new(0).is_err());
}

#[test]
fn bad_queue_settings_are_config_errors() {
    let err = BulkheadLayer::builder().max_waiting(5).build().unwrap_err();
    assert_eq!(err.field(), "max_waiting", "a queue bound without waiting");
    let err = BulkheadLayer::builder()
        .max_wait(Duration::from_secs(1))
        .max_waiting(0)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "max_waiting");
    let err = BulkheadLayer::builder()
        .max_concurrent(usize::MAX)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "max_concurrent");
}

#[test]
fn waits_and_hints_beyond_a_day_are_config_errors() {
    let over = MAX_DELAY + Duration::from_nanos(1);
    for huge in [over, Duration::from_secs(u64::MAX), Duration::MAX] {
        let err = BulkheadLayer::builder().max_wait(huge).build().unwrap_err();
        assert_eq!(err.field(), "max_wait");
        assert!(err.allowed().contains("1 day"), "{err}");
        let err = BulkheadLayer::builder()
            .retry_after(huge)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "retry_after");
    }
    let err = BulkheadLayer::builder()
        .retry_after(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "retry_after");
    BulkheadLayer::builder()
        .max_wait(MAX_DELAY)
        .retry_after(MAX_DELAY)
        .max_waiting(usize::MAX)
        .build()
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_wait_of_a_day_expires_after_a_day() {
    let layer = waiting(1, MAX_DELAY);
    let handle = layer.handle();
    let mut svc = layer.layer(sleeper());
    let first = svc.ready().await.unwrap().call(MAX_DELAY * 2);
    let start = Instant::now();
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(is_full(&err));
    assert_eq!(start.elapsed(), MAX_DELAY);
    assert_eq!(handle.metrics().expired, 1);
    drop(first);
    assert_quiet(&handle);
}

#[test]
fn resizing_to_zero_is_a_config_error_and_keeps_the_limit() {
    let layer = reject(3);
    let handle = layer.handle();
    assert_eq!(
        handle.set_max_concurrent(0).unwrap_err().field(),
        "max_concurrent"
    );
    assert_eq!(handle.capacity(), 3);
}

#[test]
fn defaults_follow_resilience4j() {
    let layer = BulkheadLayer::builder().build().unwrap();
    assert_eq!(layer.handle().capacity(), 25);
}

/// Counts the calls in flight in it and remembers the most at once; each call yields a few
/// times so that calls overlap.
#[derive(Clone, Default)]
struct Probe {
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
}

struct Leave(Arc<AtomicUsize>);

impl Drop for Leave {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Service<usize> for Probe {
    type Response = ();
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, yields: usize) -> Self::Future {
        let (now, max) = (self.now.clone(), self.max.clone());
        Box::pin(async move {
            let current = now.fetch_add(1, Ordering::SeqCst) + 1;
            max.fetch_max(current, Ordering::SeqCst);
            // Counted out when the call ends or is dropped.
            let _out = Leave(now);
            for _ in 0..yields {
                tokio::task::yield_now().await;
            }
            Ok(())
        })
    }
}

async fn flood(layer: BulkheadLayer, limit: usize, tasks: usize) -> (usize, usize, usize) {
    let probe = Probe::default();
    let max = probe.max.clone();
    let svc = layer.layer(probe);
    let handles: Vec<_> = (0..tasks)
        .map(|i| {
            let svc = svc.clone();
            tokio::spawn(async move { svc.oneshot(1 + i % 7).await })
        })
        .collect();
    let (mut ok, mut full) = (0, 0);
    for h in handles {
        match h.await.unwrap() {
            Ok(()) => ok += 1,
            Err(e) if is_full(&e) => full += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    let max = max.load(Ordering::SeqCst);
    assert!(max <= limit, "{max} calls in flight, limit {limit}");
    (ok, full, max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn never_more_than_the_limit_in_flight_under_a_flood_reject_mode() {
    let layer = reject(8);
    let handle = layer.handle();
    let (ok, full, _) = flood(layer, 8, 4000).await;
    assert_eq!(ok + full, 4000);
    assert!(ok >= 8);
    assert_eq!(handle.rejections(), full as u64);
    assert_quiet(&handle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn never_more_than_the_limit_in_flight_under_a_flood_wait_mode() {
    // The wait is long enough never to expire: every call must get through, 8 at a time.
    let layer = waiting(8, Duration::from_secs(3600));
    let handle = layer.handle();
    let (ok, full, max) = flood(layer, 8, 4000).await;
    assert_eq!((ok, full), (4000, 0));
    assert!(max >= 2, "the flood never overlapped");
    assert_quiet(&handle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn accounting_survives_a_flood_of_expiring_and_abandoned_calls() {
    // Short real-time waits (no assertion depends on timing): grants race with expiries, and
    // every third caller gives up after a few yields, in flight or in the queue.
    let limit = 4;
    let waiting = BulkheadLayer::builder()
        .max_concurrent(limit)
        .max_wait(Duration::from_micros(200))
        .max_waiting(50)
        .build()
        .unwrap();
    abandoning_flood(waiting, limit).await;
    abandoning_flood(reject(limit), limit).await;
}

async fn abandoning_flood(layer: BulkheadLayer, limit: usize) {
    let handle = layer.handle();
    let probe = Probe::default();
    let max = probe.max.clone();
    let svc = layer.layer(probe);
    let tasks: Vec<_> = (0..3000)
        .map(|i| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let call = svc.oneshot(1 + i % 5);
                if i % 3 == 0 {
                    tokio::select! {
                        r = call => Some(r),
                        _ = async { for _ in 0..3 { tokio::task::yield_now().await } } => None,
                    }
                } else {
                    Some(call.await)
                }
            })
        })
        .collect();
    for t in tasks {
        match t.await.unwrap() {
            None | Some(Ok(())) => {}
            Some(Err(e)) => assert!(is_full(&e), "unexpected error {e}"),
        }
    }
    let max = max.load(Ordering::SeqCst);
    assert!(max <= limit, "{max} calls in flight, limit {limit}");
    assert_quiet(&handle);
}

#[tokio::test(start_paused = true)]
async fn reject_mode_refuses_at_once_when_full() {
    let layer = reject(1);
    let handle = layer.handle();
    let mut svc = layer.layer(sleeper());
    let first = svc.ready().await.unwrap().call(Duration::from_secs(1));
    let start = Instant::now();
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(is_full(&err));
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(handle.in_flight(), 1);
    assert_eq!(first.await.unwrap(), Duration::from_secs(1));
    assert_eq!(handle.rejections(), 1);
    assert_quiet(&handle);
}

#[tokio::test(start_paused = true)]
async fn wait_mode_admits_when_a_permit_frees() {
    let layer = waiting(1, Duration::from_secs(5));
    let handle = layer.handle();
    let mut svc = layer.layer(sleeper());
    let start = Instant::now();
    let first = tokio::spawn(svc.ready().await.unwrap().call(Duration::from_secs(1)));
    let second = svc.ready().await.unwrap().call(Duration::from_secs(1));
    tokio::task::yield_now().await;
    assert_eq!(handle.waiting(), 1);
    assert_eq!(second.await.unwrap(), Duration::from_secs(1));
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(2),
        "waited one call, then ran one"
    );
    first.await.unwrap().unwrap();
    assert_eq!(handle.rejections(), 0);
    assert_quiet(&handle);
}

#[tokio::test(start_paused = true)]
async fn max_wait_expiry_rejects_after_exactly_max_wait() {
    let layer = waiting(1, Duration::from_millis(100));
    let handle = layer.handle();
    let mut svc = layer.layer(sleeper());
    let first = svc.ready().await.unwrap().call(Duration::from_secs(1));
    let start = Instant::now();
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(is_full(&err));
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    let m = handle.metrics();
    assert_eq!(
        (m.rejected, m.expired, m.waiting, m.in_flight),
        (1, 1, 0, 1)
    );
    first.await.unwrap();
    assert_quiet(&handle);
}

#[tokio::test(start_paused = true)]
async fn queue_bound_rejects_the_caller_over_it_at_once() {
    let layer = BulkheadLayer::builder()
        .max_concurrent(1)
        .max_wait(Duration::from_secs(10))
        .max_waiting(2)
        .build()
        .unwrap();
    let handle = layer.handle();
    let mut svc = layer.layer(sleeper());
    let mut calls: Vec<_> = Vec::new();
    for _ in 0..3 {
        calls.push(tokio::spawn(
            svc.ready().await.unwrap().call(Duration::from_secs(1)),
        ));
    }
    tokio::task::yield_now().await;
    assert_eq!((handle.in_flight(), handle.waiting()), (1, 2));
    let start = Instant::now();
    let err = svc
        .ready()
        .await
        .unwrap()
        .call(Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(is_full(&err));
    assert_eq!(start.elapsed(), Duration::ZERO);
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(handle.rejections(), 1);
    assert_quiet(&handle);
}

#[tokio::test(start_paused = true)]
async fn waiters_are_admitted_first_come_first_served() {
    let layer = waiting(1, Duration::from_secs(60));
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let order2 = order.clone();
    let mut svc = layer.layer(service_fn(move |i: usize| {
        let order = order2.clone();
        async move {
            order.lock().unwrap().push(i);
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok::<_, BoxError>(())
        }
    }));
    let mut calls = Vec::new();
    for i in 0..6 {
        calls.push(svc.ready().await.unwrap().call(i));
    }
    // Spawn them in reverse: polling order must not matter, call order does.
    let tasks: Vec<_> = calls.into_iter().rev().map(tokio::spawn).collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4, 5]);
}

#[tokio::test(start_paused = true)]
async fn a_released_permit_goes_to_the_waiter_not_to_a_new_caller() {
    let layer = waiting(1, Duration::from_secs(60));
    let handle = layer.handle();
    let mut svc = layer.layer(gated());
    let (tx_a, rx_a) = oneshot::channel();
    let (tx_b, rx_b) = oneshot::channel();
    let (tx_c, rx_c) = oneshot::channel();
    let a = svc.ready().await.unwrap().call(rx_a);
    let mut b = Box::pin(svc.ready().await.unwrap().call(rx_b));
    assert!(b.as_mut().now_or_never().is_none());
    tx_a.send(1).unwrap();
    assert_eq!(a.await.unwrap(), 1);
    // B holds the permit now, though it has not been polled since.
    assert_eq!((handle.in_flight(), handle.waiting()), (1, 0));
    let mut c = Box::pin(svc.ready().await.unwrap().call(rx_c));
    tx_c.send(3).unwrap();
    assert!(c.as_mut().now_or_never().is_none(), "C barged past B");
    assert_eq!(handle.waiting(), 1);
    tx_b.send(2).unwrap();
    assert_eq!(b.await.unwrap(), 2);
    assert_eq!(c.await.unwrap(), 3);
    assert_quiet(&handle);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_waiter_leaves_the_queue() {
    let layer = waiting(1, Duration::from_secs(60));
    let handle = layer.handle();
    let mut svc = layer.layer(gated());
    let (tx_a, rx_a) = oneshot::channel();
    let (_tx_b, rx_b) = oneshot::channel();
    let (tx_c, rx_c) = oneshot::channel();
    let a = svc.ready().await.unwrap().call(rx_a);
    let mut b = Box::pin(svc.ready().await.unwrap().call(rx_b));
    let c = svc.ready().await.unwrap().call(rx_c);
    assert!(b.as_mut().now_or_never().is_none());
    assert_eq!(handle.waiting(), 2);
    drop(b);
    assert_eq!(handle.waiting(), 1);
    tx_a.send(1).unwrap();
    tx_c.send(3).unwrap();
    assert_eq!(a.await.unwrap(), 1);
    assert_eq!(c.await.unwrap(), 3, "C got the permit B left");
    assert_quiet(&handle);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_dropped_after_being_granted_gives_the_permit_back() {
    let layer = waiting(1, Duration::from_secs(60));
    let handle = layer.handle();
    let mut svc = layer.layer(gated());
    let (tx_a, rx_a) = oneshot::channel();
    let (_tx_b, rx_b) = oneshot::channel();
    let a = svc.ready().await.unwrap().call(rx_a);
    let b = svc.ready().await.unwrap().call(rx_b);
    tx_a.send(1).unwrap();
    a.await.unwrap();
    assert_eq!(handle.in_flight(), 1, "granted to B");
    drop(b);
    assert_quiet(&handle);
    let (tx, rx) = oneshot::channel();
    tx.send(7).unwrap();
    assert_eq!(svc.ready().await.unwrap().call(rx).await.unwrap(), 7);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_in_flight_future_releases_its_permit() {
    for layer in [reject(1), waiting(1, Duration::from_secs(1))] {
        let handle = layer.handle();
        let mut svc = layer.layer(gated());
        let (_tx, rx) = oneshot::channel();
        let mut a = Box::pin(svc.ready().await.unwrap().call(rx));
        assert!(a.as_mut().now_or_never().is_none());
        assert_eq!(handle.in_flight(), 1);
        drop(a);
        assert_quiet(&handle);
        let (tx, rx) = oneshot::channel();
        tx.send(5).unwrap();
        assert_eq!(svc.ready().await.unwrap().call(rx).await.unwrap(), 5);
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_inner_future_releases_its_permit() {
    let layer = reject(1);
    let handle = layer.handle();
    let mut svc = layer.layer(service_fn(|boom: bool| async move {
        tokio::task::yield_now().await;
        if boom {
            panic!("inner service panicked");
        }
        Ok::<_, BoxError>(())
    }));
    let call = svc.ready().await.unwrap().call(true);
    assert_eq!(handle.in_flight(), 1);
    let hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let joined = tokio::spawn(call).await;
    panic::set_hook(hook);
    assert!(joined.unwrap_err().is_panic());
    assert_quiet(&handle);
    svc.ready().await.unwrap().call(false).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn raising_the_limit_admits_waiters() {
    let layer = waiting(1, Duration::from_secs(60));
    let handle = layer.handle();
    let mut svc = layer.layer(sleeper());
    let start = Instant::now();
    let calls: Vec<_> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            v.push(tokio::spawn(
                svc.ready().await.unwrap().call(Duration::from_secs(1)),
            ));
        }
        v
    };
    tokio::task::yield_now().await;
    assert_eq!((handle.in_flight(), handle.waiting()), (1, 2));
    handle.set_max_concurrent(3).unwrap();
    assert_eq!((handle.in_flight(), handle.waiting()), (3, 0));
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(1),
        "all three ran together"
    );
    assert_quiet(&handle);
}

#[tokio::test(start_paused = true)]
async fn lowering_the_limit_below_in_flight_admits_nothing_until_below() {
    let layer = reject(3);
    let handle = layer.handle();
    let mut svc = layer.layer(gated());
    let mut senders = Vec::new();
    let mut calls = Vec::new();
    for _ in 0..3 {
        let (tx, rx) = oneshot::channel();
        senders.push(tx);
        calls.push(svc.ready().await.unwrap().call(rx));
    }
    handle.set_max_concurrent(1).unwrap();
    let m = handle.metrics();
    assert_eq!((m.capacity, m.in_flight, m.available), (1, 3, 0));
    for (tx, call) in senders.into_iter().zip(calls) {
        let (_keep, rx) = oneshot::channel();
        let refused = svc.ready().await.unwrap().call(rx).now_or_never();
        let admitted = !matches!(refused, Some(Err(ref e)) if is_full(e));
        assert!(!admitted, "admitted with {} in flight", handle.in_flight());
        tx.send(1).unwrap();
        call.await.unwrap();
    }
    assert_eq!(handle.rejections(), 3);
    assert_quiet(&handle);
    let (tx, rx) = oneshot::channel();
    tx.send(9).unwrap();
    assert_eq!(svc.ready().await.unwrap().call(rx).await.unwrap(), 9);
}

#[tokio::test(start_paused = true)]
async fn lowering_the_limit_keeps_waiters_waiting_until_below() {
    let layer = waiting(2, Duration::from_secs(60));
    let handle = layer.handle();
    let mut svc = layer.layer(gated());
    let (tx_a, rx_a) = oneshot::channel();
    let (tx_b, rx_b) = oneshot::channel();
    let (tx_c, rx_c) = oneshot::channel();
    let a = svc.ready().await.unwrap().call(rx_a);
    let b = svc.ready().await.unwrap().call(rx_b);
    let mut c = Box::pin(svc.ready().await.unwrap().call(rx_c));
    tx_c.send(3).unwrap();
    handle.set_max_concurrent(1).unwrap();
    tx_a.send(1).unwrap();
    a.await.unwrap();
    assert!(c.as_mut().now_or_never().is_none(), "admitted at the limit");
    assert_eq!((handle.in_flight(), handle.waiting()), (1, 1));
    tx_b.send(2).unwrap();
    b.await.unwrap();
    assert_eq!(c.await.unwrap(), 3);
    assert_quiet(&handle);
}

#[tokio::test(start_paused = true)]
async fn state_is_shared_by_clones_and_by_every_service_one_layer_builds() {
    let layer = reject(1);
    let mut one = layer.layer(gated());
    let mut two = layer.clone().layer(gated());
    let mut three = one.clone();
    let (tx, rx) = oneshot::channel();
    let a = one.ready().await.unwrap().call(rx);
    for svc in [&mut two, &mut three] {
        let (_tx, rx) = oneshot::channel();
        assert!(is_full(
            &svc.ready().await.unwrap().call(rx).await.unwrap_err()
        ));
    }
    // A second layer value is a second, independent bulkhead.
    let mut other = reject(1).layer(gated());
    let (tx2, rx2) = oneshot::channel();
    tx2.send(4).unwrap();
    assert_eq!(other.ready().await.unwrap().call(rx2).await.unwrap(), 4);
    tx.send(1).unwrap();
    a.await.unwrap();
    assert_eq!(two.handle().rejections(), 2);
    assert_quiet(&three.handle());
}

#[tokio::test(start_paused = true)]
async fn poll_ready_holds_no_permit_and_passes_inner_readiness_through() {
    let layer = reject(1);
    let handle = layer.handle();
    let (mock, mut ctl) = tower_test::mock::pair::<u32, u32>();
    let mut svc = tower_test::mock::Spawn::new(layer.layer(mock));
    ctl.allow(0);
    assert!(
        svc.poll_ready().is_pending(),
        "inner not ready, so neither are we"
    );
    ctl.allow(5);
    let mut clones: Vec<_> = (0..5).map(|_| svc.clone()).collect();
    for c in clones.iter_mut() {
        assert!(c.poll_ready().is_ready());
    }
    assert!(svc.poll_ready().is_ready());
    assert_eq!(handle.in_flight(), 0, "readiness took no permit");
    let f = svc.call(1);
    assert_eq!(handle.in_flight(), 1);
    let (req, send) = ctl.next_request().await.unwrap();
    assert_eq!(req, 1);
    send.send_response(2);
    assert_eq!(f.await.unwrap(), 2);
    assert_quiet(&handle);
}

#[cfg(feature = "http")]
mod http_face {
    use super::*;
    use http::{Response, StatusCode};
    use seawall::http::RejectionResponseLayer;
    use tower::ServiceBuilder;

    async fn full_response(layer: BulkheadLayer) -> Response<String> {
        let mut svc = ServiceBuilder::new()
            .layer(RejectionResponseLayer::new())
            .layer(layer)
            .service(service_fn(|rx: oneshot::Receiver<u32>| async move {
                let _ = rx.await;
                Ok::<_, BoxError>(Response::new(String::from("ok")))
            }));
        let (_tx, rx) = oneshot::channel();
        let _held = svc.ready().await.unwrap().call(rx);
        let (_tx2, rx2) = oneshot::channel();
        svc.ready().await.unwrap().call(rx2).await.unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_bulkhead_answers_503_without_retry_after_by_default() {
        let res = full_response(reject(1)).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(res.headers().get("retry-after").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_configured_retry_after_becomes_the_header() {
        let layer = BulkheadLayer::builder()
            .max_concurrent(1)
            .retry_after(Duration::from_millis(1500))
            .build()
            .unwrap();
        let res = full_response(layer).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(res.headers()["retry-after"], "2");
    }
}

/// Spawns a call made now (so it queues now) and returns how long it took to be rejected.
fn time_rejection(
    svc: &mut impl Service<Duration, Response = Duration, Error = BoxError, Future: Send + 'static>,
) -> tokio::task::JoinHandle<Duration> {
    let start = Instant::now();
    let call = svc.call(Duration::from_secs(1));
    tokio::spawn(async move {
        let err = call.await.unwrap_err();
        assert!(is_full(&err));
        start.elapsed()
    })
}

#[tokio::test(start_paused = true)]
async fn a_max_wait_set_at_run_time_applies_to_calls_queued_from_then_on() {
    let layer = waiting(1, Duration::from_millis(100));
    let handle = layer.handle();
    let mut svc = layer.layer(sleeper());
    let first = svc.ready().await.unwrap().call(Duration::from_secs(10));
    svc.ready().await.unwrap();
    let before = time_rejection(&mut svc);
    handle.set_max_wait(Duration::from_millis(300)).unwrap();
    assert_eq!(handle.max_wait(), Duration::from_millis(300));
    svc.ready().await.unwrap();
    let after = time_rejection(&mut svc);
    assert_eq!(
        before.await.unwrap(),
        Duration::from_millis(100),
        "kept its wait"
    );
    assert_eq!(after.await.unwrap(), Duration::from_millis(300));
    assert_eq!(handle.metrics().expired, 2);
    first.await.unwrap();
    assert_quiet(&handle);
}

#[tokio::test(start_paused = true)]
async fn a_max_wait_set_to_zero_rejects_at_once_until_a_wait_is_set_again() {
    let layer = waiting(1, Duration::from_millis(100));
    let handle = layer.handle();
    let mut svc = layer.layer(sleeper());
    let first = svc.ready().await.unwrap().call(Duration::from_secs(10));
    handle.set_max_wait(Duration::ZERO).unwrap();
    svc.ready().await.unwrap();
    assert_eq!(time_rejection(&mut svc).await.unwrap(), Duration::ZERO);
    let m = handle.metrics();
    assert_eq!((m.rejected, m.expired, m.waiting), (1, 0, 0), "not queued");
    handle.set_max_wait(Duration::from_millis(50)).unwrap();
    svc.ready().await.unwrap();
    assert_eq!(
        time_rejection(&mut svc).await.unwrap(),
        Duration::from_millis(50)
    );
    first.await.unwrap();
    assert_quiet(&handle);
}

#[test]
fn a_max_wait_set_at_run_time_is_validated_like_the_builders() {
    let handle = waiting(1, Duration::from_millis(100)).handle();
    let err = handle
        .set_max_wait(MAX_DELAY + Duration::from_nanos(1))
        .unwrap_err();
    assert!(err.to_string().contains("max_wait"), "{err}");
    assert_eq!(
        handle.max_wait(),
        Duration::from_millis(100),
        "left as it was"
    );
    handle.set_max_wait(MAX_DELAY).unwrap();
    assert_eq!(handle.max_wait(), MAX_DELAY);

    let rejecting = reject(1).handle();
    assert_eq!(rejecting.max_wait(), Duration::ZERO);
    rejecting.set_max_wait(Duration::ZERO).unwrap();
    let err = rejecting
        .set_max_wait(Duration::from_millis(1))
        .unwrap_err();
    assert!(err.to_string().contains("max_wait"), "{err}");
    assert_eq!(rejecting.max_wait(), Duration::ZERO);
}

/// The kinds of the events received so far.
fn drain(rx: &mut tokio::sync::broadcast::Receiver<seawall::events::Event>) -> Vec<String> {
    std::iter::from_fn(|| rx.try_recv().ok())
        .map(|e| format!("{:?}", e.kind()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn call_events_are_off_by_default_and_rejections_are_published_anyway() {
    let bus = seawall::events::EventBus::new(64);
    let mut rx = bus.subscribe();
    let layer = BulkheadLayer::builder()
        .max_concurrent(1)
        .events(bus.source("db"))
        .build()
        .unwrap();
    let mut svc = layer.layer(gated());
    let (tx, gate) = oneshot::channel();
    let first = svc.ready().await.unwrap().call(gate);
    assert!(svc
        .ready()
        .await
        .unwrap()
        .call(oneshot::channel().1)
        .await
        .is_err());
    tx.send(1).unwrap();
    first.await.unwrap();
    assert_eq!(drain(&mut rx), ["Rejected { retry_after: None }"]);
}

#[tokio::test(start_paused = true)]
async fn call_events_mark_each_admission_and_each_end_of_a_call_however_it_ends() {
    for max_wait in [Duration::ZERO, Duration::from_secs(1)] {
        let bus = seawall::events::EventBus::new(64);
        let mut rx = bus.subscribe();
        let layer = BulkheadLayer::builder()
            .max_concurrent(1)
            .max_wait(max_wait)
            .events(bus.source("db"))
            .call_events(true)
            .build()
            .unwrap();
        let handle = layer.handle();
        let mut svc = layer.layer(gated());

        // Completed.
        let (tx, gate) = oneshot::channel();
        let first = svc.ready().await.unwrap().call(gate);
        assert_eq!(drain(&mut rx), ["CallPermitted"], "max_wait {max_wait:?}");
        // Refused (reject mode) or queued (wait mode): not admitted either way.
        let (_held, gate) = oneshot::channel();
        let mut second = Box::pin(svc.ready().await.unwrap().call(gate));
        let rejected = max_wait.is_zero();
        let polled = second.as_mut().now_or_never();
        assert_eq!(polled.is_some(), rejected, "max_wait {max_wait:?}");
        tx.send(1).unwrap();
        first.await.unwrap();
        if rejected {
            assert_eq!(
                drain(&mut rx),
                ["Rejected { retry_after: None }", "CallFinished"]
            );
        } else {
            // The waiter is admitted when it takes the permit handed over, and its end is
            // its drop while the inner call is still running.
            assert!(second.as_mut().now_or_never().is_none(), "still running");
            assert_eq!(drain(&mut rx), ["CallFinished", "CallPermitted"]);
            drop(second);
            assert_eq!(drain(&mut rx), ["CallFinished"], "dropped in flight");
        }
        assert_quiet(&handle);
    }
}
