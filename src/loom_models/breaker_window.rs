//! The breaker's windows (`circuit_breaker::window`): a tally never counts more failures than
//! calls nor a failure that is not in its window, and no call of a current bucket is lost.

use crate::circuit_breaker::window::{CountWindow, TimeWindow};
use loom::sync::Arc;
use loom::thread;

#[test]
fn a_count_window_counts_exactly_the_failures_of_its_positions() {
    loom::model(|| {
        // Two failures and a success race for three positions of a two-call window.
        let window = Arc::new(CountWindow::new(2));
        let threads: Vec<_> = [true, true, false]
            .into_iter()
            .map(|failed| {
                let window = Arc::clone(&window);
                thread::spawn(move || {
                    let (position, tally) = window.record_at(failed, false);
                    if let Some(t) = tally {
                        assert!(t.failures <= t.calls && t.calls <= 2, "{t:?}");
                    }
                    (position, failed)
                })
            })
            .collect();
        let recorded: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        // The window is positions 2 and 3: exactly the failures recorded there.
        let expected = recorded
            .iter()
            .filter(|&&(position, failed)| failed && position > 1)
            .count() as u64;
        let t = window.tally();
        assert_eq!((t.calls, t.failures, t.slow), (2, expected, 0));
    });
}

#[test]
fn a_cleared_count_window_forgets_what_came_before() {
    loom::model(|| {
        let window = Arc::new(CountWindow::new(4));
        window.record(true, true);
        let clearer = {
            let window = Arc::clone(&window);
            thread::spawn(move || window.clear())
        };
        let (_, tally) = window.record_at(true, false);
        let t = tally.unwrap();
        // Cleared after the call: nothing; between the calls: this call alone; before: both.
        assert!(t.failures <= t.calls && t.slow <= t.calls, "{t:?}");
        assert!(
            matches!(
                (t.calls, t.failures, t.slow),
                (0, 0, 0) | (1, 1, 0) | (2, 2, 1)
            ),
            "{t:?}"
        );
        clearer.join().unwrap();
    });
}

#[test]
fn a_time_window_loses_no_call_of_a_current_bucket() {
    // A thread that finds a slot being rolled over yields until it is done: more branches
    // than loom's default allows.
    let mut model = loom::model::Builder::new();
    model.max_branches = 10_000;
    model.check(|| {
        // Buckets of 10 µs, two of them, one stripe shared by every thread. The slot of
        // bucket 2 holds bucket 0; two failures at 20 and 21 µs race to roll it over.
        let window = Arc::new(TimeWindow::new(10, 2, 1));
        window.record(0, 7, 0, false, false);
        let threads: Vec<_> = [20, 21]
            .into_iter()
            .map(|now| {
                let window = Arc::clone(&window);
                thread::spawn(move || {
                    let t = window.record(0, 7, now, true, false).unwrap();
                    assert!(t.failures <= t.calls && t.failures >= 1, "{t:?}");
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let t = window.tally(7, 21);
        assert_eq!((t.calls, t.failures), (2, 2), "{t:?}");
        // Another closed period (epoch) sees none of it.
        assert_eq!(window.tally(8, 21).calls, 0);
    });
}

#[test]
fn a_late_call_never_makes_a_tally_count_more_failures_than_calls() {
    loom::model(|| {
        // A call of bucket 0 that is late races a rollover of its slot to bucket 2: it counts
        // in bucket 2 or not at all, and the failure of bucket 2 is never lost.
        let window = Arc::new(TimeWindow::new(10, 2, 1));
        window.record(0, 7, 0, false, false);
        let late = {
            let window = Arc::clone(&window);
            thread::spawn(move || {
                window.record(0, 7, 1, false, false);
            })
        };
        window.record(0, 7, 20, true, false);
        late.join().unwrap();
        let t = window.tally(7, 21);
        assert_eq!(t.failures, 1, "{t:?}");
        assert!(t.calls == 1 || t.calls == 2, "{t:?}");
    });
}
