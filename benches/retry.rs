//! The retry layer's success path (no retry needed) against a bare service and the peers:
//! tower's `Retry` with a trivial policy, with and without `TpsBudget`, and tower-resilience's
//! retry. Prints allocations per call; measures one thread and two threads sharing one layer.
//!
//! Run: `cargo bench --all-features --bench retry`; `-- nomatchxyz` prints only the summary
//! table. `SEAWALL_PROFILE=NAME` runs only the subject named NAME (see [`profile`]).

mod support;

use criterion::{black_box, criterion_group, BenchmarkId, Criterion, Throughput};
use seawall::retry::{RetryBudget, RetryLayer};
use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// The floor: the bare service plus the least any retry layer must do per call on the success
/// path, and no more. The call is counted (a per-clone countdown, published to shared state in
/// batches, as seawall does); the response future keeps a copy of the request and a reference to
/// the shared state (a retry needs both) and polls the inner future. No policy, no service
/// clone, no timer, nothing to release on drop.
#[derive(Clone, Copy)]
struct Floor {
    inner: Echo,
    shared: &'static FloorShared,
    left: u32,
}

struct FloorShared {
    calls: AtomicU64,
}

static FLOOR_SHARED: FloorShared = FloorShared {
    calls: AtomicU64::new(0),
};

impl Floor {
    fn new() -> Self {
        Self {
            inner: Echo,
            shared: &FLOOR_SHARED,
            left: 64,
        }
    }

    #[inline(never)]
    fn flush(&mut self) {
        self.shared.calls.fetch_add(64, Ordering::Relaxed);
        self.left = 64;
    }
}

struct FloorFuture {
    future: Ready<Result<u64, BoxError>>,
    request: u64,
    shared: &'static FloorShared,
}

impl Future for FloorFuture {
    type Output = Result<u64, BoxError>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let result = std::task::ready!(Pin::new(&mut this.future).poll(cx));
        if result.is_err() {
            // Where a retry would start: it needs the request and the shared state.
            return Poll::Ready(floor_retry(this.request, this.shared));
        }
        Poll::Ready(result)
    }
}

#[cold]
#[inline(never)]
fn floor_retry(request: u64, shared: &FloorShared) -> Result<u64, BoxError> {
    shared.calls.fetch_add(1, Ordering::Relaxed);
    Ok(black_box(request))
}

impl Service<u64> for Floor {
    type Response = u64;
    type Error = BoxError;
    type Future = FloorFuture;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: u64) -> FloorFuture {
        self.left -= 1;
        if self.left == 0 {
            self.flush();
        }
        FloorFuture {
            future: self.inner.call(req),
            request: req,
            shared: self.shared,
        }
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
        $m!("floor", Floor::new());
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

/// `SEAWALL_PROFILE=NAME` runs only the subject named NAME, `SEAWALL_PROFILE_CALLS` times
/// (default 1,000,000), for `perf record` or `valgrind --tool=callgrind`: instructions per call
/// are the difference of two runs with different call counts, divided by the difference.
fn profile(wanted: &str) {
    let calls = support::profile_calls();
    let rt = support::runtime();
    let mut found = false;
    macro_rules! run {
        ($name:expr, $svc:expr) => {{
            if !found && $name == wanted {
                found = true;
                let mut svc = $svc;
                rt.block_on(tokio::task::unconstrained(drive(&mut svc, calls)));
            }
        }};
    }
    contenders!(run);
    assert!(found, "no subject named {wanted:?}");
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = summary, success_path
}

fn main() {
    support::main(profile, benches);
}
