//! The bulkhead's happy path (never full) against the bare service, tower's `ConcurrencyLimit`
//! and tower-resilience's bulkhead, single-threaded and with two threads sharing one bulkhead.
//!
//! Run: `cargo bench --all-features --bench bulkhead`
mod support;

use std::cell::RefCell;
use std::future::{ready, Ready};
use std::rc::Rc;
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

fn allocations(_: &mut Criterion) {
    println!("\nallocations per call (happy path, 1 thread):");
    macro_rules! count {
        ($name:expr, $svc:expr) => {{
            // Shared through an `Rc<RefCell<_>>` rather than cloned per call: some services
            // allocate when cloned, which is not a per-call cost.
            let svc = Rc::new(RefCell::new($svc));
            let per_call = support::allocations_per_call(10_000, || {
                let svc = Rc::clone(&svc);
                async move {
                    let call = {
                        let mut svc = svc.borrow_mut();
                        let ready = svc.ready().now_or_never().expect("always ready");
                        ready.unwrap().call(1)
                    };
                    std::hint::black_box(call.await.ok());
                }
            });
            println!("  {:<28} {per_call:.2}", $name);
        }};
    }
    for_each_subject!(count);
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = allocations, single_thread, two_threads
}
criterion_main!(benches);
