//! Rate limit on real threads (std threads, and tasks of a multi-thread runtime; 2 to 64 of
//! them): over every window `w` the GCRA admits at most `rate * w + burst` calls, per key for
//! a keyed limiter, and the handle's allowed and limited counts add up to the calls made,
//! exactly.
//!
//! The time is a clock the test controls: the limiter is built in a paused runtime (so it
//! reads tokio's clock on every call), every thread enters that runtime to call it, and the
//! main thread advances the clock in steps as the calls go on. Each admitted call records the
//! step before and after its call: the limiter's own reading lies between. Bounded by a count
//! of calls.

use futures::FutureExt;
use seawall::error::RateLimited;
use seawall::rate_limit::{key_fn, KeyExtractor, RateLimitHandle, RateLimitLayer};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::runtime::{Builder, Handle};
use tokio::time::Instant;
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};

/// One call every millisecond, bursts of 5.
const T: Duration = Duration::from_millis(1);
const BURST: u32 = 5;
/// The clock moves in steps of half an interval, up to 100 intervals.
const STEP: Duration = Duration::from_micros(500);
const STEPS: usize = 200;
/// Calls made in each run, shared among the threads.
const CALLS: usize = 20_000;
/// Keys of the keyed runs.
const KEYS: u32 = 4;

#[derive(Debug, Clone, Copy)]
struct Call {
    client: Option<u32>,
}

/// One admitted call: its key, and the clock steps just before and just after its decision.
type Admission = (Option<u32>, usize, usize);

/// How the calls are made.
#[derive(Debug, Clone, Copy)]
enum Threads {
    Std(usize),
    Runtime(usize),
}

impl Threads {
    fn count(self) -> usize {
        match self {
            Threads::Std(n) | Threads::Runtime(n) => n,
        }
    }
}

/// Makes `CALLS` calls through the layer `build` makes, from `threads`, the key of call `i`
/// being `key(i)`, while the main thread advances the clock (`steps` steps of [`STEP`]; 0:
/// time stands still). Checks the exact counts; returns the admissions.
fn run<K>(
    threads: Threads,
    steps: usize,
    build: impl FnOnce() -> RateLimitLayer<K>,
    key: fn(usize) -> Option<u32>,
) -> Vec<Admission>
where
    K: KeyExtractor + seawall::rate_limit::Extract<Call> + Send + Sync + 'static,
    RateLimitLayer<K>: Clone,
{
    let paused = Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let clock = paused.handle().clone();
    paused.block_on(async move {
        let layer = build();
        let handle: RateLimitHandle<K> = layer.handle();
        let start = Instant::now();
        let n = threads.count();
        let pacer = Arc::new(Pacer::new(CALLS, steps));
        let admitted = Arc::new(Mutex::new(Vec::new()));
        let step_of = move |t: Instant| ((t - start).as_nanos() / STEP.as_nanos()) as usize;

        let svc = layer.layer(service_fn(|c: Call| async move { Ok::<_, BoxError>(c) }));
        let worker = {
            let (pacer, admitted, clock) =
                (Arc::clone(&pacer), Arc::clone(&admitted), clock.clone());
            move |svc| {
                let mine = calls(svc, &clock, &pacer, key, step_of);
                admitted.lock().unwrap().extend(mine);
            }
        };

        let runtime = match threads {
            Threads::Std(_) => None,
            Threads::Runtime(n) => Some(
                Builder::new_multi_thread()
                    .worker_threads(n)
                    .build()
                    .unwrap(),
            ),
        };
        let mut joins: Vec<Box<dyn FnOnce() + Send>> = Vec::new();
        for _ in 0..n {
            let (worker, svc) = (worker.clone(), svc.clone());
            match &runtime {
                None => {
                    let h = std::thread::spawn(move || worker(svc));
                    joins.push(Box::new(move || h.join().unwrap()));
                }
                Some(rt) => {
                    let h = rt.spawn(async move { worker(svc) });
                    // Not the runtime's own `block_on`: this thread is in the paused runtime.
                    joins.push(Box::new(move || futures::executor::block_on(h).unwrap()));
                }
            }
        }

        pacer.drive().await;
        for join in joins {
            join();
        }
        if let Some(rt) = runtime {
            rt.shutdown_background();
        }

        let admitted = std::mem::take(&mut *admitted.lock().unwrap());
        let rejected = CALLS - admitted.len();
        assert_eq!(
            handle.allowed(),
            admitted.len() as u64,
            "allowed, {threads:?}"
        );
        assert_eq!(handle.limited(), rejected as u64, "limited, {threads:?}");
        admitted
    })
}

/// Hands out the calls of a run as tickets, each for one step of the clock, and moves the
/// clock on once every ticket of a step is done: so the calls spread over every step, and no
/// thread runs ahead of the clock.
struct Pacer {
    total: usize,
    /// Tickets per step.
    quota: usize,
    steps: usize,
    claimed: AtomicUsize,
    done: AtomicUsize,
    /// Steps the clock has moved.
    step: AtomicUsize,
}

impl Pacer {
    fn new(total: usize, steps: usize) -> Self {
        Self {
            total,
            quota: total.div_ceil(steps + 1),
            steps,
            claimed: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            step: AtomicUsize::new(0),
        }
    }

