//! The bulkhead's happy path (never full) against the bare service, tower's `ConcurrencyLimit`
//! and tower-resilience's bulkhead, single-threaded and with two threads sharing one bulkhead.
//! A floor row (the bare service plus one atomic read-modify-write) shows what this machine
//! charges for the one RMW a reject-mode call makes.
//!
//! Run: `cargo bench --all-features --bench bulkhead`
mod support;

use std::cell::RefCell;
use std::future::{ready, Ready};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures::FutureExt;
use seawall::bulkhead::BulkheadLayer;
use tower::limit::ConcurrencyLimitLayer;
use tower::{BoxError, Layer, Service, ServiceExt};

#[global_allocator]
static ALLOC: support::CountingAlloc = support::CountingAlloc;

/// Never fills: the bulkhead is measured on its happy path.
const LIMIT: usize = 1_000;

/// The bare service: always ready, answers at once.
#[derive(Clone, Copy)]
struct Bare;

impl Service<u64> for Bare {
    type Response = u64;
    type Error = BoxError;
    type Future = Ready<Result<u64, BoxError>>;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, req: u64) -> Self::Future {
        ready(Ok(req))
    }
}

/// The floor for a counting bulkhead: the bare service plus one uncontended atomic
/// read-modify-write per call (the least a bulkhead can do and still never admit more than
/// its limit; see the module docs of `src/bulkhead/state.rs`). Each clone counts on its own
/// cache line, so two threads do not contend.
struct OneRmw(Box<PaddedCounter>);

#[repr(align(128))]
struct PaddedCounter(AtomicU64);

impl OneRmw {
    fn new() -> Self {
        Self(Box::new(PaddedCounter(AtomicU64::new(0))))
    }
}

impl Clone for OneRmw {
    fn clone(&self) -> Self {
        Self::new()
    }
}

impl Service<u64> for OneRmw {
    type Response = u64;
    type Error = BoxError;
    type Future = Ready<Result<u64, BoxError>>;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, req: u64) -> Self::Future {
        self.0 .0.fetch_add(1, Ordering::Relaxed);
        ready(Ok(req))
    }
}

/// One call: `ready().await`, then `call().await`, as a server's connection task does.
macro_rules! one_call {
    ($svc:expr, $i:expr) => {{
        let svc = &mut $svc;
        let out = svc.ready().await.unwrap().call($i).await;
        std::hint::black_box(out.ok());
    }};
}

/// A name and a way to build a service of each kind (the same shared state for every
/// `clone()` of the returned service).
macro_rules! for_each_subject {
    ($m:ident) => {
        $m!("bare", Bare);
        $m!("floor: bare + one atomic RMW", OneRmw::new());
        $m!(
            "seawall reject",
            BulkheadLayer::builder()
                .max_concurrent(LIMIT)
                .build()
                .unwrap()
                .layer(Bare)
        );
        $m!(
            "seawall wait",
            BulkheadLayer::builder()
                .max_concurrent(LIMIT)
                .max_wait(Duration::from_millis(100))
                .build()
                .unwrap()
                .layer(Bare)
        );
        $m!(
            "tower ConcurrencyLimit",
            ConcurrencyLimitLayer::new(LIMIT).layer(Bare)
        );
        $m!(
            "tower-resilience bulkhead",
            tower_resilience::bulkhead::BulkheadLayer::builder()
                .max_concurrent_calls(LIMIT)
                .reject_when_full()
                .build()
                .unwrap()
                .layer(Bare)
        );
    };
}

fn single_thread(c: &mut Criterion) {
    let mut group = c.benchmark_group("bulkhead/happy path, 1 thread");
    let rt = support::runtime();
    macro_rules! bench {
        ($name:expr, $svc:expr) => {{
            let mut svc = $svc;
            group.bench_function($name, |b| {
                b.iter_custom(|iters| {
                    rt.block_on(tokio::task::unconstrained(async {
                        let start = Instant::now();
                        for i in 0..iters {
                            one_call!(svc, i);
                        }
                        start.elapsed()
                    }))
                })
            });
        }};
    }
    for_each_subject!(bench);
    group.finish();
}

