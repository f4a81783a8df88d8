//! Per-thread striping, the one way every layer spreads hot counters over cache lines: one
//! thread number, one stripe count, one padding type, one exact counter.
//!
//! A counter that every call writes on one shared cache line collapses under two threads (tower's
//! `ConcurrencyLimit` and governor deliver about 0.3x of one thread's throughput when two threads
//! share them). So a layer keeps such state in [`Striped`] cells, one per stripe, and a thread
//! works on the cell its number picks.
//!
//! # Thread numbers
//!
//! A thread gets its number on its first use of any striped state: the lowest number no live
//! thread holds, from a process-wide free list under a mutex. A thread-local guard gives it
//! back when the thread exits, after marking the thread [`EXITED`]. So a pool whose threads come
//! and go keeps reusing small numbers, and a number is held by at most one live thread.
//!
//! **Invariant (ownership).** A thread whose number `n` is below a [`Striped`]'s length is the
//! only thread that writes as *owner* into cell `n` of it: a number is handed to a new thread
//! only after the old holder gave it back, and the registry's mutex orders the old holder's
//! stores before the new holder's loads. Every other thread (a number at or above the length,
//! or a thread tearing down its thread-locals) writes into cell `n % len` as a *sharer*, with
//! read-modify-writes only. [`Counter`] relies on exactly this to stay exact with a plain
//! load and store on the owner's side (the loom model `stripe` checks it).

// Each layer uses a part of this module; a build with some of them leaves the rest unused.
#![cfg_attr(
    not(all(
        feature = "circuit-breaker",
        feature = "bulkhead",
        feature = "rate-limit"
    )),
    allow(dead_code)
)]

use crate::sync::atomic::{AtomicU64, Ordering};
use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::ops::Deref;

/// A value on its own pair of cache lines (adjacent-line prefetch pulls pairs on x86).
#[repr(align(128))]
#[derive(Debug, Default)]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> Deref for CachePadded<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}

/// How many stripes a layer gets: twice the cores, a power of two, 4..=64. Twice the cores so
/// that the threads of a pool a little larger than the machine still own a stripe each.
pub(crate) fn stripe_count() -> usize {
    let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
    (cores * 2).next_power_of_two().clamp(4, 64)
}

/// The number of a thread that has not asked for one yet.
const UNASSIGNED: usize = usize::MAX;
/// The number of a thread whose thread-locals are being torn down: it owns no stripe any more.
pub(crate) const EXITED: usize = usize::MAX - 1;

/// The thread numbers in use: the next never handed out, and those given back by exited
/// threads (lowest first, so that numbers stay below the stripe count when they can).
struct Registry {
    next: usize,
    free: BinaryHeap<Reverse<usize>>,
}

impl Registry {
    fn take(&mut self) -> usize {
        match self.free.pop() {
            Some(Reverse(number)) => number,
            None => {
                let number = self.next;
                self.next += 1;
                number
            }
        }
    }

    fn give_back(&mut self, number: usize) {
        self.free.push(Reverse(number));
    }
}

// A `std` mutex even under loom: statics need a `const` constructor. The models hand numbers
// over with a loom mutex of their own.
static REGISTRY: std::sync::Mutex<Registry> = std::sync::Mutex::new(Registry {
    next: 0,
    free: BinaryHeap::new(),
});

fn registry() -> std::sync::MutexGuard<'static, Registry> {
    REGISTRY
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Gives the thread's number back when the thread exits.
struct NumberGuard;

impl Drop for NumberGuard {
    fn drop(&mut self) {
        // Mark the thread first: what it writes after this (a permit dropped by another
        // thread-local's destructor) takes the sharer's path.
        let number = THREAD_NUMBER.with(|cell| cell.replace(EXITED));
        if number < EXITED {
            // The unlock orders this thread's owner stores before the loads of the next
            // thread to get the number (which takes this lock).
            registry().give_back(number);
        }
    }
}

thread_local! {
    /// No destructor, so reading it is a plain thread-local load, valid even while the
    /// thread's other thread-locals are torn down.
    static THREAD_NUMBER: Cell<usize> = const { Cell::new(UNASSIGNED) };
    static NUMBER_GUARD: NumberGuard = const { NumberGuard };
}

/// This thread's number (see the module docs), handed out on first use.
#[inline]
pub(crate) fn thread_number() -> usize {
    let number = THREAD_NUMBER.with(Cell::get);
    if number != UNASSIGNED {
        return number;
    }
    assign_thread_number()
}

#[cold]
#[inline(never)]
fn assign_thread_number() -> usize {
    // Register the guard before taking a number, so that the number always goes back. A
    // thread already tearing down its thread-locals gets none.
    if NUMBER_GUARD.try_with(|_| ()).is_err() {
        THREAD_NUMBER.with(|cell| cell.set(EXITED));
        return EXITED;
    }
    let number = registry().take();
    THREAD_NUMBER.with(|cell| cell.set(number));
    number
}