    /// The next call's number, once the clock has reached its step; `None` when all are made.
    fn next(&self) -> Option<usize> {
        let ticket = self.claimed.fetch_add(1, Ordering::Relaxed);
        if ticket >= self.total {
            return None;
        }
        while self.step.load(Ordering::Acquire) < ticket / self.quota {
            std::thread::yield_now();
        }
        Some(ticket)
    }

    fn done(&self) {
        self.done.fetch_add(1, Ordering::Release);
    }

    /// Moves the clock through every step, each once the calls of the one before are done.
    async fn drive(&self) {
        for k in 1..=self.steps {
            while self.done.load(Ordering::Acquire) < (k * self.quota).min(self.total) {
                std::thread::yield_now();
            }
            tokio::time::advance(STEP).await;
            self.step.store(k, Ordering::Release);
        }
    }
}

/// One thread's calls through `svc` in the paused time of `clock`, until `pacer` has none
/// left; the key of call `i` is `key(i)`. Returns the admitted ones.
fn calls<S>(
    mut svc: S,
    clock: &Handle,
    pacer: &Pacer,
    key: impl Fn(usize) -> Option<u32>,
    step_of: impl Fn(Instant) -> usize,
) -> Vec<Admission>
where
    S: Service<Call, Response = Call, Error = BoxError>,
{
    let mut admitted = Vec::new();
    while let Some(i) = pacer.next() {
        let call = Call { client: key(i) };
        let _in_paused_time = clock.enter();
        svc.ready().now_or_never().unwrap().unwrap();
        let before = Instant::now();
        let response = svc.call(call);
        let after = Instant::now();
        match response
            .now_or_never()
            .expect("reject mode answers at once")
        {
            Ok(_) => admitted.push((call.client, step_of(before), step_of(after))),
            Err(e) => assert!(e.is::<RateLimited>(), "{e}"),
        }
        pacer.done();
    }
    admitted
}

/// Every window of whole steps `[a, b]` holds at most `floor(w / T) + burst` of the calls
/// whose decision certainly lay inside it (both their step readings within `[a, b]`).
fn assert_every_window(admitted: &[(usize, usize)], steps: usize, what: &str) {
    let n = steps + 1;
    // inside[a][b]: calls with before >= a and after <= b.
    let mut inside = vec![0u64; n * n];
    for &(before, after) in admitted {
        inside[before * n + after] += 1;
    }
    for a in (0..n).rev() {
        for b in 0..n {
            let mut v = inside[a * n + b];
            if a + 1 < n {
                v += inside[(a + 1) * n + b];
            }
            if b > 0 {
                v += inside[a * n + b - 1];
            }
            if a + 1 < n && b > 0 {
                v -= inside[(a + 1) * n + b - 1];
            }
            inside[a * n + b] = v;
        }
    }
    for a in 0..n {
        for b in a..n {
            let w = STEP * (b - a) as u32;
            let bound = (w.as_nanos() / T.as_nanos()) as u64 + u64::from(BURST);
            let count = inside[a * n + b];
            assert!(
                count <= bound,
                "{what}: {count} admitted within steps {a}..={b} ({w:?}), bound {bound}"
            );
        }
    }
}

fn direct() -> RateLimitLayer {
    RateLimitLayer::builder()
        .rate(1, T)
        .burst(BURST)
        .build()
        .unwrap()
}

fn all_threads() -> impl Iterator<Item = Threads> {
    [2, 4, 16, 64]
        .into_iter()
        .flat_map(|n| [Threads::Std(n), Threads::Runtime(n)])
}

#[test]
fn at_one_instant_threads_are_admitted_exactly_the_burst() {
    for threads in all_threads() {
        let admitted = run(threads, 0, direct, |_| None);
        assert_eq!(admitted.len(), BURST as usize, "{threads:?}");
    }
}

#[test]
fn no_window_admits_more_than_rate_times_window_plus_burst() {
    for threads in all_threads() {
        let admitted = run(threads, STEPS, direct, |_| None);
        let admitted: Vec<_> = admitted.iter().map(|&(_, b, a)| (b, a)).collect();
        // The clock ran 100 intervals: the limit was reached, not merely respected.
        assert!(
            admitted.len() > 50,
            "{threads:?}: {} admitted",
            admitted.len()
        );
        assert_every_window(&admitted, STEPS, &format!("{threads:?}"));
    }
}

#[test]
fn the_keyed_limiter_holds_the_bound_for_every_key() {
    let keyed = || {
        RateLimitLayer::builder()
            .rate(1, T)
            .burst(BURST)
            .key(key_fn(|c: &Call| c.client))
            .build()
            .unwrap()
    };
    // Consecutive calls go to different keys, so every key is called by many threads at once.
    let key = |i: usize| Some((i % KEYS as usize) as u32);
    for threads in all_threads() {
        let all = run(threads, STEPS, keyed, key);
        for k in 0..KEYS {
            let admitted: Vec<_> = all
                .iter()
                .filter(|&&(key, ..)| key == Some(k))
                .map(|&(_, b, a)| (b, a))
                .collect();
            assert!(
                admitted.len() > 50,
                "{threads:?}, key {k}: {}",
                admitted.len()
            );
            assert_every_window(&admitted, STEPS, &format!("{threads:?}, key {k}"));
        }
    }
}
