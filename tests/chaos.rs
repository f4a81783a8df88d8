//! The chaos layer with paused time: each fault at its probability over a seeded run, the same
//! seed drawing the same faults, hangs that end only when dropped, run-time switching, and an
//! off layer that is a pass-through drawing nothing.
#![cfg(all(feature = "chaos", feature = "http"))]

use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use seawall::chaos::{ChaosHandle, ChaosLayer, FaultKind, Faults, InjectedFault, Latency};
use tokio::time::Instant;
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// What one call came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Passed,
    Error,
    Status(u16),
    Hang,
    Disconnect,
}

/// An HTTP backend that answers `200` at once and counts its calls.
#[derive(Clone, Default)]
struct Backend {
    calls: Arc<AtomicU64>,
}

impl Backend {
    fn service(
        &self,
    ) -> impl Service<
        Request<()>,
        Response = Response<String>,
        Error = BoxError,
        Future = impl Future<Output = Result<Response<String>, BoxError>>,
    > + Clone {
        let calls = Arc::clone(&self.calls);
        service_fn(move |_: Request<()>| {
            calls.fetch_add(1, Relaxed);
            async { Ok::<_, BoxError>(Response::new("fine".to_owned())) }
        })
    }

    fn calls(&self) -> u64 {
        self.calls.load(Relaxed)
    }
}

/// Makes one call, waiting at most a minute (a hang ends there), and says what it came to and
/// how long it took.
async fn call<S>(svc: &mut S) -> (Seen, Duration)
where
    S: Service<Request<()>, Response = Response<String>, Error = BoxError>,
{
    let started = Instant::now();
    let future = svc.ready().await.unwrap().call(Request::new(()));
    let seen = match tokio::time::timeout(Duration::from_secs(60), future).await {
        Err(_) => Seen::Hang,
        Ok(Ok(res)) if res.status() == StatusCode::OK => Seen::Passed,
        Ok(Ok(res)) => Seen::Status(res.status().as_u16()),
        Ok(Err(e)) => match e.downcast_ref::<InjectedFault>().map(InjectedFault::kind) {
            Some(FaultKind::Error) => Seen::Error,
            Some(FaultKind::Disconnect) => Seen::Disconnect,
            other => panic!("unexpected error {e} ({other:?})"),
        },
    };
    (seen, started.elapsed())
}

async fn outcomes<S>(svc: &mut S, n: usize) -> Vec<Seen>
where
    S: Service<Request<()>, Response = Response<String>, Error = BoxError>,
{
    let mut seen = Vec::with_capacity(n);
    for _ in 0..n {
        seen.push(call(svc).await.0);
    }
    seen
}

fn mix() -> Faults {
    Faults::none()
        .latency(0.3, Latency::Fixed(ms(10)))
        .error(0.1)
        .status(0.2, StatusCode::SERVICE_UNAVAILABLE)
        .hang(0.05)
        .disconnect(0.05)
}