/// One cell per stripe, each on its own cache lines.
pub(crate) struct Striped<T> {
    cells: Box<[CachePadded<T>]>,
    mask: usize,
}

/// The cell a thread works on, and whether it owns it (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Local<'a, T> {
    pub(crate) cell: &'a T,
    pub(crate) owner: bool,
}

impl<T> Striped<T> {
    /// `len` cells (a power of two: [`stripe_count`] in the layers, small in the models),
    /// cell `i` made by `make(i)`.
    pub(crate) fn new(len: usize, make: impl FnMut(usize) -> T) -> Self {
        assert!(len.is_power_of_two(), "a stripe count is a power of two");
        Self {
            cells: (0..len).map(make).map(CachePadded).collect(),
            mask: len - 1,
        }
    }

    /// The calling thread's cell.
    #[inline]
    pub(crate) fn local(&self) -> Local<'_, T> {
        // Loom runs every model thread on one OS thread, so they would share one number and
        // all claim to own its cell: there, every thread is a sharer.
        #[cfg(seawall_loom)]
        return self.cell_of(EXITED);
        #[cfg(not(seawall_loom))]
        self.cell_of(thread_number())
    }

    /// The cell of the thread numbered `number`, as that thread sees it.
    #[inline]
    pub(crate) fn cell_of(&self, number: usize) -> Local<'_, T> {
        Local {
            cell: &self.cells[number & self.mask],
            owner: number <= self.mask,
        }
    }

    /// How many cells there are.
    pub(crate) fn len(&self) -> usize {
        self.cells.len()
    }

    /// Every cell, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.cells.iter().map(|c| &c.0)
    }
}

impl<T: fmt::Debug> fmt::Debug for Striped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// An exact counter in one stripe: the owner adds with a plain load and store (no locked
/// instruction), every other thread with `fetch_add` on a second word, so neither loses the
/// other's counts. Its value is the sum of both.
#[derive(Debug, Default)]
pub(crate) struct Counter {
    owned: AtomicU64,
    shared: AtomicU64,
}

impl Counter {
    /// Adds `n`. `owner` must be what [`Striped::local`] said for the calling thread.
    #[inline]
    pub(crate) fn add(&self, owner: bool, n: u64) {
        if owner {
            // Only the owner writes `owned` (the ownership invariant), so this loses nothing.
            let v = self.owned.load(Ordering::Relaxed);
            self.owned.store(v.wrapping_add(n), Ordering::Relaxed);
        } else {
            self.shared.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The count so far. Relaxed: a reader that must see a given add synchronises with its
    /// writer by other means (a join, a channel).
    pub(crate) fn get(&self) -> u64 {
        self.owned
            .load(Ordering::Relaxed)
            .wrapping_add(self.shared.load(Ordering::Relaxed))
    }
}

/// Sums a counter over every cell of `striped`.
pub(crate) fn sum<T>(striped: &Striped<T>, counter: impl Fn(&T) -> &Counter) -> u64 {
    striped
        .iter()
        .fold(0u64, |acc, cell| acc.wrapping_add(counter(cell).get()))
}

#[cfg(all(test, not(seawall_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn the_registry_hands_out_the_lowest_free_number() {
        let mut registry = Registry {
            next: 0,
            free: BinaryHeap::new(),
        };
        assert_eq!(
            (registry.take(), registry.take(), registry.take()),
            (0, 1, 2)
        );
        registry.give_back(2);
        registry.give_back(0);
        assert_eq!(registry.take(), 0);
        assert_eq!(registry.take(), 2);
        assert_eq!(registry.take(), 3);
    }

    #[test]
    fn numbers_of_exited_threads_are_reused() {
        // Many short-lived threads, one at a time: each finds a number given back by an
        // earlier one, so numbers stay small instead of growing with every thread.
        let mut highest = 0;
        for _ in 0..200 {
            let n = std::thread::spawn(thread_number).join().unwrap();
            highest = highest.max(n);
        }
        assert!(
            highest < 64,
            "200 threads one after another reached number {highest}"
        );
    }

    #[test]
    fn live_threads_hold_distinct_numbers() {
        let barrier = Arc::new(std::sync::Barrier::new(16));
        let handles: Vec<_> = (0..16)
            .map(|_| {
                let barrier = Arc::clone(&barrier);
                std::thread::spawn(move || {
                    let n = thread_number();
                    barrier.wait();
                    n
                })
            })
            .collect();
        let mut numbers: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), 16, "two live threads shared a number");
    }

    #[test]
    fn a_counter_shared_by_many_threads_is_exact() {
        // Four stripes, 32 threads: most threads are sharers of a stripe whose owner is
        // writing too. Bounded by a count of adds.
        let striped = Arc::new(Striped::new(4, |_| Counter::default()));
        let handles: Vec<_> = (0..32)
            .map(|_| {
                let striped = Arc::clone(&striped);
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        let local = striped.local();
                        local.cell.add(local.owner, 1);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(sum(&striped, |c| c), 32 * 20_000);
    }
}
