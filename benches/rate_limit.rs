//! Rate limit: the under-limit happy path against the bare service, tower's `RateLimit` and
//! governor's `check()`; the keyed path against governor's keyed `check_key`; one and two
//! threads; allocations per call.
//!
//! Run: `cargo bench --all-features --bench rate_limit`. Criterion's figures come first; a
//! summary table (its own timing loops, the fastest of many short interleaved rounds) is
//! printed at the end. `cargo bench --all-features --bench rate_limit -- nomatchxyz` prints
//! the summary alone.

mod support;

#[global_allocator]
static ALLOC: support::CountingAlloc = support::CountingAlloc;

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::{ready, Ready};
use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion, Throughput};
use governor::{Quota, RateLimiter};
use seawall::rate_limit::{key_fn, RateLimitLayer};
use tower::{Layer, Service, ServiceExt};

const KEYS: u64 = 1_000;

#[derive(Clone, Copy)]
struct Bare;

impl Service<u64> for Bare {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;
    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, x: u64) -> Self::Future {
        ready(Ok(x))
    }
}

/// governor's direct limiter in front of the bare service, as a user would wrap it.
#[derive(Clone)]
struct GovernorDirect(Arc<governor::DefaultDirectRateLimiter>);

impl Service<u64> for GovernorDirect {
    type Response = u64;
    type Error = &'static str;
    type Future = Ready<Result<u64, &'static str>>;
    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), &'static str>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, x: u64) -> Self::Future {
        ready(match self.0.check() {
            Ok(()) => Ok(x),
            Err(_) => Err("limited"),
        })
    }
}

/// governor's keyed limiter in front of the bare service, keyed by the request.
#[derive(Clone)]
struct GovernorKeyed(Arc<governor::DefaultKeyedRateLimiter<u64>>);

impl Service<u64> for GovernorKeyed {
    type Response = u64;
    type Error = &'static str;
    type Future = Ready<Result<u64, &'static str>>;
    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), &'static str>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, x: u64) -> Self::Future {
        ready(match self.0.check_key(&x) {
            Ok(()) => Ok(x),
            Err(_) => Err("limited"),
        })
    }
}

fn huge() -> Quota {
    Quota::per_second(NonZeroU32::MAX)
}

fn ours_direct() -> RateLimitLayer {
    // governor's `huge()` quota: every call is under the limit.
    RateLimitLayer::builder()
        .rate(u32::MAX, Duration::from_secs(1))
        .burst(u32::MAX)
        .build()
        .unwrap()
}

type KeyedLayer = RateLimitLayer<seawall::rate_limit::KeyFn<fn(&u64) -> Option<u64>, u64>>;

fn ours_keyed() -> KeyedLayer {
    RateLimitLayer::builder()
        .rate(u32::MAX, Duration::from_secs(1))
        .burst(u32::MAX)
        .key(key_fn((|k: &u64| Some(*k)) as fn(&u64) -> Option<u64>))
        .build()
        .unwrap()
}

/// `iters` calls through `svc`, ready + call + await, keys cycling over `KEYS`.
async fn drive<S>(svc: &mut S, iters: u64, offset: u64)
where
    S: Service<u64>,
    S::Error: std::fmt::Debug,
{
    for i in 0..iters {
        let k = (i + offset) % KEYS;
        let r = svc.ready().await.unwrap().call(k).await.unwrap();
        black_box(r);
    }
}

fn time_on_one_thread<S>(svc: &mut S, iters: u64) -> Duration
where
    S: Service<u64>,
    S::Error: std::fmt::Debug,
{
    let rt = support::runtime();
    rt.block_on(tokio::task::unconstrained(async {
        let start = Instant::now();
        drive(svc, iters, 0).await;
        start.elapsed()
    }))
}