#[tokio::test(start_paused = true)]
async fn each_fault_comes_at_its_probability_and_a_seed_fixes_the_counts() {
    const N: u64 = 20_000;
    let backend = Backend::default();
    let chaos = ChaosLayer::builder()
        .http()
        .faults(mix())
        .seed(42)
        .enabled(true)
        .build()
        .unwrap();
    let handle = chaos.handle();
    let mut svc = chaos.layer(backend.service());

    let (mut passed, mut errors, mut statuses, mut hangs, mut disconnects) = (0, 0, 0, 0, 0);
    let (mut delayed, mut answered) = (0, 0);
    for _ in 0..N {
        let (seen, took) = call(&mut svc).await;
        match seen {
            Seen::Passed => passed += 1,
            Seen::Error => errors += 1,
            Seen::Status(503) => statuses += 1,
            Seen::Status(other) => panic!("status {other}"),
            Seen::Hang => hangs += 1,
            Seen::Disconnect => disconnects += 1,
        }
        if seen != Seen::Hang {
            answered += 1;
            // A delayed call takes exactly the delay (the backend answers at once).
            assert!(took == ms(10) || took.is_zero(), "{took:?}");
            delayed += u64::from(took == ms(10));
        }
    }

    // The seed fixes the stream, so these counts are exact; a change to them is a change of
    // the random stream, which every seeded user run would see.
    assert_eq!(
        (passed, errors, statuses, hangs, disconnects, delayed),
        (12053, 1930, 4001, 1018, 998, 5685),
        "counts for seed 42"
    );
    // And each rate lies within four standard deviations of its probability.
    let near = |count: u64, of: u64, p: f64| {
        let rate = count as f64 / of as f64;
        let sigma = (p * (1.0 - p) / of as f64).sqrt();
        assert!((rate - p).abs() < 4.0 * sigma, "{rate} vs {p}");
    };
    near(passed, N, 0.6);
    near(errors, N, 0.1);
    near(statuses, N, 0.2);
    near(hangs, N, 0.05);
    near(disconnects, N, 0.05);
    near(delayed, answered, 0.3);

    // Only passed calls reached the backend; the handle counted what the calls saw.
    assert_eq!(backend.calls(), passed);
    let m = handle.metrics();
    assert_eq!(
        (
            m.drawn,
            m.errors,
            m.statuses,
            m.hangs,
            m.disconnects,
            m.delayed
        ),
        (N, errors, statuses, hangs, disconnects, delayed)
    );
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_draws_the_same_faults_and_reseed_restarts_the_stream() {
    let layer = |seed| {
        ChaosLayer::builder()
            .http()
            .faults(mix())
            .seed(seed)
            .enabled(true)
            .build()
            .unwrap()
    };
    let backend = Backend::default();
    let first = outcomes(&mut layer(7).layer(backend.service()), 200).await;
    let again = outcomes(&mut layer(7).layer(backend.service()), 200).await;
    let other = outcomes(&mut layer(8).layer(backend.service()), 200).await;
    assert_eq!(first, again);
    assert_ne!(first, other);

    // Two services of one layer share its stream: alternating between them draws what one
    // service would.
    let shared = layer(7);
    let (mut a, mut b) = (
        shared.layer(backend.service()),
        shared.layer(backend.service()),
    );
    let mut alternating = Vec::new();
    for i in 0..200 {
        let svc = if i % 2 == 0 { &mut a } else { &mut b };
        alternating.push(call(svc).await.0);
    }
    assert_eq!(alternating, first);

    shared.handle().reseed(7);
    assert_eq!(outcomes(&mut a, 200).await, first);
}

#[tokio::test(start_paused = true)]
async fn a_uniform_latency_lies_in_its_range() {
    let chaos = ChaosLayer::builder()
        .http()
        .latency(
            1.0,
            Latency::Uniform {
                low: ms(5),
                high: ms(15),
            },
        )
        .seed(3)
        .enabled(true)
        .build()
        .unwrap();
    let mut svc = chaos.layer(Backend::default().service());
    let mut took = Vec::new();
    for _ in 0..2_000 {
        let (seen, t) = call(&mut svc).await;
        assert_eq!(seen, Seen::Passed);
        took.push(t);
    }
    // tokio's timers fire on whole milliseconds: a delay of 5.3 ms ends at 6 ms.
    assert!(
        took.iter().all(|t| (ms(5)..=ms(15)).contains(t)),
        "{took:?}"
    );
    assert!(took.iter().any(|t| *t <= ms(6)), "the low end is drawn");
    assert!(took.contains(&ms(15)), "the high end is drawn");
    let mean = took.iter().sum::<Duration>() / took.len() as u32;
    assert!((ms(10)..=ms(11)).contains(&mean), "{mean:?}");
}

#[tokio::test(start_paused = true)]
async fn a_delay_comes_before_the_inner_future_is_first_polled() {
    let polled = Arc::new(Mutex::new(None));
    let inner = {
        let polled = Arc::clone(&polled);
        service_fn(move |_: Request<()>| {
            let polled = Arc::clone(&polled);
            async move {
                *polled.lock().unwrap() = Some(Instant::now());
                Ok::<_, BoxError>(Response::new(String::new()))
            }
        })
    };
    let chaos = ChaosLayer::builder()
        .http()
        .latency(1.0, Latency::Fixed(ms(250)))
        .enabled(true)
        .build()
        .unwrap();
    let started = Instant::now();
    let res = chaos.layer(inner).oneshot(Request::new(())).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(*polled.lock().unwrap(), Some(started + ms(250)));
    assert_eq!(started.elapsed(), ms(250));
}

#[tokio::test(start_paused = true)]
async fn a_hang_never_completes_until_dropped() {
    let backend = Backend::default();
    let chaos = ChaosLayer::builder()
        .http()
        .hang(1.0)
        .latency(1.0, Latency::Fixed(ms(10)))
        .enabled(true)
        .build()
        .unwrap();
    let handle = chaos.handle();
    let mut svc = chaos.layer(backend.service());

    let mut hanging = pin!(svc.ready().await.unwrap().call(Request::new(())));
    tokio::time::advance(Duration::from_secs(3600)).await;
    for _ in 0..3 {
        let poll = std::future::poll_fn(|cx| Poll::Ready(hanging.as_mut().poll(cx))).await;
        assert!(poll.is_pending());
    }
    assert_eq!(backend.calls(), 0, "a hang does not reach the backend");
    let m = handle.metrics();
    assert_eq!((m.hangs, m.delayed), (1, 0));

    // Its caller's timeout is what ends it.
    let started = Instant::now();
    let future = svc.ready().await.unwrap().call(Request::new(()));
    assert!(tokio::time::timeout(ms(750), future).await.is_err());
    assert_eq!(started.elapsed(), ms(750));
}

#[tokio::test(start_paused = true)]
async fn the_handle_switches_faults_at_run_time() {
    let backend = Backend::default();
    let chaos = ChaosLayer::builder()
        .http()
        .error(1.0)
        .seed(1)
        .build()
        .unwrap();
    let handle: ChaosHandle = chaos.handle();
    let mut svc = chaos.layer(backend.service());

    // Off by default.
    assert!(!handle.is_enabled());
    assert_eq!(call(&mut svc).await.0, Seen::Passed);

    handle.enable();
    assert_eq!(call(&mut svc).await.0, Seen::Error);

    let too_many = Faults::none()
        .status(0.6, StatusCode::TOO_MANY_REQUESTS)
        .hang(0.6);
    let err = handle.set_faults(too_many).unwrap_err();
    assert_eq!(err.field(), "error + status + hang + disconnect");
    assert_eq!(handle.faults(), Faults::none().error(1.0), "left as it was");
    assert_eq!(call(&mut svc).await.0, Seen::Error);

    let throttled = Faults::none().status(1.0, StatusCode::TOO_MANY_REQUESTS);
    handle.set_faults(throttled).unwrap();
    assert_eq!(handle.faults(), throttled);
    assert_eq!(call(&mut svc).await.0, Seen::Status(429));

    handle.set_faults(Faults::none().disconnect(1.0)).unwrap();
    assert_eq!(call(&mut svc).await.0, Seen::Disconnect);

    handle.disable();
    assert_eq!(call(&mut svc).await.0, Seen::Passed);
    assert_eq!(backend.calls(), 2, "only the calls made while off");
    assert_eq!(handle.metrics().drawn, 4);
}

#[tokio::test(start_paused = true)]
async fn an_off_layer_is_a_pass_through_that_draws_nothing() {
    let backend = Backend::default();
    let faults = Faults::none()
        .latency(1.0, Latency::Fixed(Duration::from_secs(1)))
        .error(0.5);
    let chaos = ChaosLayer::builder()
        .http()
        .faults(faults)
        .seed(5)
        .build()
        .unwrap();
    let handle = chaos.handle();
    let mut svc = chaos.layer(backend.service());
    for _ in 0..100 {
        assert_eq!(call(&mut svc).await, (Seen::Passed, Duration::ZERO));
    }
    assert_eq!(backend.calls(), 100);
    assert_eq!(handle.metrics(), Default::default());

    // Nothing was taken from the stream: switched on, the layer draws what a fresh one does.
    handle.enable();
    let fresh = ChaosLayer::builder()
        .http()
        .faults(faults)
        .seed(5)
        .enabled(true)
        .build()
        .unwrap();
    assert_eq!(
        outcomes(&mut svc, 50).await,
        outcomes(&mut fresh.layer(backend.service()), 50).await
    );
}

#[tokio::test(start_paused = true)]
async fn a_generic_layer_injects_into_any_service() {
    let chaos = ChaosLayer::builder()
        .error(1.0)
        .enabled(true)
        .build()
        .unwrap();
    let handle = chaos.handle();
    let mut svc = chaos.layer(service_fn(|n: u32| async move { Ok::<_, io::Error>(n) }));
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<InjectedFault>(),
        Some(&InjectedFault::error())
    );

    handle.set_faults(Faults::none()).unwrap();
    assert_eq!(svc.ready().await.unwrap().call(2).await.unwrap(), 2);

    // It cannot answer with a status: the mix is refused, on the builder and on the handle.
    let status = Faults::none().status(0.1, StatusCode::BAD_GATEWAY);
    assert_eq!(handle.set_faults(status).unwrap_err().field(), "status");
    let err = ChaosLayer::builder().faults(status).build().unwrap_err();
    assert_eq!(err.field(), "status");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_connection_is_a_connection_error() {
    let chaos = ChaosLayer::builder()
        .http()
        .disconnect(1.0)
        .enabled(true)
        .build()
        .unwrap();
    let err = chaos
        .layer(Backend::default().service())
        .oneshot(Request::new(()))
        .await
        .unwrap_err();
    let fault = err.downcast_ref::<InjectedFault>().unwrap();
    assert_eq!(fault.kind(), FaultKind::Disconnect);
    let source = std::error::Error::source(fault).unwrap();
    assert_eq!(
        source.downcast_ref::<io::Error>().map(io::Error::kind),
        Some(io::ErrorKind::ConnectionReset)
    );
    #[cfg(feature = "retry")]
    {
        use seawall::retry::http::is_retryable_error;
        assert!(
            is_retryable_error(&*err),
            "the HTTP retry policy retries it"
        );
        assert!(!is_retryable_error(&InjectedFault::error()));
    }
}
