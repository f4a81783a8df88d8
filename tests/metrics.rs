//! The `metrics` feature: every layer's events, recorded as `metrics` counters, gauge and
//! histogram with the labels the docs list, through a recorder each test installs for itself.
#![cfg(all(
    feature = "metrics",
    feature = "circuit-breaker",
    feature = "bulkhead",
    feature = "retry",
    feature = "rate-limit"
))]

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use seawall::bulkhead::BulkheadLayer;
use seawall::circuit_breaker::CircuitBreakerLayer;
use seawall::events::{Event, EventBus};
use seawall::metrics as m;
use seawall::rate_limit::RateLimitLayer;
use seawall::retry::{Jitter, RetryBudget, RetryLayer};
use tower::{service_fn, BoxError, Layer, ServiceBuilder, ServiceExt};

/// A metric as the test names it: its name and its labels, `k=v` joined by `,` in key order.
type Id = (String, String);

fn id(key: &Key) -> Id {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    (key.name().to_owned(), labels.join(","))
}

/// Values recorded into a histogram.
#[derive(Default)]
struct Samples(Mutex<Vec<f64>>);

impl HistogramFn for Samples {
    fn record(&self, value: f64) {
        self.0.lock().unwrap().push(value);
    }
}

/// Counters and gauges are `AtomicU64`s (`metrics` implements both for it; a gauge holds the
/// bits of an `f64`).
#[derive(Default)]
struct TestRecorder {
    counters: Mutex<BTreeMap<Id, Arc<AtomicU64>>>,
    gauges: Mutex<BTreeMap<Id, Arc<AtomicU64>>>,
    histograms: Mutex<BTreeMap<Id, Arc<Samples>>>,
    described: Mutex<Vec<String>>,
}

impl TestRecorder {
    fn counter(&self, name: &str, labels: &str) -> Option<u64> {
        let key = (name.to_owned(), labels.to_owned());
        let counters = self.counters.lock().unwrap();
        counters.get(&key).map(|c| c.load(Ordering::SeqCst))
    }

    fn gauge(&self, name: &str, labels: &str) -> Option<f64> {
        let key = (name.to_owned(), labels.to_owned());
        let gauges = self.gauges.lock().unwrap();
        gauges
            .get(&key)
            .map(|g| f64::from_bits(g.load(Ordering::SeqCst)))
    }

    fn histogram(&self, name: &str, labels: &str) -> Vec<f64> {
        let key = (name.to_owned(), labels.to_owned());
        let histograms = self.histograms.lock().unwrap();
        histograms
            .get(&key)
            .map(|h| h.0.lock().unwrap().clone())
            .unwrap_or_default()
    }

    /// Every counter as `name{labels} = value`, to compare whole.
    fn counters(&self) -> Vec<String> {
        let counters = self.counters.lock().unwrap();
        counters
            .iter()
            .map(|((n, l), c)| format!("{n}{{{l}}} = {}", c.load(Ordering::SeqCst)))
            .collect()
    }

    fn is_empty(&self) -> bool {
        self.counters.lock().unwrap().is_empty()
            && self.gauges.lock().unwrap().is_empty()
            && self.histograms.lock().unwrap().is_empty()
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.described.lock().unwrap().push(key.as_str().to_owned());
    }
    fn describe_gauge(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.described.lock().unwrap().push(key.as_str().to_owned());
    }
    fn describe_histogram(&self, key: KeyName, _: Option<Unit>, _: SharedString) {
        self.described.lock().unwrap().push(key.as_str().to_owned());
    }
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut counters = self.counters.lock().unwrap();
        let c: Arc<AtomicU64> = Arc::clone(counters.entry(id(key)).or_default());
        Counter::from_arc::<AtomicU64>(c)
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let mut gauges = self.gauges.lock().unwrap();
        Gauge::from_arc(Arc::clone(gauges.entry(id(key)).or_default()))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let mut histograms = self.histograms.lock().unwrap();
        Histogram::from_arc(Arc::clone(histograms.entry(id(key)).or_default()))
    }
}

/// Runs the recording until it has recorded every event published so far and waits for the
/// next: with time paused, the timeout fires only once nothing else can run. (The recording
/// itself runs as long as a source lives, and a retry layer keeps its own for good.)
async fn catch_up(recording: Pin<&mut impl Future<Output = ()>>) {
    let _ = tokio::time::timeout(Duration::from_secs(1), recording).await;
}

fn failing() -> impl tower::Service<
    (),
    Response = (),
    Error = BoxError,
    Future = impl std::future::Future<Output = Result<(), BoxError>>,
> + Clone {
    service_fn(|_: ()| async { Err::<(), BoxError>("connection refused".into()) })
}

