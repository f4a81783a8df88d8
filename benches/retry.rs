//! The retry layer's success path (no retry needed) against a bare service and the peers:
//! tower's `Retry` with a trivial policy, with and without `TpsBudget`, and tower-resilience's
//! retry. Prints allocations per call; measures one thread and two threads sharing one layer.
//!
//! Run: `cargo bench --all-features --bench retry`

mod support;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use seawall::retry::{RetryBudget, RetryLayer};
use std::future::{ready, Ready};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower::retry::budget::{Budget, TpsBudget};
use tower::{BoxError, Layer, Service, ServiceExt};

#[global_allocator]
static ALLOC: support::CountingAlloc = support::CountingAlloc;

/// The bare service: answers at once.
#[derive(Clone, Copy)]
struct Echo;

impl Service<u64> for Echo {
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

/// tower's `Retry` with the simplest policy: clone the request, never retry.
#[derive(Clone, Copy)]
struct NeverRetry;

impl tower::retry::Policy<u64, u64, BoxError> for NeverRetry {
    type Future = Ready<()>;
    fn retry(&mut self, _: &mut u64, _: &mut Result<u64, BoxError>) -> Option<Self::Future> {
        None
    }
    fn clone_request(&mut self, req: &u64) -> Option<u64> {
        Some(*req)
    }
}

/// tower's `Retry` with `TpsBudget`, as its docs show: deposit on success, withdraw to retry.
#[derive(Clone)]
struct BudgetPolicy(Arc<TpsBudget>);

impl tower::retry::Policy<u64, u64, BoxError> for BudgetPolicy {
    type Future = Ready<()>;
    fn retry(&mut self, _: &mut u64, result: &mut Result<u64, BoxError>) -> Option<Self::Future> {
        match result {
            Ok(_) => {
                self.0.deposit();
                None
            }
            Err(_) => self.0.withdraw().then(|| ready(())),
        }
    }
    fn clone_request(&mut self, req: &u64) -> Option<u64> {
        Some(*req)
    }
}

async fn drive<S>(svc: &mut S, iters: u64)
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    for i in 0..iters {
        let r = svc.ready().await.unwrap().call(black_box(i)).await.unwrap();
        black_box(r);
    }
}

/// Calls `$m!(name, service)` for each contender, unboxed.
macro_rules! contenders {
    ($m:ident) => {{
        $m!("bare", Echo);
        $m!(
            "seawall",
            RetryLayer::builder().build().unwrap().layer(Echo)
        );
        $m!(
            "seawall+budget",
            RetryLayer::builder()
                .budget(RetryBudget::default())
                .build()
                .unwrap()
                .layer(Echo)
        );
        $m!(
            "tower",
            tower::retry::RetryLayer::new(NeverRetry).layer(Echo)
        );
        $m!(
            "tower+TpsBudget",
            tower::retry::RetryLayer::new(BudgetPolicy(Arc::new(TpsBudget::new(
                Duration::from_secs(10),
                10,
                0.2
            ))))
            .layer(Echo)
        );
        $m!(
            "tower-resilience",
            tower_resilience::retry::RetryLayer::<u64, u64, BoxError>::builder()
                .max_attempts(3)
                .exponential_backoff(Duration::from_millis(100))
                .build()
                .layer(Echo)
        );
    }};
}

fn success_path(c: &mut Criterion) {
    let rt = support::runtime();
    let mut group = c.benchmark_group("retry/success_path");
    macro_rules! one_thread {
        ($name:expr, $svc:expr) => {{
            let mut svc = $svc;
            group.bench_function($name, |b| {
                b.iter_custom(|iters| {
                    rt.block_on(tokio::task::unconstrained(async {
                        let start = Instant::now();
                        drive(&mut svc, iters).await;
                        start.elapsed()
                    }))
                })
            });
        }};
    }
    contenders!(one_thread);
    group.finish();

    let mut group = c.benchmark_group("retry/threads");
    macro_rules! threads {
        ($name:expr, $svc:expr) => {{
            let svc = $svc;
            for threads in [1usize, 2] {
                group.throughput(Throughput::Elements(threads as u64));
                let svc = svc.clone();
                group.bench_function(BenchmarkId::new($name, threads), move |b| {
                    let svc = svc.clone();
                    b.iter_custom(move |iters| {
                        let svc = svc.clone();
                        support::run_on_threads(threads, iters, move |_, iters| {
                            let mut s = svc.clone();
                            async move { drive(&mut s, iters).await }
                        })
                    })
                });
            }
        }};
    }
    contenders!(threads);
    group.finish();
}

/// Rounds of calls timed apart; the fastest round is the figure (on a shared, noisy machine the
/// minimum is the round least disturbed by other processes).
const ROUNDS: usize = 40;
const CALLS: u64 = 20_000;

/// Prints one markdown table: ns per call on one thread (the fastest of `ROUNDS` rounds), what
/// that adds to the bare service, and allocations per call.
fn summary(_: &mut Criterion) {
    println!("\n| subject | ns/call (1 thread) | added to bare | allocs/call |");
    println!("|---|---|---|---|");
    let rt = support::runtime();
    let mut bare_ns = None;
    macro_rules! row {
        ($name:expr, $svc:expr) => {{
            let mut svc = $svc;
            // Warm up first: lazily built state is not a per-call cost.
            rt.block_on(tokio::task::unconstrained(drive(&mut svc, 1_000)));
            let ((), allocs) = support::counting(|| {
                rt.block_on(tokio::task::unconstrained(drive(&mut svc, CALLS)));
            });
            let per_call = allocs as f64 / CALLS as f64;
            let ns = (0..ROUNDS)
                .map(|_| {
                    rt.block_on(tokio::task::unconstrained(async {
                        let start = Instant::now();
                        drive(&mut svc, CALLS).await;
                        start.elapsed()
                    }))
                    .as_nanos() as f64
                        / CALLS as f64
                })
                .fold(f64::MAX, f64::min);
            let bare = *bare_ns.get_or_insert(ns);
            println!(
                "| {} | {ns:.1} | {:+.1} ns ({:.1}x bare) | {per_call:.2} |",
                $name,
                ns - bare,
                ns / bare
            );
        }};
    }
    contenders!(row);
    println!();
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = summary, success_path
}
criterion_main!(benches);
