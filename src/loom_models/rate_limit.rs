//! The rate limiter's GCRA (`rate_limit::gcra::acquire` on the default bucket of
//! `rate_limit::state::Shared`), with its exact allowed / limited counts: concurrent decisions
//! lose no update of the bucket and admit no more than the GCRA allows.
//!
//! The clock is not part of the model: each thread passes its own readings to
//! `Shared::acquire_with`, fixed or advancing by explicit steps, and its own thread number
//! (two stripes of counts for three threads, so that one thread shares a stripe).

use crate::rate_limit::clock::Clock;
use crate::rate_limit::gcra::Params;
use crate::rate_limit::state::{validate, Decision, Settings, Shared};
use crate::rate_limit::Global;
use loom::sync::Arc;
use loom::thread;
use std::cell::Cell;
use std::time::Duration;

/// A limit of `n` calls per `per_ns` nanoseconds with `burst`, rejecting at once, and two
/// stripes of counts.
fn shared(n: u32, per_ns: u64, burst: u32) -> Shared<Global> {
    let per = Duration::from_nanos(per_ns);
    let settings = Settings {
        n,
        per,
        burst,
        t: validate(n, per, burst).unwrap(),
        max_wait: None,
        max_keys: 1,
    };
    // Never read: every decision of the model gets its time from the model.
    let clock = Clock::with_source(quanta::Clock::mock().0, Some(true));
    Shared::new(settings, Global, None, clock, 2)
}

/// What one thread's calls got: the (clock reading, bucket after) of each admitted call, and
/// how many were rejected.
#[derive(Debug, Default)]
struct Calls {
    admitted: Vec<(u64, u64)>,
    rejected: u64,
}

/// `calls` decisions by thread `thread`, whose clock reads `start`, then `start + step`, ...
/// one reading per look (a rejection looks twice). Checks that the bucket only moves forward
/// as this thread sees it, unless the rate may change (a faster rate rescales it back).
fn run(
    shared: &Shared<Global>,
    thread: usize,
    calls: usize,
    (start, step): (u64, u64),
    rate_changes: bool,
) -> Calls {
    let reads = Cell::new(0);
    let clock = || {
        let now = start + step * reads.get();
        reads.set(reads.get() + 1);
        now
    };
    let mut out = Calls::default();
    let mut seen = 0;
    for _ in 0..calls {
        match shared.acquire_with(None, thread, clock) {
            Decision::Now(quota) => out.admitted.push((quota.now, quota.tat)),
            Decision::Denied(_) => out.rejected += 1,
            Decision::At(..) => unreachable!("no waiting in these models"),
        }
        let tat = shared.tat(None);
        assert!(
            rate_changes || tat >= seen,
            "the bucket went back from {seen} to {tat}"
        );
        seen = tat;
    }
    out
}

/// Runs `threads` (start, step) clocks of `calls` decisions each, concurrently; checks the
/// exact counts and returns every thread's calls.
fn race(
    shared: &Arc<Shared<Global>>,
    clocks: &[(u64, u64)],
    calls: usize,
    rate_changes: bool,
) -> Vec<Calls> {
    let handles: Vec<_> = clocks
        .iter()
        .enumerate()
        .map(|(thread, &clock)| {
            let shared = Arc::clone(shared);
            thread::spawn(move || run(&shared, thread, calls, clock, rate_changes))
        })
        .collect();
    let results: Vec<Calls> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let admitted: u64 = results.iter().map(|c| c.admitted.len() as u64).sum();
    let rejected: u64 = results.iter().map(|c| c.rejected).sum();
    assert_eq!(shared.allowed(), admitted, "allowed count");
    assert_eq!(shared.limited(), rejected, "limited count");
    assert_eq!(admitted + rejected, (clocks.len() * calls) as u64);
    results
}

#[test]
fn at_one_instant_concurrent_checks_admit_exactly_the_burst() {
    const NOW: u64 = 1_000;
    loom::model(|| {
        // 3 threads x 2 calls against a burst of 4, one call per 100 ns.
        let shared = Arc::new(shared(1, 100, 4));
        let t = shared.params().t;
        let results = race(&shared, &[(NOW, 0), (NOW, 0), (NOW, 0)], 2, false);

        // Each admission moved the bucket on by exactly one interval from where the previous
        // one left it: the buckets the admitted calls saw are NOW + T, ..., NOW + 4T.
        let mut tats: Vec<u64> = results
            .iter()
            .flat_map(|c| c.admitted.iter().map(|&(_, tat)| tat))
            .collect();
        tats.sort_unstable();
        let expected: Vec<u64> = (1..=4).map(|k| NOW + k * t).collect();
        assert_eq!(tats, expected, "min(threads * calls, burst) admitted");
        assert_eq!(shared.tat(None), NOW + 4 * t);
    });
}

#[test]
fn with_time_moving_no_window_admits_more_than_rate_times_window_plus_burst() {
    loom::model(|| {
        // One call per 10 ns, burst 2; three threads whose clocks move 5, 7 and 4 ns per look.
        let shared = Arc::new(shared(1, 10, 2));
        let p = shared.params();
        let results = race(&shared, &[(0, 5), (3, 7), (1, 4)], 2, false);
        let mut times: Vec<u64> = results
            .iter()
            .flat_map(|c| c.admitted.iter().map(|&(now, _)| now))
            .collect();
        times.sort_unstable();
        assert_window_bound(&times, p);
    });
}

/// Every window `[times[i], times[j]]` of the sorted admission times holds at most
/// `floor(w / T) + burst` admissions.
fn assert_window_bound(times: &[u64], p: Params) {
    for i in 0..times.len() {
        for j in i..times.len() {
            let w = times[j] - times[i];
            let count = (j - i + 1) as u64;
            assert!(
                count <= w / p.t + p.burst,
                "{count} admitted within {w} ns: {times:?}"
            );
        }
    }
}

#[test]
fn a_rate_change_racing_checks_is_off_by_at_most_one_call() {
    const NOW: u64 = 1_000;
    loom::model(|| {
        // One call per 100 ns, burst 2; the rate doubles while two threads check twice
        // each, all at one instant.
        let shared = Arc::new(shared(1, 100, 2));
        let change = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                shared
                    .set_rate_at(2, Duration::from_nanos(100), NOW)
                    .unwrap()
            })
        };
        let results = race(&shared, &[(NOW, 0), (NOW, 0)], 2, true);
        change.join().unwrap();
        let admitted: usize = results.iter().map(|c| c.admitted.len()).sum();
        // Before or after the change, a burst of 2 (a bucket keeps what it spent as calls).
        // A decision that races the change may judge the bucket with the other interval
        // than the one it is in (see `ParamsCell`): one call more or less, never more.
        assert!(admitted.abs_diff(2) <= 1, "{results:?}");
    });
}
