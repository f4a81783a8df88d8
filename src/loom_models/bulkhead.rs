//! The bulkhead (`src/bulkhead/state.rs`): never more calls admitted at once than the capacity
//! in force, no permit lost, and in wait mode no waiter left queued while a permit sits free.
//!
//! The models drive the real `Shared` with two slots (one in the owner/sharer model), each
//! model thread acting as the thread number it is given (a number below the slot count owns
//! that slot), and check the count of calls inside the protected section with an atomic of
//! their own. A lost wake-up or a permit stranded while someone waits shows as a loom deadlock.
//! Times with `LOOM_MAX_PREEMPTIONS=2` on the 2-core VM: the two resize models about 25 s
//! each, the others about a second or less.

use std::task::{Wake, Waker};
use std::time::Duration;

use crate::bulkhead::state::{Acquired, Config, Permit, Shared};
use crate::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Condvar, Mutex};
use loom::thread;

const SLOTS: usize = 2;

fn config(max_wait: Option<Duration>) -> Config {
    Config {
        max_wait,
        max_waiting: None,
        retry_after: None,
        events: None,
        call_events: false,
    }
}

fn reject_mode(capacity: usize) -> Arc<Shared> {
    Arc::new(Shared::new_counted(capacity, config(None), SLOTS))
}

fn wait_mode(capacity: usize) -> Arc<Shared> {
    let max_wait = Some(Duration::from_secs(1)); // no clock in a model: waiters wait for good
    Arc::new(Shared::new_counted(capacity, config(max_wait), SLOTS))
}

/// A permit from this thread's slot or from anywhere else, or none (a wait-mode caller that
/// was queued leaves the queue at once).
fn try_acquire(shared: &Shared, number: usize) -> Option<Permit> {
    shared
        .try_acquire_as(number)
        .or_else(|| match shared.acquire_slow_as(number) {
            Acquired::Permit(permit) => Some(permit),
            Acquired::Full(_) => None,
            Acquired::Queued { node, .. } => {
                shared.abandon(&node);
                None
            }
        })
}

/// Wait mode: a permit, waiting in the queue for one if none is free.
fn acquire_waiting(shared: &Shared, number: usize) -> Permit {
    if let Some(permit) = shared.try_acquire_as(number) {
        return permit;
    }
    match shared.acquire_slow_as(number) {
        Acquired::Permit(permit) => permit,
        Acquired::Full(_) => unreachable!("the queue is unbounded"),
        Acquired::Queued { node, .. } => {
            // What the response future does while it waits, less the clock: look, register
            // the waker, and sleep until woken.
            let signal = std::sync::Arc::new(Signal::default());
            let waker = Waker::from(std::sync::Arc::clone(&signal));
            while !node.poll_granted(&waker) {
                signal.sleep();
            }
            shared.granted_permit_as(number)
        }
    }
}

/// A waker that wakes a model thread asleep on it (a lost wake-up leaves it asleep for good,
/// which loom reports as a deadlock).
#[derive(Default)]
struct Signal {
    woken: Mutex<bool>,
    cond: Condvar,
}

impl Signal {
    fn sleep(&self) {
        let mut woken = self.woken.lock().unwrap();
        while !*woken {
            woken = self.cond.wait(woken).unwrap();
        }
        *woken = false;
    }
}

impl Wake for Signal {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        *self.woken.lock().unwrap() = true;
        self.cond.notify_one();
    }
}

/// The calls inside the protected section, checked against a bound on entry.
struct Inside(AtomicUsize);

impl Inside {
    fn new() -> Arc<Self> {
        Arc::new(Self(AtomicUsize::new(0)))
    }

    fn enter(&self, bound: usize) {
        let now = self.0.fetch_add(1, Ordering::SeqCst) + 1;
        assert!(now <= bound, "{now} calls admitted at once, bound {bound}");
    }