fn time_on_threads<S>(threads: usize, svc: S, iters: u64) -> Duration
where
    S: Service<u64> + Clone + Send + Sync + 'static,
    S::Error: std::fmt::Debug,
{
    // Each thread times its own loop too: `run_on_threads` starts its clock after releasing
    // the threads, so a short loop can end before it starts (criterion then sees zero time).
    let longest = Arc::new(AtomicU64::new(0));
    let l = Arc::clone(&longest);
    let wall = support::run_on_threads(threads, iters, move |i, iters| {
        let mut svc = svc.clone();
        let l = Arc::clone(&l);
        async move {
            let start = Instant::now();
            drive(&mut svc, iters, i as u64 * 500).await;
            l.fetch_max(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
    });
    wall.max(Duration::from_nanos(longest.load(Ordering::Relaxed)))
}

/// Builds each contender freshly for each measurement.
#[derive(Clone, Copy)]
enum Case {
    Bare,
    Ours,
    OursKeyed,
    TowerRateLimit,
    GovernorDirect,
    GovernorKeyed,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Bare => "bare",
            Case::Ours => "seawall direct",
            Case::OursKeyed => "seawall keyed",
            Case::TowerRateLimit => "tower RateLimit",
            Case::GovernorDirect => "governor check() in a service",
            Case::GovernorKeyed => "governor check_key() in a service",
        }
    }

    fn one_thread(self, iters: u64) -> Duration {
        // tower's `RateLimit::new` needs a runtime context (it creates a `Sleep`).
        let rt = support::runtime();
        let _guard = rt.enter();
        match self {
            Case::Bare => time_on_one_thread(&mut Bare, iters),
            Case::Ours => time_on_one_thread(&mut ours_direct().layer(Bare), iters),
            Case::OursKeyed => time_on_one_thread(&mut ours_keyed().layer(Bare), iters),
            Case::TowerRateLimit => time_on_one_thread(
                &mut tower::limit::RateLimitLayer::new(u64::MAX, Duration::from_secs(1))
                    .layer(Bare),
                iters,
            ),
            Case::GovernorDirect => time_on_one_thread(
                &mut GovernorDirect(Arc::new(RateLimiter::direct(huge()))),
                iters,
            ),
            Case::GovernorKeyed => time_on_one_thread(
                &mut GovernorKeyed(Arc::new(RateLimiter::keyed(huge()))),
                iters,
            ),
        }
    }

    /// `None`: the contender cannot be shared by two threads (tower's `RateLimit` is not
    /// `Clone`).
    fn threads(self, threads: usize, iters: u64) -> Option<Duration> {
        Some(match self {
            Case::Bare => time_on_threads(threads, Bare, iters),
            Case::Ours => time_on_threads(threads, ours_direct().layer(Bare), iters),
            Case::OursKeyed => time_on_threads(threads, ours_keyed().layer(Bare), iters),
            Case::TowerRateLimit => return None,
            Case::GovernorDirect => time_on_threads(
                threads,
                GovernorDirect(Arc::new(RateLimiter::direct(huge()))),
                iters,
            ),
            Case::GovernorKeyed => time_on_threads(
                threads,
                GovernorKeyed(Arc::new(RateLimiter::keyed(huge()))),
                iters,
            ),
        })
    }

    // The calls run one after another on one thread: the `RefCell` borrow held across the
    // (immediately ready) awaits never meets another borrow.
    #[allow(clippy::await_holding_refcell_ref)]
    fn allocations(self) -> f64 {
        let rt = support::runtime();
        let _guard = rt.enter();
        fn per_call<S>(svc: S) -> f64
        where
            S: Service<u64>,
            S::Error: std::fmt::Debug,
        {
            let svc = RefCell::new(svc);
            let mut k = 0;
            support::allocations_per_call(100_000, || {
                k = (k + 1) % KEYS;
                let key = k;
                let svc = &svc;
                async move {
                    let mut svc = svc.borrow_mut();
                    black_box(svc.ready().await.unwrap().call(key).await.unwrap());
                }
            })
        }
        match self {
            Case::Bare => per_call(Bare),
            Case::Ours => per_call(ours_direct().layer(Bare)),
            Case::OursKeyed => per_call(ours_keyed().layer(Bare)),
            Case::TowerRateLimit => per_call(
                tower::limit::RateLimitLayer::new(u64::MAX, Duration::from_secs(1)).layer(Bare),
            ),
            Case::GovernorDirect => per_call(GovernorDirect(Arc::new(RateLimiter::direct(huge())))),
            Case::GovernorKeyed => per_call(GovernorKeyed(Arc::new(RateLimiter::keyed(huge())))),
        }
    }
}

const CASES: [Case; 6] = [
    Case::Bare,
    Case::Ours,
    Case::TowerRateLimit,
    Case::GovernorDirect,
    Case::OursKeyed,
    Case::GovernorKeyed,
];