#[tokio::test(start_paused = true)]
async fn a_breaker_opening_and_recovering_records_transitions_gauge_and_rejections() {
    let recorder = TestRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let bus = EventBus::new(64);
    let mut recording = pin!(m::record(&bus));
    let breaker = CircuitBreakerLayer::consecutive_failures(2)
        .open_duration(Duration::from_secs(10))
        .events(bus.source("payments"))
        .build()
        .unwrap();
    let up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let svc = breaker.layer(service_fn({
        let up = Arc::clone(&up);
        move |_: ()| {
            let up = up.load(Ordering::SeqCst);
            async move {
                if up {
                    Ok(())
                } else {
                    Err::<(), BoxError>("connection refused".into())
                }
            }
        }
    }));

    // Two failures trip it; the next two calls are refused.
    for _ in 0..4 {
        assert!(svc.clone().oneshot(()).await.is_err());
    }
    // 10 s later the next call is a probe; it succeeds and closes the breaker.
    tokio::time::advance(Duration::from_secs(10)).await;
    up.store(true, Ordering::SeqCst);
    svc.clone().oneshot(()).await.unwrap();

    catch_up(recording.as_mut()).await;

    let labels = "layer=circuit_breaker,name=payments";
    assert_eq!(
        recorder.counters(),
        [
            format!("seawall_calls_rejected_total{{{labels}}} = 2"),
            format!("seawall_circuit_transitions_total{{from=closed,{labels},to=open}} = 1"),
            format!("seawall_circuit_transitions_total{{from=half_open,{labels},to=closed}} = 1"),
            format!("seawall_circuit_transitions_total{{from=open,{labels},to=half_open}} = 1"),
        ]
    );
    assert_eq!(recorder.gauge(m::CIRCUIT_STATE, labels), Some(0.0));
}

