//! The bulkhead's two invariants on real threads, 2 to 64 of them, in both modes, on std
//! threads and on a multi-thread tokio runtime: never more calls inside the inner service at
//! once than the capacity in force, and no permit lost (once every call is over, nothing is in
//! flight and a full capacity can be taken again). The same holds while another thread resizes
//! the bulkhead: never more than the largest capacity in force, and calls started after the
//! last resize never more than the final one.
//!
//! Bounded by counts of calls: no test reads the clock or sleeps. Wait mode's `max_wait` is
//! an hour, so that a call is refused only if the bulkhead strands it.
#![cfg(feature = "bulkhead")]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll};
use std::thread;
use std::time::Duration;

use futures::FutureExt;
use seawall::bulkhead::{Bulkhead, BulkheadHandle, BulkheadLayer};
use seawall::error::BulkheadFull;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tower::{service_fn, BoxError, Layer, Service};

const THREADS: [usize; 4] = [2, 4, 16, 64];
/// Calls per test run, spread over its threads (so each run is about the same work).
const CALLS: usize = 60_000;
const CAPACITY: usize = 6;
/// The capacities a resizer steps through, in order; the bulkhead starts at `CAPACITY`.
const RESIZES: [usize; 8] = [3, 10, 1, 7, 2, 12, 5, 4];
const LARGEST: usize = 12;
const FINAL: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Reject,
    Wait,
}

fn layer(mode: Mode) -> BulkheadLayer {
    let builder = BulkheadLayer::builder().max_concurrent(CAPACITY);
    match mode {
        Mode::Reject => builder,
        Mode::Wait => builder.max_wait(Duration::from_secs(3600)),
    }
    .build()
    .unwrap()
}

/// The calls inside one group of calls: how many now and the most at once.
#[derive(Default)]
struct Count {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl Count {
    fn enter(&self) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }

    fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }
}

/// The inner service: counts every call inside it, and apart the calls that started after
/// the last resize (their request says so); each call yields a few times so that calls
/// overlap.
#[derive(Clone, Default)]
struct Probe {
    all: Arc<Count>,
    after_last_resize: Arc<Count>,
}

/// A request: how many times to yield, and whether the caller started after the last resize.
#[derive(Clone, Copy)]
struct Req {
    yields: usize,
    settled: bool,
}

impl Service<Req> for Probe {
    type Response = ();
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let probe = self.clone();
        Box::pin(async move {
            // Counted in on the first poll and out before the call ends, so always within
            // the time the call holds its permit.
            probe.all.enter();
            if req.settled {
                probe.after_last_resize.enter();
            }
            for _ in 0..req.yields {
                tokio::task::yield_now().await;
            }
            if req.settled {
                probe.after_last_resize.leave();
            }
            probe.all.leave();
            Ok(())
        })
    }
}

/// Steps through `RESIZES` as the calls progress, so that every resize races calls.
struct Resizer {
    handle: BulkheadHandle,
    /// Calls finished so far, over every caller.
    done: Arc<AtomicUsize>,
    /// How many resizes have returned.
    resized: Arc<AtomicUsize>,
}

impl Resizer {
    fn run(self) {
        for (i, &capacity) in RESIZES.iter().enumerate() {
            // Spread over the first half of the calls.
            let at = (i + 1) * CALLS / (2 * RESIZES.len());
            while self.done.load(Ordering::SeqCst) < at {
                thread::yield_now();
            }
            self.handle.set_max_concurrent(capacity).unwrap();
            self.resized.store(i + 1, Ordering::SeqCst);
        }
    }
}

/// What every caller shares in one run.
#[derive(Clone)]
struct Run {
    svc: Bulkhead<Probe>,
    mode: Mode,
    calls_each: usize,
    done: Arc<AtomicUsize>,
    /// `RESIZES.len()` when resizing (the number of the last resize), else 0.
    last_resize: usize,
    resized: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
}

impl Run {
    /// The next call of caller `who`, with its request.
    fn next(&mut self, who: usize, i: usize) -> impl Future<Output = Result<(), BoxError>> {
        let settled = self.resized.load(Ordering::SeqCst) == self.last_resize;
        self.svc.call(Req {
            yields: (who + i) % 4,
            settled,
        })
    }

    fn finished(&self, outcome: Result<(), BoxError>) {
        if let Err(e) = outcome {
            assert!(e.downcast_ref::<BulkheadFull>().is_some(), "{e}");
            assert_eq!(self.mode, Mode::Reject, "a waiter was refused: stranded");
            self.refused.fetch_add(1, Ordering::SeqCst);
        }
        self.done.fetch_add(1, Ordering::SeqCst);
    }
}

enum Driver {
    StdThreads,
    Tokio,
}

