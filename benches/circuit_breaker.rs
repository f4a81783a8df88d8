//! The circuit breaker's closed-state happy path against the bare service and the peers
//! (tower-resilience's breaker, failsafe's breaker behind a small tower adapter), on one
//! thread and on two threads sharing one breaker.
//!
//! `cargo bench --all-features --bench circuit_breaker`
//!
//! Besides criterion's figures, a summary table is printed at the end: ns per call on one
//! thread, ratio to bare, allocations per call, and the throughput of two threads sharing one
//! breaker relative to one thread, all measured in the same run.

mod support;

#[global_allocator]
static ALLOC: support::CountingAlloc = support::CountingAlloc;

use criterion::{black_box, Criterion, Throughput};
use seawall::circuit_breaker::CircuitBreakerLayer;
use std::cell::{Cell, RefCell};
use std::future::{ready, Ready};
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer, Service, ServiceExt};

/// The bare service: answers at once.
#[derive(Clone, Copy, Debug)]
struct Bare;

impl Service<u64> for Bare {
    type Response = u64;
    type Error = io::Error;
    type Future = Ready<Result<u64, io::Error>>;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, req: u64) -> Self::Future {
        ready(Ok(req.wrapping_add(1)))
    }
}

/// The floor: the bare service plus what the closed state must do per call and no more: take
/// a per-thread value and put it back (the token), one load of a shared word (the state), one
/// plain load and store of a counter (the stripe's calls). No breaker can be cheaper than this.
/// Its one-thread figure is the floor; its counter is one shared line, not striped, so its
/// two-thread column is not a floor.
#[derive(Clone, Debug, Default)]
struct Floor {
    word: std::sync::Arc<AtomicU64>,
    counter: std::sync::Arc<AtomicU64>,
}

thread_local! {
    static FLOOR_SLOT: Cell<usize> = const { Cell::new(1) };
}

impl Service<u64> for Floor {
    type Response = u64;
    type Error = io::Error;
    type Future = Ready<Result<u64, io::Error>>;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, req: u64) -> Self::Future {
        let token = FLOOR_SLOT.with(|slot| slot.replace(0));
        if self.word.load(Ordering::Acquire) == 0 {
            let n = self.counter.load(Ordering::Relaxed);
            self.counter.store(n.wrapping_add(1), Ordering::Relaxed);
        }
        FLOOR_SLOT.with(|slot| slot.set(black_box(token)));
        ready(Ok(req.wrapping_add(1)))
    }
}

/// failsafe's breaker as a tower service: the adapter a user would write.
struct Failsafe<S, P> {
    inner: S,
    breaker: failsafe::StateMachine<P, ()>,
}

impl<S: Clone, P> Clone for Failsafe<S, P> {
    fn clone(&self) -> Self {
        let (inner, breaker) = (self.inner.clone(), self.breaker.clone());
        Self { inner, breaker }
    }
}

impl<S: Service<u64>, P: failsafe::FailurePolicy + Send + Sync> Service<u64> for Failsafe<S, P> {
    type Response = S::Response;
    type Error = failsafe::Error<S::Error>;
    type Future = failsafe::futures::ResponseFuture<S::Future, P, (), failsafe::Any>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(failsafe::Error::Inner)
    }

    fn call(&mut self, req: u64) -> Self::Future {
        failsafe::futures::CircuitBreaker::call(&self.breaker, self.inner.call(req))
    }
}

/// A service under test, erased to what the loops need.
trait Subject: Service<u64, Response = u64, Future: Send> + Clone + Send + Sync + 'static {}
impl<T> Subject for T where
    T: Service<u64, Response = u64, Future: Send> + Clone + Send + Sync + 'static
{
}

async fn run_loop<S: Subject>(mut svc: S, iters: u64) {
    for i in 0..iters {
        let svc = match svc.ready().await {
            Ok(svc) => svc,
            Err(_) => panic!("not ready"),
        };
        let r = svc.call(black_box(i)).await;
        black_box(r.is_ok());
    }
}

fn elapsed_on<S: Subject>(svc: &S, threads: usize, iters: u64) -> Duration {
    if threads == 1 {
        // Timed inside the thread: `run_on_threads` takes its start time on the spawning
        // thread after the barrier, which a loaded machine can deschedule long enough for a
        // short run to end "before" it starts (criterion then sees zero time).
        let rt = support::runtime();
        let svc = svc.clone();
        return rt.block_on(tokio::task::unconstrained(async move {
            let start = std::time::Instant::now();
            run_loop(svc, iters).await;
            start.elapsed()
        }));
    }
    let svc = svc.clone();
    if std::env::var_os("SEAWALL_BENCH_SUPPORT_TIMING").is_some() {
        return support::run_on_threads(threads, iters, move |_, iters| {
            run_loop(svc.clone(), iters)
        });
    }
    timed_on_threads(threads, iters, move || run_loop(svc.clone(), iters))
}