#[tokio::test(start_paused = true)]
async fn the_state_gauge_follows_the_breaker() {
    let recorder = TestRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let bus = EventBus::new(64);
    let breaker = CircuitBreakerLayer::consecutive_failures(1)
        .open_duration(Duration::from_secs(10))
        .events(bus.source("db"))
        .build()
        .unwrap();
    let handle = breaker.handle();
    let labels = "layer=circuit_breaker,name=db";
    let svc = breaker.layer(failing());
    // Each step is read through `record_event` from a receiver of our own.
    let mut rx = bus.subscribe();
    let state_after = |rx: &mut tokio::sync::broadcast::Receiver<Event>| {
        while let Ok(event) = rx.try_recv() {
            m::record_event(&event);
        }
        recorder.gauge(m::CIRCUIT_STATE, labels)
    };

    assert!(svc.clone().oneshot(()).await.is_err());
    assert_eq!(state_after(&mut rx), Some(2.0), "open");
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(svc.clone().oneshot(()).await.is_err());
    // The probe failed: half-open, then open again.
    assert_eq!(state_after(&mut rx), Some(2.0), "open again");
    handle.force_open();
    assert_eq!(state_after(&mut rx), Some(3.0), "forced open");
    handle.disable();
    assert_eq!(state_after(&mut rx), Some(-1.0), "disabled");
    handle.reset();
    assert_eq!(state_after(&mut rx), Some(0.0), "closed");
    assert_eq!(
        recorder.counter(
            m::CIRCUIT_TRANSITIONS,
            "from=open,layer=circuit_breaker,name=db,to=half_open"
        ),
        Some(1)
    );
    assert_eq!(
        recorder.counter(
            m::CIRCUIT_TRANSITIONS,
            "from=half_open,layer=circuit_breaker,name=db,to=open"
        ),
        Some(1)
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_bulkhead_counts_its_rejections() {
    let recorder = TestRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let bus = EventBus::new(64);
    let mut recording = pin!(m::record(&bus));
    let bulkhead = BulkheadLayer::builder()
        .max_concurrent(1)
        .events(bus.source("search"))
        .build()
        .unwrap();
    let (release, gate) = tokio::sync::oneshot::channel::<()>();
    let gate = Arc::new(Mutex::new(Some(gate)));
    let svc = bulkhead.layer(service_fn(move |_: ()| {
        let gate = gate.lock().unwrap().take();
        async move {
            if let Some(gate) = gate {
                let _ = gate.await;
            }
            Ok::<(), BoxError>(())
        }
    }));
    let mut held = Box::pin(svc.clone().oneshot(()));
    assert!(futures::poll!(held.as_mut()).is_pending());
    assert_eq!(bulkhead.handle().in_flight(), 1);
    for _ in 0..3 {
        assert!(svc.clone().oneshot(()).await.is_err());
    }
    release.send(()).unwrap();
    held.await.unwrap();

    catch_up(recording.as_mut()).await;
    assert_eq!(
        recorder.counters(),
        ["seawall_calls_rejected_total{layer=bulkhead,name=search} = 3"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_rate_limit_hit_counts_a_rejection() {
    let recorder = TestRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let bus = EventBus::new(64);
    let mut recording = pin!(m::record(&bus));
    let limit = RateLimitLayer::builder()
        .rate(2, Duration::from_secs(1))
        .burst(1)
        .events(bus.source("api"))
        .build()
        .unwrap();
    let svc = limit.layer(service_fn(|_: ()| async { Ok::<(), BoxError>(()) }));
    svc.clone().oneshot(()).await.unwrap();
    assert!(svc.clone().oneshot(()).await.is_err());
    tokio::time::advance(Duration::from_millis(500)).await;
    svc.clone().oneshot(()).await.unwrap();

    catch_up(recording.as_mut()).await;
    assert_eq!(
        recorder.counters(),
        ["seawall_calls_rejected_total{layer=rate_limit,name=api} = 1"]
    );
}

#[tokio::test(start_paused = true)]
async fn retries_count_with_their_delays_and_an_empty_budget_is_counted() {
    let recorder = TestRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let bus = EventBus::new(64);
    let mut recording = pin!(m::record(&bus));
    let retry = RetryLayer::builder()
        .max_attempts(3)
        .initial_delay(Duration::from_millis(100))
        .jitter(Jitter::None)
        .events(bus.source("backend"))
        .build()
        .unwrap();
    // No budget at all: the first retry wanted is refused.
    let stingy = RetryLayer::builder()
        .max_attempts(3)
        .budget(
            RetryBudget::builder()
                .ratio(0.0)
                .min_per_sec(0)
                .build()
                .unwrap(),
        )
        .events(bus.source("stingy"))
        .build()
        .unwrap();
    assert!(retry.layer(failing()).oneshot(()).await.is_err());
    assert!(stingy.layer(failing()).oneshot(()).await.is_err());

    catch_up(recording.as_mut()).await;
    assert_eq!(
        recorder.counters(),
        [
            "seawall_retries_total{layer=retry,name=backend} = 2",
            "seawall_retry_budget_exhausted_total{layer=retry,name=stingy} = 1",
        ]
    );
    assert_eq!(
        recorder.histogram(m::RETRY_DELAY, "layer=retry,name=backend"),
        [0.1, 0.2]
    );
}

#[tokio::test(start_paused = true)]
async fn the_happy_path_records_nothing() {
    let recorder = TestRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let bus = EventBus::new(64);
    let mut recording = pin!(m::record(&bus));
    let svc = ServiceBuilder::new()
        .layer(
            RetryLayer::builder()
                .events(bus.source("s"))
                .build()
                .unwrap(),
        )
        .layer(
            CircuitBreakerLayer::consecutive_failures(1)
                .events(bus.source("s"))
                .build()
                .unwrap(),
        )
        .layer(
            RateLimitLayer::builder()
                .rate(1_000, Duration::from_secs(1))
                .burst(1_000)
                .events(bus.source("s"))
                .build()
                .unwrap(),
        )
        .layer(
            BulkheadLayer::builder()
                .max_concurrent(1)
                .events(bus.source("s"))
                .build()
                .unwrap(),
        )
        .service(service_fn(|_: ()| async { Ok::<(), BoxError>(()) }));
    for _ in 0..100 {
        svc.clone().oneshot(()).await.unwrap();
    }

    catch_up(recording.as_mut()).await;
    assert!(recorder.is_empty(), "{:?}", recorder.counters());
    // Described all the same, so an exporter can list them with their help text.
    assert_eq!(recorder.described.lock().unwrap().len(), 7);
}

#[tokio::test(start_paused = true)]
async fn events_missed_by_a_lagging_recording_are_counted() {
    let recorder = TestRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    // Room for one event; the recording does not run until the calls are done.
    let bus = EventBus::new(1);
    let mut recording = pin!(m::record(&bus));
    let limit = RateLimitLayer::builder()
        .rate(1, Duration::from_secs(1))
        .events(bus.source("api"))
        .build()
        .unwrap();
    let svc = limit.layer(service_fn(|_: ()| async { Ok::<(), BoxError>(()) }));
    svc.clone().oneshot(()).await.unwrap();
    for _ in 0..4 {
        assert!(svc.clone().oneshot(()).await.is_err());
    }

    catch_up(recording.as_mut()).await;
    assert_eq!(
        recorder.counters(),
        [
            "seawall_calls_rejected_total{layer=rate_limit,name=api} = 1",
            "seawall_events_lagged_total{} = 3",
        ]
    );
}
