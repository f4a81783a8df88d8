//! The breaker's state word and half-open (`circuit_breaker::state`): never more probes than
//! configured, no probe slot lost when a probe is dropped, half-open decided once by its
//! probes' rate, and one trip per closed period however many failures race.

use crate::circuit_breaker::state::{Admission, Core, HALF_OPEN};
use crate::circuit_breaker::{CircuitBreakerLayer, State, StateChange};
use crate::classify::Outcome;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;

fn opens_seen(events: &mut tokio::sync::broadcast::Receiver<StateChange>) -> usize {
    let mut n = 0;
    while let Ok(change) = events.try_recv() {
        n += usize::from(change.to == State::Open);
    }
    n
}

#[test]
fn a_dropped_probe_gives_its_slot_back_and_two_never_hold_one() {
    loom::model(|| {
        let cfg = CircuitBreakerLayer::builder()
            .consecutive_failures(1)
            .half_open_probes(1)
            .validate()
            .unwrap();
        let core = Arc::new(Core::new(cfg, 2));
        core.transition(None, HALF_OPEN);
        let holding = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (core, holding) = (Arc::clone(&core), Arc::clone(&holding));
                thread::spawn(move || match core.admit() {
                    Ok(Admission::Probe(epoch)) => {
                        assert_eq!(holding.fetch_add(1, Ordering::SeqCst), 0, "two probes");
                        holding.fetch_sub(1, Ordering::SeqCst);
                        // The probe's future is dropped before it ends.
                        core.release_probe(epoch);
                        true
                    }
                    Ok(other) => panic!("admitted as {other:?} while half-open"),
                    Err(_) => false,
                })
            })
            .collect();
        let admitted = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|&a| a)
            .count();
        assert!(admitted >= 1);
        // No slot lost: the next call is a probe again.
        assert!(matches!(core.admit(), Ok(Admission::Probe(_))));
    });
}

#[test]
fn half_open_is_decided_once_by_its_probes_rate() {
    loom::model(|| {
        // Two probes, a 50% threshold: one failed probe of two reopens, whichever ends first.
        let cfg = CircuitBreakerLayer::builder()
            .failure_rate(0.5)
            .count_window(10)
            .half_open_probes(2)
            .validate()
            .unwrap();
        let core = Arc::new(Core::new(cfg, 2));
        core.transition(None, HALF_OPEN);
        let mut events = core.subscribe();
        let threads: Vec<_> = [Outcome::Failure, Outcome::Success]
            .into_iter()
            .map(|outcome| {
                let core = Arc::clone(&core);
                thread::spawn(move || {
                    if let Ok(admission) = core.admit() {
                        assert!(matches!(admission, Admission::Probe(_)));
                        core.finish(admission, outcome, None);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(core.state(), State::Open);
        assert_eq!(opens_seen(&mut events), 1);
    });
}

#[test]
fn racing_failures_trip_a_closed_breaker_exactly_once() {
    loom::model(|| {
        let cfg = CircuitBreakerLayer::builder()
            .failure_rate(0.5)
            .count_window(2)
            .minimum_calls(2)
            .validate()
            .unwrap();
        let core = Arc::new(Core::new(cfg, 2));
        let mut events = core.subscribe();
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let core = Arc::clone(&core);
                thread::spawn(move || {
                    let admission = core.admit().unwrap();
                    core.finish(admission, Outcome::Failure, None);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(core.state(), State::Open);
        assert_eq!(opens_seen(&mut events), 1);
        let m = core.metrics();
        assert_eq!((m.calls, m.failures, m.window_calls), (2, 2, 2));
    });
}