/// Runs `CALLS` calls over `threads` callers, resizing from another thread if `resize`,
/// then checks both invariants.
fn stress(driver: Driver, mode: Mode, threads: usize, resize: bool) {
    let layer = layer(mode);
    let handle = layer.handle();
    let probe = Probe::default();
    let run = Run {
        svc: layer.layer(probe.clone()),
        mode,
        calls_each: CALLS / threads,
        done: Arc::default(),
        last_resize: if resize { RESIZES.len() } else { 0 },
        resized: Arc::default(),
        refused: Arc::default(),
    };
    let resizer = resize.then(|| {
        let resizer = Resizer {
            handle: handle.clone(),
            done: Arc::clone(&run.done),
            resized: Arc::clone(&run.resized),
        };
        thread::spawn(move || resizer.run())
    });
    // Wait mode needs a runtime's timer for its (never expiring) maximum wait.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(match driver {
            Driver::StdThreads => 1,
            Driver::Tokio => threads,
        })
        .enable_all()
        .build()
        .unwrap();
    match driver {
        Driver::StdThreads => on_std_threads(&rt, &run, threads),
        Driver::Tokio => on_tokio(&rt, &run, threads),
    }
    if let Some(resizer) = resizer {
        resizer.join().unwrap();
    }

    let what = format!("{mode:?}, {threads} threads, resizing: {resize}");
    let (largest, capacity) = if resize {
        (LARGEST, FINAL)
    } else {
        (CAPACITY, CAPACITY)
    };
    let max = probe.all.max();
    assert!(
        max <= largest,
        "{what}: {max} calls at once, capacity {largest}"
    );
    assert!(max >= 2, "{what}: the calls never overlapped");
    let max = probe.after_last_resize.max();
    assert!(
        max <= capacity,
        "{what}: {max} calls at once after the last resize, capacity {capacity}"
    );
    assert_eq!(
        handle.rejections(),
        run.refused.load(Ordering::SeqCst) as u64,
        "{what}"
    );
    let _time = rt.enter();
    assert_every_permit_back(&layer, &handle, capacity, &what);
}

fn on_std_threads(rt: &Runtime, run: &Run, threads: usize) {
    let start = Arc::new(Barrier::new(threads));
    let callers: Vec<_> = (0..threads)
        .map(|who| {
            let mut run = run.clone();
            let time = rt.handle().clone();
            let start = Arc::clone(&start);
            thread::spawn(move || {
                let _time = time.enter();
                start.wait();
                // Two calls at a time, so that calls overlap on one thread too.
                for i in (0..run.calls_each).step_by(2) {
                    let calls = futures::future::join(run.next(who, i), run.next(who, i + 1));
                    let (a, b) = futures::executor::block_on(calls);
                    run.finished(a);
                    run.finished(b);
                }
            })
        })
        .collect();
    for caller in callers {
        caller.join().unwrap();
    }
}

fn on_tokio(rt: &Runtime, run: &Run, threads: usize) {
    rt.block_on(async {
        let callers: Vec<_> = (0..threads)
            .map(|who| {
                let mut run = run.clone();
                tokio::spawn(async move {
                    for i in 0..run.calls_each {
                        let call = run.next(who, i);
                        run.finished(call.await);
                    }
                })
            })
            .collect();
        for caller in callers {
            caller.await.unwrap();
        }
    });
}

/// No permit lost: nothing in flight or waiting, and exactly `capacity` calls admitted at
/// once from one thread (the next one refused, or queued).
fn assert_every_permit_back(
    layer: &BulkheadLayer,
    handle: &BulkheadHandle,
    capacity: usize,
    what: &str,
) {
    let m = handle.metrics();
    assert_eq!(
        (m.capacity, m.in_flight, m.waiting, m.available),
        (capacity, 0, 0, capacity),
        "{what}: {m:?}"
    );
    let mut gated = layer.layer(service_fn(|rx: oneshot::Receiver<()>| async move {
        let _ = rx.await;
        Ok::<_, BoxError>(())
    }));
    let held: Vec<_> = (0..capacity)
        .map(|_| {
            let (end, rx) = oneshot::channel();
            let mut call = Box::pin(gated.call(rx));
            assert!(
                (&mut call).now_or_never().is_none(),
                "{what}: a permit was lost"
            );
            (end, call)
        })
        .collect();
    let (_end, rx) = oneshot::channel();
    let mut over = Box::pin(gated.call(rx));
    match (&mut over).now_or_never() {
        None => assert_eq!(handle.waiting(), 1, "{what}: admitted over the capacity"),
        Some(Err(e)) => assert!(e.downcast_ref::<BulkheadFull>().is_some(), "{e}"),
        Some(Ok(())) => panic!("{what}: admitted over the capacity"),
    }
    drop(over);
    for (end, call) in held {
        end.send(()).unwrap();
        futures::executor::block_on(call).unwrap();
    }
    let m = handle.metrics();
    assert_eq!(
        (m.in_flight, m.waiting, m.available),
        (0, 0, capacity),
        "{what}: {m:?}"
    );
}

#[test]
fn std_threads_reject_mode_never_exceed_the_capacity_and_lose_no_permit() {
    for threads in THREADS {
        stress(Driver::StdThreads, Mode::Reject, threads, false);
    }
}

#[test]
fn std_threads_wait_mode_never_exceed_the_capacity_and_lose_no_permit() {
    for threads in THREADS {
        stress(Driver::StdThreads, Mode::Wait, threads, false);
    }
}

#[test]
fn tokio_tasks_reject_mode_never_exceed_the_capacity_and_lose_no_permit() {
    for threads in THREADS {
        stress(Driver::Tokio, Mode::Reject, threads, false);
    }
}

#[test]
fn tokio_tasks_wait_mode_never_exceed_the_capacity_and_lose_no_permit() {
    for threads in THREADS {
        stress(Driver::Tokio, Mode::Wait, threads, false);
    }
}

#[test]
fn std_threads_reject_mode_keep_the_bound_through_live_resizes() {
    for threads in THREADS {
        stress(Driver::StdThreads, Mode::Reject, threads, true);
    }
}

#[test]
fn std_threads_wait_mode_keep_the_bound_through_live_resizes() {
    for threads in THREADS {
        stress(Driver::StdThreads, Mode::Wait, threads, true);
    }
}

#[test]
fn tokio_tasks_reject_mode_keep_the_bound_through_live_resizes() {
    for threads in THREADS {
        stress(Driver::Tokio, Mode::Reject, threads, true);
    }
}

#[test]
fn tokio_tasks_wait_mode_keep_the_bound_through_live_resizes() {
    for threads in THREADS {
        stress(Driver::Tokio, Mode::Wait, threads, true);
    }
}