    fn leave(&self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// No permit lost and the bound settled on `capacity`: with `held` permits still held, the
/// owners of both slots can take exactly `capacity - held` more between them; once every
/// permit is back, nothing is in flight or waiting.
fn assert_settled(shared: &Shared, capacity: usize, held: Vec<Permit>) {
    assert_eq!(shared.capacity(), capacity);
    assert_eq!(
        shared.in_flight(),
        held.len(),
        "a permit was lost or made up"
    );
    let mut more = Vec::new();
    while let Some(permit) = try_acquire(shared, 0).or_else(|| try_acquire(shared, 1)) {
        more.push(permit);
        assert!(
            held.len() + more.len() <= capacity,
            "more than {capacity} in flight once settled"
        );
    }
    assert_eq!(held.len() + more.len(), capacity, "a permit was lost");
    for permit in held.into_iter().chain(more) {
        permit.release_as(0);
    }
    assert_eq!(shared.in_flight(), 0, "a permit was lost");
    assert_eq!(shared.waiting(), 0);
}

/// Reject mode, capacity 1 over two slots (all of it slot 0's share). Thread 0 owns slot 0
/// and gives its permits back with plain stores; thread 1's own slot has no share, so it
/// borrows from slot 0 and gives the permit back there with an RMW, racing the owner's stores.
#[test]
fn reject_mode_never_admits_more_than_the_capacity_and_loses_no_permit() {
    const CAPACITY: usize = 1;
    loom::model(|| {
        let shared = reject_mode(CAPACITY);
        let inside = Inside::new();
        let threads: Vec<_> = [(0, 2), (1, 1)]
            .into_iter()
            .map(|(number, calls)| {
                let (shared, inside) = (Arc::clone(&shared), Arc::clone(&inside));
                thread::spawn(move || {
                    for _ in 0..calls {
                        if let Some(permit) = try_acquire(&shared, number) {
                            inside.enter(CAPACITY);
                            inside.leave();
                            permit.release_as(number);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_settled(&shared, CAPACITY, Vec::new());
    });
}

/// Reject mode, capacity 2 on a single slot: its owner (thread 0) and two sharers take a
/// permit each and give it back, the owner with a plain store, the sharers with RMWs, all on
/// one slot's counters at once. Never more than 2 admitted, no return lost.
#[test]
fn an_owners_plain_returns_and_sharers_rmws_on_one_slot_lose_nothing() {
    const CAPACITY: usize = 2;
    loom::model(|| {
        let shared = Arc::new(Shared::new_counted(CAPACITY, config(None), 1));
        let inside = Inside::new();
        let threads: Vec<_> = (0..3)
            .map(|number| {
                let (shared, inside) = (Arc::clone(&shared), Arc::clone(&inside));
                thread::spawn(move || {
                    if let Some(permit) = try_acquire(&shared, number) {
                        inside.enter(CAPACITY);
                        inside.leave();
                        permit.release_as(number);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(shared.in_flight(), 0, "a return was lost");
        let all: Vec<Permit> = (0..CAPACITY)
            .map(|_| try_acquire(&shared, 0).expect("a full capacity is free again"))
            .collect();
        assert!(try_acquire(&shared, 0).is_none());
        all.into_iter().for_each(|permit| permit.release_as(0));
    });
}

/// Wait mode, capacity 1: two threads each take the permit, waiting for it if the other holds
/// it, and give it back. The release that puts the permit in its slot races the other's
/// queueing (the handshake in the module docs): the waiter must be granted the permit, or the
/// model deadlocks.
#[test]
fn wait_mode_never_leaves_a_waiter_queued_while_a_permit_is_free() {
    const CAPACITY: usize = 1;
    loom::model(|| {
        let shared = wait_mode(CAPACITY);
        let inside = Inside::new();
        let threads: Vec<_> = (0..2)
            .map(|number| {
                let (shared, inside) = (Arc::clone(&shared), Arc::clone(&inside));
                thread::spawn(move || {
                    let permit = acquire_waiting(&shared, number);
                    inside.enter(CAPACITY);
                    inside.leave();
                    permit.release_as(number);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_settled(&shared, CAPACITY, Vec::new());
    });
}

/// Reject mode, a shrink from 2 to 1 while both slots' owners take a permit; thread 1 keeps
/// its permit past the shrink. Never more than 2 at once, and once settled exactly one permit
/// in all (thread 1's included): neither a caller paused between reading its slot's share and
/// taking from it, nor a permit the redeal overlooked, may add a second.
#[test]
fn a_shrink_settles_on_the_new_capacity() {
    loom::model(|| {
        let shared = reject_mode(2);
        let inside = Inside::new();
        let resizer = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || shared.set_capacity(1))
        };
        let caller = {
            let (shared, inside) = (Arc::clone(&shared), Arc::clone(&inside));
            thread::spawn(move || {
                if let Some(permit) = try_acquire(&shared, 0) {
                    inside.enter(2);
                    inside.leave();
                    permit.release_as(0);
                }
            })
        };
        let keeper = {
            let (shared, inside) = (Arc::clone(&shared), Arc::clone(&inside));
            thread::spawn(move || {
                let permit = try_acquire(&shared, 1);
                if permit.is_some() {
                    inside.enter(2);
                }
                permit
            })
        };
        resizer.join().unwrap();
        caller.join().unwrap();
        let kept = keeper.join().unwrap();
        assert_settled(&shared, 1, kept.into_iter().collect());
    });
}

/// Wait mode, a resize from 1 up to 2 and down to 1 while two threads take and give back a
/// permit, waiting if need be: no waiter is stranded (or the model deadlocks), and the
/// permits settle on the final capacity (a shrink's debt paid back by the releases).
#[test]
fn wait_mode_resizes_strand_no_waiter_and_lose_no_permit() {
    loom::model(|| {
        let shared = wait_mode(1);
        let inside = Inside::new();
        let resizer = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                shared.set_capacity(2);
                shared.set_capacity(1);
            })
        };
        let callers: Vec<_> = (0..2)
            .map(|number| {
                let (shared, inside) = (Arc::clone(&shared), Arc::clone(&inside));
                thread::spawn(move || {
                    let permit = acquire_waiting(&shared, number);
                    inside.enter(2);
                    inside.leave();
                    permit.release_as(number);
                })
            })
            .collect();
        resizer.join().unwrap();
        for t in callers {
            t.join().unwrap();
        }
        assert_settled(&shared, 1, Vec::new());
    });
}