fn happy_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("rate_limit/1_thread");
    for case in CASES {
        g.bench_function(case.name(), |b| {
            b.iter_custom(|iters| case.one_thread(iters))
        });
    }
    // The limiters' own checks, without a service around them.
    let gov = RateLimiter::direct(huge());
    g.bench_function("governor check() alone", |b| {
        b.iter(|| black_box(gov.check()))
    });
    let gov_keyed = RateLimiter::<u64, _, _>::keyed(huge());
    let mut k = 0u64;
    g.bench_function("governor check_key() alone", |b| {
        b.iter(|| {
            k = (k + 1) % KEYS;
            black_box(gov_keyed.check_key(&k))
        })
    });
    g.bench_function("tokio Instant::now()", |b| {
        b.iter(|| black_box(tokio::time::Instant::now()))
    });
    let q = quanta::Clock::new();
    g.bench_function("quanta raw()", |b| b.iter(|| black_box(q.raw())));
    g.finish();

    for threads in [1usize, 2] {
        let mut g = c.benchmark_group(format!("rate_limit/{threads}_threads_shared"));
        g.throughput(Throughput::Elements(threads as u64));
        for case in CASES {
            if case.threads(threads, 10).is_none() {
                continue;
            }
            g.bench_function(case.name(), |b| {
                b.iter_custom(|iters| case.threads(threads, iters).unwrap())
            });
        }
        g.finish();
    }
}

/// ns per call of one run of `f(iters)`.
fn ns(iters: u64, f: impl Fn(u64) -> Duration) -> f64 {
    f(iters).as_nanos() as f64 / iters as f64
}

/// The fastest round: on a shared machine, the round least disturbed by other processes (the
/// figure a quiet machine gives), as the other benches' summaries take it.
fn fastest(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::MAX, f64::min)
}

/// The summary table. The machine is shared and its load changes from second to second, so
/// the contenders are measured in many short rounds, one run each per round (every contender
/// sees the same spread of load), and each figure is the fastest round. A round (about a
/// millisecond) is shorter than a scheduler time slice, so that some rounds of every
/// contender run undisturbed: a round that loses one 4 ms slice to another process reads
/// 40 ns/call slower at 100,000 calls.
fn summary() {
    const ITERS: u64 = 20_000;
    const ROUNDS: usize = 60;
    let mut one: Vec<Vec<f64>> = vec![Vec::new(); CASES.len()];
    let mut two: Vec<Vec<f64>> = vec![Vec::new(); CASES.len()];
    let (mut gov_check, mut gov_check_key, mut tokio_now) = (Vec::new(), Vec::new(), Vec::new());
    let gov = RateLimiter::direct(huge());
    let gov_keyed = RateLimiter::<u64, _, _>::keyed(huge());
    for _ in 0..ROUNDS {
        for (i, case) in CASES.iter().enumerate() {
            one[i].push(ns(ITERS, |n| case.one_thread(n)));
            if case.threads(2, 10).is_some() {
                two[i].push(ns(ITERS, |n| case.threads(2, n).unwrap()));
            }
        }
        gov_check.push(ns(ITERS, |n| {
            let start = Instant::now();
            for _ in 0..n {
                let _ = black_box(gov.check());
            }
            start.elapsed()
        }));
        gov_check_key.push(ns(ITERS, |n| {
            let start = Instant::now();
            for i in 0..n {
                let _ = black_box(gov_keyed.check_key(&(i % KEYS)));
            }
            start.elapsed()
        }));
        tokio_now.push(ns(ITERS, |n| {
            let start = Instant::now();
            for _ in 0..n {
                black_box(tokio::time::Instant::now());
            }
            start.elapsed()
        }));
    }
    let bare = fastest(&one[0]);
    println!();
    println!(
        "rate_limit summary: fastest of {ROUNDS} interleaved rounds of {ITERS} calls \
         (shared, noisy machine: compare ratios within this run)"
    );
    println!();
    println!(
        "| path | ns/call | ratio to bare | allocations/call | 2-thread throughput / 1-thread |"
    );
    println!("|---|---|---|---|---|");
    for (i, case) in CASES.iter().enumerate() {
        let one = fastest(&one[i]);
        // Two threads: wall time per call per thread; throughput ratio = 2 * one / two.
        let scaling = if two[i].is_empty() {
            "not shareable (not `Clone`)".to_string()
        } else {
            format!("{:.2}x", 2.0 * one / fastest(&two[i]))
        };
        println!(
            "| {} | {:.1} | {:.2}x | {:.2} | {} |",
            case.name(),
            one,
            one / bare,
            case.allocations(),
            scaling
        );
    }
    println!(
        "| governor check() alone | {:.1} | | | |",
        fastest(&gov_check)
    );
    println!(
        "| governor check_key() alone | {:.1} | | | |",
        fastest(&gov_check_key)
    );
    println!(
        "| tokio::time::Instant::now() alone | {:.1} | | | |",
        fastest(&tokio_now)
    );
    println!();
}

criterion_group! {
    name = benches;
    config = support::criterion();
    targets = happy_path
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    summary();
}