/// Like `support::run_on_threads`, but each thread reads the clock itself after the barrier and
/// at its end: the span from the first start to the last end. `run_on_threads` reads the start
/// on the spawning thread after the barrier; on a busy machine that thread can be descheduled
/// past the end of a short run, and the run then measures as zero (criterion rejects it).
fn timed_on_threads<F, Fut>(threads: usize, iters: u64, make_loop: F) -> Duration
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let _ = iters;
    let make_loop = std::sync::Arc::new(make_loop);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(threads));
    let spans: Vec<_> = (0..threads)
        .map(|_| {
            let (make_loop, barrier) = (make_loop.clone(), barrier.clone());
            std::thread::spawn(move || {
                let rt = support::runtime();
                let fut = make_loop();
                barrier.wait();
                let start = std::time::Instant::now();
                rt.block_on(tokio::task::unconstrained(fut));
                (start, std::time::Instant::now())
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().expect("bench thread"))
        .collect();
    let start = spans.iter().map(|s| s.0).min().expect("a thread");
    let end = spans.iter().map(|s| s.1).max().expect("a thread");
    end - start
}

fn allocations<S: Subject>(svc: &S) -> f64 {
    let svc = Rc::new(RefCell::new(svc.clone()));
    support::allocations_per_call(20_000, move || {
        let svc = Rc::clone(&svc);
        async move {
            // Every subject is ready at once; the borrow ends before the await.
            let fut = {
                let mut svc = svc.borrow_mut();
                let ready = futures::FutureExt::now_or_never(svc.ready());
                ready.expect("ready at once").ok().expect("ready").call(1)
            };
            let r = fut.await;
            black_box(r.is_ok());
        }
    })
}

/// Every subject, built fresh (so each gets its own breaker).
fn with_subjects(mut f: impl FnMut(&str, &dyn Fn(usize, u64) -> Duration, &dyn Fn() -> f64)) {
    macro_rules! subject {
        ($name:expr, $svc:expr) => {{
            let svc = $svc;
            f(
                $name,
                &|threads, iters| elapsed_on(&svc, threads, iters),
                &|| allocations(&svc),
            );
        }};
    }
    subject!("bare", Bare);
    subject!(
        "floor (bare + what a closed call must do)",
        Floor::default()
    );
    subject!(
        "seawall consecutive",
        CircuitBreakerLayer::builder()
            .consecutive_failures(5)
            .build()
            .unwrap()
            .layer(Bare)
    );
    subject!(
        "seawall count window",
        CircuitBreakerLayer::builder()
            .failure_rate(0.5)
            .count_window(100)
            .build()
            .unwrap()
            .layer(Bare)
    );
    subject!(
        "seawall time window",
        CircuitBreakerLayer::builder()
            .failure_rate(0.5)
            .time_window(Duration::from_secs(60), 60)
            .build()
            .unwrap()
            .layer(Bare)
    );
    subject!(
        "seawall slow-call",
        CircuitBreakerLayer::builder()
            .failure_rate(0.5)
            .count_window(100)
            .slow_calls(Duration::from_secs(1), 0.5)
            .build()
            .unwrap()
            .layer(Bare)
    );
    subject!(
        "tower-resilience",
        tower::ServiceBuilder::new()
            .layer(
                tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
                    .build()
                    .unwrap()
            )
            .service(Bare)
    );
    subject!(
        "failsafe (adapter)",
        Failsafe {
            inner: Bare,
            breaker: failsafe::Config::new().build(),
        }
    );
}

fn benches(c: &mut Criterion) {
    for threads in [1usize, 2] {
        let mut group = c.benchmark_group(format!("circuit_breaker/{threads}-thread"));
        group.throughput(Throughput::Elements(threads as u64));
        with_subjects(|name, elapsed, _| {
            group.bench_function(name, |b| b.iter_custom(|iters| elapsed(threads, iters)));
        });
        group.finish();
    }
}

/// One run's side-by-side table: best of `RUNS` runs of `CALLS` calls per thread (short runs,
/// so that on a busy machine some of them run undisturbed).
fn summary() {
    const CALLS: u64 = 100_000;
    const RUNS: usize = 15;
    let best = |elapsed: &dyn Fn(usize, u64) -> Duration, threads| {
        (0..RUNS)
            .map(|_| elapsed(threads, CALLS))
            .min()
            .expect("some runs")
    };
    let mut rows = Vec::new();
    with_subjects(|name, elapsed, allocs| {
        let one = best(elapsed, 1).as_secs_f64() * 1e9 / CALLS as f64;
        let two = best(elapsed, 2).as_secs_f64() * 1e9 / CALLS as f64;
        rows.push((name.to_string(), one, allocs(), 2.0 * one / two));
    });
    let bare = rows[0].1;
    println!();
    println!("| service | ns/call (1 thread) | ratio to bare | added ns | allocations/call | 2-thread throughput / 1-thread |");
    println!("|---|---|---|---|---|---|");
    for (name, one, allocs, scaling) in rows {
        println!(
            "| {name} | {one:.1} | {:.1}x | {:+.1} | {allocs:.2} | {scaling:.2}x |",
            one / bare,
            one - bare
        );
    }
}

fn main() {
    let mut c = support::criterion().configure_from_args();
    benches(&mut c);
    c.final_summary();
    if std::env::var_os("SEAWALL_BENCH_NO_SUMMARY").is_none() {
        summary();
    }
}
