//! Shared bench support: an allocation-counting global allocator, a quiet criterion config,
//! and a driver that runs the same call loop on several threads at once.
//!
//! Include it from a bench with `mod support;` and register the allocator there:
//! `#[global_allocator] static ALLOC: support::CountingAlloc = support::CountingAlloc;`
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// Whether allocations are counted now: only inside [`counting`], so that the timed runs pay
/// no shared atomic increment per allocation. (Counted always, one increment on a line every
/// thread writes would add about 10 ns to each allocation, and far more with two threads:
/// subjects that allocate, the peers most, would look slower than they are.)
static COUNTING: AtomicBool = AtomicBool::new(false);

/// The system allocator, counting allocations (not frees) while [`counting`] runs.
pub struct CountingAlloc;

impl CountingAlloc {
    #[inline]
    fn count() {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// `GlobalAlloc` contract holds exactly as it does for `System`; the counting is a relaxed atomic
// load and increment, which neither allocates nor touches the memory handed out.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::count();
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::count();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::count();
        System.realloc(ptr, layout, new_size)
    }
}

/// Allocations counted so far by the whole process (only those made inside [`counting`]).
pub fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

/// Runs `f` with allocations counted, and returns its output with the number of allocations
/// the process made meanwhile.
pub fn counting<R>(f: impl FnOnce() -> R) -> (R, u64) {
    let before = allocations();
    COUNTING.store(true, Ordering::Relaxed);
    let out = f();
    COUNTING.store(false, Ordering::Relaxed);
    (out, allocations() - before)
}

/// Runs `calls` iterations of `one_call` on a current-thread runtime (inside
/// `tokio::task::unconstrained`) and returns the allocations per call, as a fraction.
pub fn allocations_per_call<F, Fut>(calls: u64, mut one_call: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let rt = runtime();
    rt.block_on(tokio::task::unconstrained(async {
        // Warm up: lazily built state (a key's entry, a thread-local) is not a per-call cost.
        for _ in 0..1_000 {
            one_call().await;
        }
        COUNTING.store(true, Ordering::Relaxed);
        let before = allocations();
        for _ in 0..calls {
            one_call().await;
        }
        let counted = allocations() - before;
        COUNTING.store(false, Ordering::Relaxed);
        counted as f64 / calls as f64
    }))
}

/// A current-thread runtime with time enabled, as a bench thread uses.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Criterion settings that keep a full `cargo bench` run short on a 2-core machine.
pub fn criterion() -> criterion::Criterion {
    criterion::Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(50)
        .noise_threshold(0.05)
}

/// How many calls a `SEAWALL_PROFILE` run makes: `SEAWALL_PROFILE_CALLS`, or 1,000,000.
pub fn profile_calls() -> u64 {
    std::env::var("SEAWALL_PROFILE_CALLS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000)
}

/// A bench's `main`. With `SEAWALL_PROFILE=NAME` set it runs only the subject of that name
/// through `profile` (to be counted under callgrind or cachegrind); otherwise it runs the
/// criterion `groups` and prints criterion's closing summary.
pub fn main(profile: fn(&str), groups: fn()) {
    if let Ok(wanted) = std::env::var("SEAWALL_PROFILE") {
        profile(&wanted);
        return;
    }
    groups();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}

/// Runs `iters` calls on each of `threads` threads at once, each thread on its own
/// current-thread runtime inside `tokio::task::unconstrained`, and returns the wall time from
/// the moment the first thread starts to the moment the last one ends.
///
/// Each thread reads its own start and end time, so a spawning thread that is descheduled on a
/// busy machine cannot shorten (or zero) the measured span.
///
/// `make_loop(thread_index, iters)` builds the future one thread runs; it should make `iters`
/// calls. Use with `Bencher::iter_custom` and `Throughput::Elements(threads)`: criterion's
/// elements per second is then the combined throughput, and the ratio of the two-thread figure
/// to the one-thread figure is the scaling.
pub fn run_on_threads<F, Fut>(threads: usize, iters: u64, make_loop: F) -> Duration
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()>,
{
    let make_loop = Arc::new(make_loop);
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let make_loop = Arc::clone(&make_loop);
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let rt = runtime();
                let fut = make_loop(i, iters);
                barrier.wait();
                let start = Instant::now();
                rt.block_on(tokio::task::unconstrained(fut));
                (start, Instant::now())
            })
        })
        .collect();
    let spans: Vec<(Instant, Instant)> = handles
        .into_iter()
        .map(|h| h.join().expect("bench thread"))
        .collect();
    let start = spans
        .iter()
        .map(|s| s.0)
        .min()
        .expect("at least one thread");
    let end = spans
        .iter()
        .map(|s| s.1)
        .max()
        .expect("at least one thread");
    end - start
}