fn two_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("bulkhead/shared by threads");
    macro_rules! bench {
        ($name:expr, $svc:expr) => {{
            let svc = $svc;
            for threads in [1usize, 2] {
                group.throughput(Throughput::Elements(threads as u64));
                let svc = svc.clone();
                group.bench_function(format!("{} x{threads}", $name), move |b| {
                    let svc = svc.clone();
                    b.iter_custom(move |iters| {
                        let svc = svc.clone();
                        support::run_on_threads(threads, iters, move |_, iters| {
                            let mut svc = svc.clone();
                            async move {
                                for i in 0..iters {
                                    one_call!(svc, i);
                                }
                            }
                        })
                    })
                });
            }
        }};
    }
    for_each_subject!(bench);
    group.finish();
}

/// Rounds of calls timed apart; the fastest round is the figure (on a shared, noisy machine the
/// minimum is the round least disturbed by other processes).
const ROUNDS: usize = 40;
const CALLS: u64 = 20_000;
/// Two-thread rounds are longer, so that the threads' start-up skew is small against them.
const THREAD_ROUNDS: usize = 10;
const THREAD_CALLS: u64 = 200_000;

fn fastest_single(mut one_round: impl FnMut() -> Duration) -> f64 {
    (0..ROUNDS)
        .map(|_| one_round().as_nanos() as f64 / CALLS as f64)
        .fold(f64::MAX, f64::min)
}

/// Like `support::run_on_threads`, but each thread stamps its own start after the barrier, so
/// a late-scheduled coordinating thread cannot shorten (or zero) the measured time.
fn wall_time_on_threads<F, Fut>(threads: usize, iters: u64, make_loop: F) -> Duration
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let make_loop = std::sync::Arc::new(make_loop);
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(threads));
    let stamps: Vec<(Instant, Instant)> = (0..threads)
        .map(|i| {
            let make_loop = make_loop.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let rt = support::runtime();
                let fut = make_loop(i, iters);
                barrier.wait();
                let start = Instant::now();
                rt.block_on(tokio::task::unconstrained(fut));
                (start, Instant::now())
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().expect("bench thread"))
        .collect();
    let start = stamps.iter().map(|s| s.0).min().expect("threads");
    let end = stamps.iter().map(|s| s.1).max().expect("threads");
    end - start
}

/// Prints one markdown table: ns per call and allocations per call on one thread, and the
/// throughput of two threads sharing one service relative to one thread.
fn summary(_: &mut Criterion) {
    println!("\n| subject | ns/call (1 thread) | added to bare | allocs/call | 2-thread throughput vs 1 |");
    println!("|---|---|---|---|---|");
    let mut bare_ns = None;
    macro_rules! row {
        ($name:expr, $svc:expr) => {{
            // Shared through an `Rc<RefCell<_>>` rather than cloned per call: some services
            // allocate when cloned, which is not a per-call cost.
            let shared = Rc::new(RefCell::new($svc));
            let per_call = support::allocations_per_call(10_000, || {
                let svc = Rc::clone(&shared);
                async move {
                    let call = {
                        let mut svc = svc.borrow_mut();
                        let ready = svc.ready().now_or_never().expect("always ready");
                        ready.unwrap().call(1)
                    };
                    std::hint::black_box(call.await.ok());
                }
            });
            let mut svc = shared.borrow().clone();
            let rt = support::runtime();
            let ns = fastest_single(|| {
                rt.block_on(tokio::task::unconstrained(async {
                    let start = Instant::now();
                    for i in 0..CALLS {
                        one_call!(svc, i);
                    }
                    start.elapsed()
                }))
            });
            let throughput = |threads: usize| {
                let best = (0..THREAD_ROUNDS)
                    .map(|_| {
                        let svc = svc.clone();
                        wall_time_on_threads(threads, THREAD_CALLS, move |_, iters| {
                            let mut svc = svc.clone();
                            async move {
                                for i in 0..iters {
                                    one_call!(svc, i);
                                }
                            }
                        })
                    })
                    .min()
                    .expect("rounds");
                (threads as u64 * THREAD_CALLS) as f64 / best.as_secs_f64()
            };
            let scaling = throughput(2) / throughput(1);
            let bare = *bare_ns.get_or_insert(ns);
            println!(
                "| {} | {ns:.1} | {:+.1} ns ({:.1}x bare) | {per_call:.2} | {scaling:.2}x |",
                $name,
                ns - bare,
                ns / bare
            );
        }};
    }
    for_each_subject!(row);
    println!();
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = summary, single_thread, two_threads
}
criterion_main!(benches);
