//! The bulkhead's shared state: per-thread slots of permits, the FIFO waiter queue and the
//! counters.
//!
//! Both modes split the permits over slots, one per stripe of [`crate::stripe`], each on its
//! own cache lines. The thread numbered `n` works on slot `n % slots` and owns it when `n` is
//! below the slot count, so two threads sharing one bulkhead write different cache lines on the
//! happy path and do not slow each other down the way a single shared counter does. Every
//! operation that depends on the thread takes its number as a parameter (`*_as`); the paths the
//! service calls pass [`thread_number`], the loom models (`src/loom_models/bulkhead.rs`) their
//! own.
//!
//! # What keeps a slot alive
//!
//! A permit lives in a `'static` response future and must reach its slot when it is dropped.
//! Cloning an `Arc` for that costs two atomic read-modify-writes (RMWs) per call, twice what the
//! accounting below needs. So the slots (and the wait-mode pool they point to) of the first 256
//! bulkheads of a process (`STATIC_BUILDS`) are leaked, 128 bytes per slot (4 to 64 slots, by
//! core count), and a permit is a `&'static Slot`, free to copy. A program that builds
//! bulkheads over and over gets an `Arc<Slot>` per permit past that number (two more RMWs per
//! call, on the permit's own slot), which bounds the memory kept. The configuration, the
//! figures and the event source are not leaked: they go with the last service, layer and
//! handle. Both representations run the same accounting (the loom models use the second).
//!
//! # Reject mode: one RMW per call
//!
//! Each slot has a `share` of the capacity (shares sum to the capacity) and three counters that
//! only ever grow (wrapping): `taken` (RMW by any thread), `returned_local` (written only by the
//! slot's owner, with a plain load and store: no lock prefix) and `returned_remote` (RMW by any
//! other thread). The slot's calls in flight are `taken - returned_local - returned_remote`.
//!
//! - **Acquire**: load both `returned` counters (`Acquire`), *then* `taken.fetch_add(1,
//!   Acquire)`, which returns `t`, *then* load `share`; admitted if `t - returned < share`,
//!   otherwise undone with `taken.fetch_sub(1)`.
//! - **Release** by the slot's owner: `returned_local += 1` as a plain `Release` store. By any
//!   other thread: `returned_remote.fetch_add(1, Release)`.
//!
//! So a call made and finished on the owner thread costs one RMW. The owner may not skip the RMW
//! on acquire: another thread that borrows from this slot (below) would then need a store-load
//! fence on the owner's side to see it, and such a fence costs what an RMW costs.
//!
//! The owner's plain load-then-store of `returned_local` loses nothing by the ownership
//! invariant of [`crate::stripe`]: only the owner writes it, and a number (so a slot) passes to
//! a new owner through the registry's mutex.
//!
//! *Why never more than `share` are admitted on a slot.* Take any set of permits held at once
//! and let `Z` be the one whose increment of `taken` comes last in `taken`'s modification
//! order. `Z`'s `t` counts the increments of all the others (they come before it, and an
//! admitted permit's increment is never undone; an undone failed increment only makes `t`
//! larger while it lasts). `Z`'s `returned` counts none of them: a return `Z` read was
//! published with `Release` and read with `Acquire` before `Z`'s increment, so that permit was
//! given back before `Z` was admitted, and it is not held at the same time as `Z`. And every
//! return `Z` read belongs to a permit whose increment happens before `Z`'s (the permit reached
//! the releasing thread through synchronisation, and the release synchronises with `Z`'s
//! load), so it is counted in `t` too: `t - returned` is at least the number of the others, and
//! `Z` was admitted only if that is below `share`. Loading `returned` before the RMW is what
//! makes this hold; loading it after could count the return of a permit taken after `Z`'s
//! increment and admit one too many.
//!
//! *Resizes.* Shares change only under the queue lock: raising the capacity adds to them;
//! shrinking zeroes them all ("draining") until in flight is below the new capacity, then
//! deals each slot its calls in flight plus a part of the room left. The redeal reads each
//! slot's `taken` with an RMW (`fetch_add(0, AcqRel)`), after the zeroing stores. Either that
//! RMW comes after a caller's increment in `taken`'s order, and the redeal counts the caller
//! in its slot's calls in flight; or it comes before, and the caller's `Acquire` increment
//! reads from it, so the caller's later load of `share` sees the zero or a share dealt after.
//! So a call admitted under a share from before a shrink is always counted by the redeal that
//! ends the drain: in flight never exceeds the largest capacity in force, and once the drain
//! ends, never the new capacity. Loading `share` before the increment would break this: a
//! caller paused between the two could be admitted later under a share two resizes old. (All
//! of this is `SeqCst`-free on purpose: loom models `SeqCst` accesses as `AcqRel`, and the
//! argument holds under that weaker reading too.)
//!
//! A failed attempt (its increment, before the undo) can make a racing caller on the same slot
//! refuse for an instant when the slot is at its share, or a redeal count one call too many
//! (which deals that unit of room to its slot); it never makes anyone admit. A caller whose
//! slot is at its share tries every other slot (first reading it, so that full slots cost no
//! RMW), twice; only when every slot is at its share is the bulkhead full. A permit records the
//! slot it came from and goes back there, from whichever thread drops it.
//!
//! # Wait mode: permits move through pools
//!
//! A release must hand its permit to the first waiter, which needs code to run after the
//! permit is given back, so wait mode counts permits explicitly. Each permit is, at any
//! instant, free in the central pool (`Pool::global`), free in one slot's cache
//! (`Slot::free`), or held by a call (a [`Permit`], or granted to a waiter). Every move is one
//! atomic operation, so `in flight = capacity - global - sum(slot.free)`.
//!
//! Waiting callers queue behind a mutex, touched only when the bulkhead is full or someone
//! waits. While anyone waits, new calls go to the back of the queue and released permits are
//! handed to the front waiter, so nobody barges past a fair waiter.
//!
//! *No waiter is left queued while a permit sits free.* A releaser that finds nobody waiting
//! puts its permit in its slot with an RMW (`AcqRel`), then loads `waiting`; a waiter
//! increments `waiting` (under the queue lock), then takes from (or, when empty, reads with an
//! RMW) every slot's cache. For each slot, either the waiter's RMW comes after the releaser's
//! in that slot's order, and the waiter finds the permit; or it comes before, and the
//! releaser's RMW reads from it, so the releaser's load of `waiting` sees the waiter and it
//! hands the free permits to the queue itself (under the lock). The releaser's side stays a
//! plain load of a line that only waiters write; the RMW reads are on the waiter's cold path.
//! Shrinking below the permits in flight leaves a debt (`global < 0`) that releases pay back
//! before anything is admitted.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use crate::error::BulkheadFull;
use crate::leak::{LeakBudget, Leaked as Ref, STATIC_BUILDS};
use crate::stripe::{stripe_count, thread_number, CachePadded};
use crate::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use crate::sync::{lock, Mutex};

const TARGET: &str = "seawall::bulkhead";

/// The largest capacity a bulkhead accepts (the central pool is a signed counter).
pub(crate) const MAX_CAPACITY: usize = (isize::MAX as usize) / 4;

/// Counts the bulkheads that keep their slots for the life of the program (see the module
/// docs).
static LEAKS: LeakBudget = LeakBudget::new();

/// Validated settings, fixed when the layer is built.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// `None`: reject at once when full. `Some(d)`: wait up to `d` for a permit.
    pub(crate) max_wait: Option<Duration>,
    /// The most callers that may wait at once, if bounded.
    pub(crate) max_waiting: Option<usize>,
    /// The `retry_after` put on every rejection.
    pub(crate) retry_after: Option<Duration>,
    /// Where rejections are published, if anywhere.
    pub(crate) events: Option<crate::events::EventSource>,
    /// Whether each admission and each end of a call is an event too.
    pub(crate) call_events: bool,
}

/// Wait mode's state besides the slots: what a release may need to reach.
struct Pool {
    /// Free permits not cached in any slot; negative after a shrink below in flight (a debt).
    global: AtomicIsize,
    /// How many callers are queued (read on every call and release; written only by waiters).
    waiting: AtomicUsize,
    /// The waiters, first come first; its lock also serialises resizes (both modes).
    queue: Mutex<VecDeque<Arc<Node>>>,
    /// Where permits publish admissions and ends of calls, when call events are on.
    call_events: Option<crate::events::EventSource>,
}

/// One thread's part of the permits (the fields a call touches are in the first 64 bytes of
/// its [`CachePadded`] lines).
struct Slot {
    /// Reject mode: permits taken here, by any thread (RMW).
    taken: AtomicUsize,
    /// Reject mode: permits given back here by the owner thread (plain load and store).
    returned_local: AtomicUsize,
    /// Reject mode: permits given back here by any other thread (RMW).
    returned_remote: AtomicUsize,
    /// Reject mode: this slot's share of the capacity.
    share: AtomicUsize,
    /// This slot's position, which is also its owner thread's number.
    index: usize,
    /// Reject mode (counted in `taken` and `returned_*`) or wait mode (pooled).
    counted: bool,
    /// Whether permits of this slot publish call events (kept here, beside `counted`, so that
    /// a call reads no other line to know).
    call_events: bool,
    /// Wait mode: free permits cached here.
    free: AtomicUsize,
    pool: Ref<Pool>,
}

type SlotRef = Ref<CachePadded<Slot>>;

/// What a layer value, its services and its handle share.
pub(crate) struct Shared {
    counted: bool,
    mask: usize,
    slots: Box<[SlotRef]>,
    pool: Ref<Pool>,
    /// Reject mode, after a shrink: every slot's share is zero until in flight is below the
    /// new capacity, when the shares are dealt again.
    draining: AtomicBool,
    capacity: AtomicUsize,
    /// Wait mode: the maximum wait of calls queued from now on, in nanoseconds (0: reject at
    /// once). A setting, not part of the permit protocol: std's atomic even under loom, so the
    /// models' schedules are unchanged.
    max_wait: std::sync::atomic::AtomicU64,
    config: Config,
    rejected: AtomicU64,
    expired: AtomicU64,
}

/// A queued waiter. `granted` is set, under the queue lock, when a permit is handed to it.
#[derive(Debug, Default)]
pub(crate) struct Node {
    granted: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

/// A permit held by a call in flight; dropping it gives the permit back to its slot, as the
/// dropping thread ([`Permit::release_as`] names the thread explicitly).
pub(crate) struct Permit {
    /// `None` once released by [`Permit::release_as`].
    slot: Option<SlotRef>,
}

/// What became of a call that found no permit on its own slot.
pub(crate) enum Acquired {
    /// A permit from elsewhere, or granted at once.
    Permit(Permit),
    /// Rejected: the bulkhead is full (reject mode), or its queue is (wait mode).
    Full(BulkheadFull),
    /// Queued, to wait up to `max_wait` for a permit (wait mode).
    Queued { node: Arc<Node>, max_wait: Duration },
}

/// `d` in whole nanoseconds, saturating (a day, the longest wait allowed, is far below).
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Slot `i`'s part when `total` is dealt over `n` slots as evenly as can be.
fn deal(total: usize, n: usize, i: usize) -> usize {
    total / n + usize::from(i < total % n)
}

/// Whether this build's slots may be leaked (the first `STATIC_BUILDS` of the process).
fn leak_this_one() -> bool {
    LEAKS.take(|| {
        tracing::debug!(
            target: TARGET,
            "more than {STATIC_BUILDS} bulkheads built; later ones are reference-counted"
        )
    })
}

/// Takes one from `counter` if it is above zero.
#[inline]
fn take_one(counter: &AtomicUsize, order: Ordering) -> bool {
    let mut n = counter.load(Ordering::Relaxed);
    while n > 0 {
        match counter.compare_exchange_weak(n, n - 1, order, Ordering::Relaxed) {
            Ok(_) => return true,
            Err(now) => n = now,
        }
    }
    false
}

/// Wait mode, a waiter's scan: takes one from a slot's cache, reading it with an RMW even when
/// it is empty (the waiter's half of the handshake in the module docs).
fn take_one_seen(counter: &AtomicUsize) -> bool {
    let mut n = counter.fetch_add(0, Ordering::AcqRel);
    while n > 0 {
        match counter.compare_exchange_weak(n, n - 1, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return true,
            Err(now) => n = now,
        }
    }
    false
}

impl Pool {
    fn take_global(&self) -> bool {
        let mut g = self.global.load(Ordering::SeqCst);
        while g > 0 {
            match self
                .global
                .compare_exchange_weak(g, g - 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return true,
                Err(now) => g = now,
            }
        }
        false
    }

    /// Pays one unit of a shrink's debt, if there is one.
    #[inline]
    fn pay_debt(&self) -> bool {
        let mut g = self.global.load(Ordering::SeqCst);
        while g < 0 {
            match self
                .global
                .compare_exchange_weak(g, g + 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => return true,
                Err(now) => g = now,
            }
        }
        false
    }

    /// Hands a permit to `node`, which the caller has just popped from the queue.
    fn grant(&self, node: Arc<Node>) {
        let before = self.waiting.fetch_sub(1, Ordering::SeqCst);
        debug_assert!(before > 0, "a queued waiter is counted in `waiting`");
        node.granted.store(true, Ordering::Release);
        let waker = lock(&node.waker).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Gives back a permit while holding the queue lock: pays a debt, or goes to the first
    /// waiter, or to the central pool.
    fn release_locked(&self, queue: &mut VecDeque<Arc<Node>>) {
        if self.pay_debt() {
            return;
        }
        match queue.pop_front() {
            Some(node) => self.grant(node),
            None => {
                self.global.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

impl Slot {
    fn new(index: usize, counted: bool, share: usize, pool: Ref<Pool>, call_events: bool) -> Self {
        Self {
            call_events,
            taken: AtomicUsize::new(0),
            returned_local: AtomicUsize::new(0),
            returned_remote: AtomicUsize::new(0),
            share: AtomicUsize::new(share),
            free: AtomicUsize::new(0),
            index,
            counted,
            pool,
        }
    }

    /// Reject mode: the permits given back to this slot so far. Loaded before `taken` (see
    /// the module docs).
    #[inline]
    fn returned(&self) -> usize {
        self.returned_local
            .load(Ordering::Acquire)
            .wrapping_add(self.returned_remote.load(Ordering::Acquire))
    }

    /// Reject mode: one permit from this slot if it is below its share. `look_first` reads the
    /// slot before the RMW, so that a full slot costs none (the slow path's scan).
    #[inline]
    fn try_take(&self, look_first: bool) -> bool {
        let returned = self.returned();
        if look_first {
            let taken = self.taken.load(Ordering::Relaxed);
            if taken.wrapping_sub(returned) >= self.share.load(Ordering::Relaxed) {
                return false;
            }
        }
        let taken = self.taken.fetch_add(1, Ordering::Acquire);
        // After the increment: a share from before a shrink is then one the redeal accounts
        // for (the module docs, *Resizes*).
        if taken.wrapping_sub(returned) < self.share.load(Ordering::Relaxed) {
            return true;
        }
        self.taken.fetch_sub(1, Ordering::Relaxed);
        false
    }

    /// Reject mode: gives one permit back to this slot, as the thread numbered `number`.
    #[inline]
    fn give_back(&self, number: usize) {
        if number == self.index {
            // Only this slot's owner writes `returned_local` (the ownership invariant of
            // `crate::stripe`): no RMW needed.
            let n = self.returned_local.load(Ordering::Relaxed);
            self.returned_local
                .store(n.wrapping_add(1), Ordering::Release);
        } else {
            self.returned_remote.fetch_add(1, Ordering::Release);
        }
    }

    /// Reject mode: calls in flight on this slot (and, for an instant, failed attempts).
    fn in_flight(&self) -> usize {
        let returned = self.returned();
        Self::held(self.taken.load(Ordering::Acquire), returned)
    }

    /// Reject mode: [`Slot::in_flight`], reading `taken` with an RMW (the redeal's half of the
    /// argument in the module docs, *Resizes*).
    fn in_flight_seen(&self) -> usize {
        let returned = self.returned();
        Self::held(self.taken.fetch_add(0, Ordering::AcqRel), returned)
    }

    fn held(taken: usize, returned: usize) -> usize {
        let n = taken.wrapping_sub(returned);
        // Returns are loaded first, and a permit's increment happens before its return, so
        // `taken` is never behind them.
        debug_assert!(n <= MAX_CAPACITY * 2, "in flight below zero: {n}");
        n
    }

    /// Wait mode, the happy path: one permit from this slot's cache, unless someone is queued
    /// (no barging) or a shrink left a debt.
    #[inline]
    fn try_take_free(&self) -> bool {
        let pool = &*self.pool;
        if pool.waiting.load(Ordering::Relaxed) != 0 || pool.global.load(Ordering::Relaxed) < 0 {
            return false;
        }
        take_one(&self.free, Ordering::Acquire)
    }

    /// Wait mode: gives one permit back: to a shrink's debt, to the first waiter, or to this
    /// slot. Out of line so that reject mode's release stays small enough to inline.
    #[inline(never)]
    fn release_pooled(&self) {
        let pool = &*self.pool;
        if pool.global.load(Ordering::Relaxed) < 0 && pool.pay_debt() {
            return;
        }
        if pool.waiting.load(Ordering::Acquire) != 0 {
            self.release_slow();
            return;
        }
        // The releaser's half of the handshake (module docs): an RMW, then a load.
        self.free.fetch_add(1, Ordering::AcqRel);
        if pool.waiting.load(Ordering::Acquire) != 0 {
            self.rescue();
        }
    }

    #[cold]
    #[inline(never)]
    fn release_slow(&self) {
        let mut queue = lock(&self.pool.queue);
        self.pool.release_locked(&mut queue);
    }

    /// A caller started waiting while this release put its permit in the slot: hand free
    /// permits to the queue so that none sits idle while someone waits.
    #[cold]
    #[inline(never)]
    fn rescue(&self) {
        let pool = &*self.pool;
        let mut queue = lock(&pool.queue);
        // A shrink that raced with this release swept the slots under this same lock; its
        // debt comes first.
        while !queue.is_empty()
            && pool.global.load(Ordering::SeqCst) >= 0
            && (take_one(&self.free, Ordering::SeqCst) || pool.take_global())
        {
            let node = queue.pop_front().expect("queue is not empty");
            pool.grant(node);
        }
    }

    /// Gives one permit back, as the thread numbered `number`.
    #[inline]
    fn release(&self, number: usize) {
        if self.counted {
            self.give_back(number);
        } else {
            self.release_pooled();
        }
    }
}

impl Permit {
    /// Every permit is made here, for a call admitted now.
    #[inline]
    fn new(slot: SlotRef) -> Self {
        if slot.call_events {
            slot.call_event(crate::events::EventKind::CallPermitted);
        }
        Self { slot: Some(slot) }
    }

    /// Gives the permit back as the thread numbered `number` (what dropping it does, as the
    /// calling thread).
    #[cfg(test)]
    pub(crate) fn release_as(mut self, number: usize) {
        if let Some(slot) = self.slot.take() {
            slot.release(number);
            if slot.call_events {
                slot.call_event(crate::events::EventKind::CallFinished);
            }
        }
    }
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        if let Some(slot) = &self.slot {
            slot.release(thread_number());
            if slot.call_events {
                slot.call_event(crate::events::EventKind::CallFinished);
            }
        }
    }
}

impl Slot {
    /// Publishes a call's admission or end (only when call events are on).
    #[cold]
    #[inline(never)]
    fn call_event(&self, kind: crate::events::EventKind) {
        tracing::trace!(target: TARGET, event = ?kind, "bulkhead call event");
        if let Some(events) = &self.pool.call_events {
            events.publish("bulkhead", kind);
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("slot", &self.slot.as_ref().map(|s| s.index))
            .finish_non_exhaustive()
    }
}

impl Node {
    pub(crate) fn is_granted(&self) -> bool {
        self.granted.load(Ordering::Acquire)
    }

    /// Whether a permit was granted, registering `waker` to be woken when one is if not (set
    /// before the second look, so that a grant in between is not missed).
    pub(crate) fn poll_granted(&self, waker: &Waker) -> bool {
        if self.is_granted() {
            return true;
        }
        {
            let mut slot = lock(&self.waker);
            match &*slot {
                Some(w) if w.will_wake(waker) => {}
                _ => *slot = Some(waker.clone()),
            }
        }
        self.is_granted()
    }
}

impl Shared {
    pub(crate) fn new(capacity: usize, config: Config) -> Self {
        Self::build(capacity, config, stripe_count(), leak_this_one())
    }

    /// A bulkhead of `slots` slots (a power of two) whose permits hold an `Arc` to their slot
    /// (what every build past the first `STATIC_BUILDS` gets): for tests and models.
    #[cfg(test)]
    pub(crate) fn new_counted(capacity: usize, config: Config, slots: usize) -> Self {
        Self::build(capacity, config, slots, false)
    }

    fn build(capacity: usize, config: Config, n: usize, leak: bool) -> Self {
        assert!(n.is_power_of_two(), "a slot count is a power of two");
        let counted = config.max_wait.is_none();
        let pool = Pool {
            global: AtomicIsize::new(if counted { 0 } else { capacity as isize }),
            waiting: AtomicUsize::new(0),
            queue: Mutex::new(VecDeque::new()),
            call_events: config.call_events.then(|| config.events.clone()).flatten(),
        };
        let call_events = config.call_events;
        let share = |i| if counted { deal(capacity, n, i) } else { 0 };
        let (pool, slots): (Ref<Pool>, Box<[SlotRef]>) = if leak {
            let pool: &'static Pool = Box::leak(Box::new(pool));
            let slots: &'static [CachePadded<Slot>] = Box::leak(
                (0..n)
                    .map(|i| {
                        CachePadded(Slot::new(
                            i,
                            counted,
                            share(i),
                            Ref::Static(pool),
                            call_events,
                        ))
                    })
                    .collect(),
            );
            (Ref::Static(pool), slots.iter().map(Ref::Static).collect())
        } else {
            let pool = Ref::Counted(Arc::new(pool));
            let slots = (0..n)
                .map(|i| {
                    let slot = Slot::new(i, counted, share(i), pool.clone(), call_events);
                    Ref::Counted(Arc::new(CachePadded(slot)))
                })
                .collect();
            (pool, slots)
        };
        Self {
            counted,
            mask: n - 1,
            slots,
            pool,
            draining: AtomicBool::new(false),
            capacity: AtomicUsize::new(capacity),
            max_wait: std::sync::atomic::AtomicU64::new(nanos(config.max_wait.unwrap_or_default())),
            config,
            rejected: AtomicU64::new(0),
            expired: AtomicU64::new(0),
        }
    }

    /// The happy path: a permit from this thread's slot.
    #[inline]
    pub(crate) fn try_acquire(&self) -> Option<Permit> {
        self.try_acquire_as(thread_number())
    }

    /// The happy path, as the thread numbered `number`.
    #[inline]
    pub(crate) fn try_acquire_as(&self, number: usize) -> Option<Permit> {
        if !self.counted {
            return self.try_acquire_pooled(number);
        }
        let slot = self.slot_of(number);
        slot.try_take(false).then(|| Permit::new(slot.clone()))
    }

    /// Wait mode's happy path, out of line so that reject mode's stays small enough to inline.
    #[inline(never)]
    fn try_acquire_pooled(&self, number: usize) -> Option<Permit> {
        let slot = self.slot_of(number);
        slot.try_take_free().then(|| Permit::new(slot.clone()))
    }

    /// The slot of the thread numbered `number`.
    #[inline]
    fn slot_of(&self, number: usize) -> &SlotRef {
        &self.slots[number & self.mask]
    }

    /// A rejection, counted and traced.
    #[cold]
    pub(crate) fn reject(&self, why: &'static str) -> BulkheadFull {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            target: TARGET,
            capacity = self.capacity.load(Ordering::Relaxed),
            waiting = self.pool.waiting.load(Ordering::Relaxed),
            reason = why,
            "bulkhead full; call rejected"
        );
        if let Some(events) = &self.config.events {
            events.publish(
                "bulkhead",
                crate::events::EventKind::Rejected {
                    retry_after: self.config.retry_after,
                },
            );
        }
        BulkheadFull::new(self.config.retry_after)
    }

    /// A permit from anywhere: the central pool, then every slot, starting at the slot of the
    /// thread numbered `start`, each taken from with `take`. Moves slots' free permits to the
    /// central pool first when a shrink left a debt.
    fn take_any(&self, start: usize, take: fn(&AtomicUsize) -> bool) -> bool {
        if self.pool.global.load(Ordering::SeqCst) < 0 {
            self.sweep();
        }
        if self.pool.take_global() {
            return true;
        }
        (0..self.slots.len()).any(|i| take(&self.slot_of(start.wrapping_add(i)).free))
    }

    /// Moves every slot's free permits to the central pool (to pay a debt).
    fn sweep(&self) {
        for slot in self.slots.iter() {
            let f = slot.free.swap(0, Ordering::SeqCst);
            if f > 0 {
                self.pool.global.fetch_add(f as isize, Ordering::SeqCst);
            }
        }
    }

    /// The slow path of a call that found no permit on its own slot.
    #[cold]
    #[inline(never)]
    pub(crate) fn acquire_slow(&self) -> Acquired {
        self.acquire_slow_as(thread_number())
    }

    /// The slow path, as the thread numbered `number`: a permit from anywhere (unless callers
    /// are queued: then the caller must queue too), or else a rejection (reject mode, or a full
    /// queue) or a place in the queue.
    pub(crate) fn acquire_slow_as(&self, number: usize) -> Acquired {
        if self.counted {
            return match self.try_acquire_counted_anywhere(number) {
                Some(permit) => Acquired::Permit(permit),
                None => Acquired::Full(self.reject("full")),
            };
        }
        if self.pool.waiting.load(Ordering::SeqCst) == 0
            && self.take_any(number, |free| take_one(free, Ordering::SeqCst))
        {
            return Acquired::Permit(self.granted_permit_as(number));
        }
        match self.max_wait() {
            // Set to zero at run time: wait mode's accounting, reject mode's answer.
            Duration::ZERO => Acquired::Full(self.reject("full")),
            max_wait => self.enqueue(max_wait, number),
        }
    }

    /// Reject mode: a permit from any slot with room, after dealing the shares again if a
    /// shrink has drained enough. Two rounds narrow the window in which a permit released
    /// during the first is missed.
    fn try_acquire_counted_anywhere(&self, number: usize) -> Option<Permit> {
        if self.draining.load(Ordering::Acquire) {
            let _guard = lock(&self.pool.queue);
            self.try_redeal();
        }
        (0..2 * self.slots.len()).find_map(|i| {
            let slot = self.slot_of(number.wrapping_add(i));
            slot.try_take(true).then(|| Permit::new(slot.clone()))
        })
    }

    /// Reject mode, with the resize lock held: once in flight is below the capacity, deal each
    /// slot its calls in flight plus a part of the room left, so that every slot's in
    /// flight is within its share and the shares sum to the capacity.
    fn try_redeal(&self) {
        if !self.draining.load(Ordering::Acquire) {
            return;
        }
        let capacity = self.capacity.load(Ordering::SeqCst);
        let in_flight: Vec<usize> = self.slots.iter().map(|s| s.in_flight_seen()).collect();
        let total: usize = in_flight.iter().sum();
        if total >= capacity {
            return;
        }
        let room = capacity - total;
        let n = self.slots.len();
        for (i, (slot, busy)) in self.slots.iter().zip(in_flight).enumerate() {
            slot.share.store(busy + deal(room, n, i), Ordering::SeqCst);
        }
        self.draining.store(false, Ordering::Release);
        debug_assert_eq!(self.shares(), capacity, "the shares sum to the capacity");
    }

    /// Reject mode: the sum of the shares (the capacity, whenever no drain is under way).
    fn shares(&self) -> usize {
        self.slots
            .iter()
            .map(|s| s.share.load(Ordering::SeqCst))
            .sum()
    }

    /// Hands free permits to the front of the queue, in order, while any are free (with the
    /// queue lock held; the waiter's half of the handshake in the module docs).
    fn grant_from_pools(&self, queue: &mut VecDeque<Arc<Node>>, start: usize) {
        while !queue.is_empty() && self.take_any(start, take_one_seen) {
            let node = queue.pop_front().expect("queue is not empty");
            self.pool.grant(node);
        }
    }

    /// Queues a caller that found no free permit (wait mode).
    fn enqueue(&self, max_wait: Duration, number: usize) -> Acquired {
        let pool = &*self.pool;
        let mut queue = lock(&pool.queue);
        if let Some(max) = self.config.max_waiting {
            if queue.len() >= max {
                drop(queue);
                return Acquired::Full(self.reject("queue full"));
            }
        }
        // Announce first, then look at the pools (the waiter's half of the handshake in the
        // module docs).
        pool.waiting.fetch_add(1, Ordering::SeqCst);
        let node = Arc::new(Node::default());
        queue.push_back(Arc::clone(&node));
        self.grant_from_pools(&mut queue, number);
        drop(queue);
        if node.is_granted() {
            Acquired::Permit(self.granted_permit_as(number))
        } else {
            Acquired::Queued { node, max_wait }
        }
    }

    /// A permit for a waiter that has been granted one.
    pub(crate) fn granted_permit(&self) -> Permit {
        self.granted_permit_as(thread_number())
    }

    /// A permit for a waiter that has been granted one, on the thread numbered `number`.
    pub(crate) fn granted_permit_as(&self, number: usize) -> Permit {
        Permit::new(self.slot_of(number).clone())
    }

    /// The waiter's maximum wait is over. Returns `true` if a permit was granted in the
    /// meantime (the waiter keeps it); otherwise the waiter leaves the queue.
    pub(crate) fn expire(&self, node: &Arc<Node>) -> bool {
        let mut queue = lock(&self.pool.queue);
        if node.is_granted() {
            return true;
        }
        self.remove(&mut queue, node);
        self.expired.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// The waiter's future was dropped: it leaves the queue, or gives back the permit it was
    /// granted and never used.
    pub(crate) fn abandon(&self, node: &Arc<Node>) {
        let mut queue = lock(&self.pool.queue);
        if node.is_granted() {
            self.pool.release_locked(&mut queue);
        } else {
            self.remove(&mut queue, node);
        }
    }

    fn remove(&self, queue: &mut VecDeque<Arc<Node>>, node: &Arc<Node>) {
        if let Some(pos) = queue.iter().position(|n| Arc::ptr_eq(n, node)) {
            queue.remove(pos);
            self.pool.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Changes the capacity, keeping in-flight calls counted.
    pub(crate) fn set_capacity(&self, capacity: usize) {
        let pool = &*self.pool;
        let mut queue = lock(&pool.queue);
        let old = self.capacity.swap(capacity, Ordering::SeqCst);
        if self.counted {
            if capacity < old || self.draining.load(Ordering::Acquire) {
                // Admit nothing until in flight is below the new capacity, then deal again.
                for slot in self.slots.iter() {
                    slot.share.store(0, Ordering::SeqCst);
                }
                self.draining.store(true, Ordering::Release);
                self.try_redeal();
            } else if capacity > old {
                let n = self.slots.len();
                for (i, slot) in self.slots.iter().enumerate() {
                    slot.share
                        .fetch_add(deal(capacity - old, n, i), Ordering::SeqCst);
                }
                debug_assert_eq!(self.shares(), capacity, "the shares sum to the capacity");
            }
        } else if capacity > old {
            pool.global
                .fetch_add((capacity - old) as isize, Ordering::SeqCst);
            // The scan's start is only a spreading choice.
            self.grant_from_pools(&mut queue, 0);
        } else if capacity < old {
            pool.global
                .fetch_sub((old - capacity) as isize, Ordering::SeqCst);
            self.sweep();
        }
        drop(queue);
        tracing::info!(
            target: TARGET,
            old,
            new = capacity,
            in_flight = self.in_flight(),
            "bulkhead capacity changed"
        );
    }

    /// The maximum wait of calls queued from now on (zero in reject mode).
    pub(crate) fn max_wait(&self) -> Duration {
        Duration::from_nanos(self.max_wait.load(Ordering::Relaxed))
    }

    /// Whether calls may wait (the bulkhead was built with a non-zero `max_wait`).
    pub(crate) fn waits(&self) -> bool {
        !self.counted
    }

    /// Changes the maximum wait of calls queued from now on (wait mode; at most a day).
    pub(crate) fn set_max_wait(&self, max_wait: Duration) {
        debug_assert!(!self.counted, "a reject-mode bulkhead never waits");
        self.max_wait.store(nanos(max_wait), Ordering::Relaxed);
        tracing::info!(
            target: TARGET,
            max_wait_ms = u64::try_from(max_wait.as_millis()).unwrap_or(u64::MAX),
            "bulkhead max wait changed"
        );
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity.load(Ordering::SeqCst)
    }

    /// Free permits (may be negative while a shrink's debt is unpaid).
    fn free(&self) -> isize {
        let cached: usize = self
            .slots
            .iter()
            .map(|s| s.free.load(Ordering::SeqCst))
            .sum();
        self.pool.global.load(Ordering::SeqCst) + cached as isize
    }

    pub(crate) fn in_flight(&self) -> usize {
        if self.counted {
            return self.slots.iter().map(|s| s.in_flight()).sum();
        }
        let in_flight = self.capacity() as isize - self.free();
        in_flight.max(0) as usize
    }

    pub(crate) fn available(&self) -> usize {
        if self.counted {
            return self.capacity().saturating_sub(self.in_flight());
        }
        self.free().max(0) as usize
    }

    pub(crate) fn waiting(&self) -> usize {
        self.pool.waiting.load(Ordering::SeqCst)
    }

    pub(crate) fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }

    pub(crate) fn expired(&self) -> u64 {
        self.expired.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulkhead")
            .field("capacity", &self.capacity())
            .field("in_flight", &self.in_flight())
            .field("waiting", &self.waiting())
            .field("max_wait", &self.max_wait())
            .field("max_waiting", &self.config.max_waiting)
            .finish()
    }
}

#[cfg(all(test, not(seawall_loom)))]
mod tests {
    use super::*;
    use std::thread;

    fn reject_mode() -> Config {
        Config {
            max_wait: None,
            max_waiting: None,
            retry_after: None,
            events: None,
            call_events: false,
        }
    }

    fn acquire(shared: &Shared) -> Option<Permit> {
        shared
            .try_acquire()
            .or_else(|| match shared.acquire_slow() {
                Acquired::Permit(permit) => Some(permit),
                _ => None,
            })
    }

    fn take(shared: &Shared, n: usize) -> Vec<Permit> {
        (0..n)
            .map(|_| acquire(shared).expect("a permit is free"))
            .collect()
    }

    fn slot(permit: &Permit) -> &SlotRef {
        permit.slot.as_ref().expect("not released")
    }

    /// The leaked and the reference-counted representations keep the same accounting when
    /// permits cross threads both ways.
    #[test]
    fn permits_cross_threads_both_ways_in_either_representation() {
        for shared in [
            Shared::build(8, reject_mode(), stripe_count(), true),
            Shared::new_counted(8, reject_mode(), stripe_count()),
        ] {
            let theirs = thread::scope(|s| s.spawn(|| take(&shared, 5)).join().unwrap());
            assert_eq!(shared.in_flight(), 5);
            let mine = take(&shared, 3);
            assert!(acquire(&shared).is_none());
            drop(theirs);
            assert_eq!(shared.in_flight(), 3);
            thread::spawn(move || drop(mine)).join().unwrap();
            assert_eq!((shared.in_flight(), shared.available()), (0, 8));
            let all = take(&shared, 8);
            assert!(acquire(&shared).is_none());
            drop(all);
            assert_eq!(shared.in_flight(), 0);
        }
    }

    #[test]
    fn a_leaked_slot_costs_its_permits_no_reference_count_and_a_counted_one_does() {
        let leaked = Shared::build(4, reject_mode(), stripe_count(), true);
        let permit = acquire(&leaked).unwrap();
        assert!(matches!(slot(&permit), Ref::Static(_)));

        let counted = Shared::new_counted(4, reject_mode(), stripe_count());
        let permit = acquire(&counted).unwrap();
        let Ref::Counted(slot) = slot(&permit) else {
            panic!("a counted bulkhead hands out counted permits");
        };
        // The bulkhead's own reference and this permit's.
        assert_eq!(Arc::strong_count(slot), 2);
    }

    fn static_slot(permit: &Permit) -> &'static Slot {
        match slot(permit) {
            Ref::Static(slot) => slot,
            Ref::Counted(_) => panic!("built leaked"),
        }
    }

    #[test]
    fn a_permit_given_back_by_its_slots_owner_takes_no_rmw_and_by_another_thread_does() {
        let shared = Shared::build(64, reject_mode(), stripe_count(), true);
        let permit = shared.try_acquire().expect("this thread's slot has room");
        let slot = static_slot(&permit);
        let counter = if thread_number() == slot.index {
            &slot.returned_local
        } else {
            &slot.returned_remote // more threads than slots: this one owns none
        };
        let before = counter.load(Ordering::Relaxed);
        drop(permit);
        assert_eq!(counter.load(Ordering::Relaxed), before + 1);

        let permit = shared.try_acquire().unwrap();
        let slot = static_slot(&permit);
        let remote = slot.returned_remote.load(Ordering::Relaxed);
        thread::spawn(move || drop(permit)).join().unwrap();
        assert_eq!(slot.returned_remote.load(Ordering::Relaxed), remote + 1);
        assert_eq!(shared.in_flight(), 0);
    }

    #[test]
    fn a_permit_released_as_a_named_thread_takes_that_threads_path() {
        let shared = Shared::new_counted(4, reject_mode(), 2);
        let owners = (
            shared.try_acquire_as(1).unwrap(),
            shared.try_acquire_as(1).unwrap(),
        );
        let slot = Arc::clone(match slot(&owners.0) {
            Ref::Counted(slot) => slot,
            Ref::Static(_) => panic!("built counted"),
        });
        assert_eq!(slot.index, 1);
        owners.0.release_as(1);
        owners.1.release_as(0);
        assert_eq!(slot.returned_local.load(Ordering::Relaxed), 1);
        assert_eq!(slot.returned_remote.load(Ordering::Relaxed), 1);
        assert_eq!(shared.in_flight(), 0);
    }

    #[test]
    fn a_permit_dropped_while_its_thread_tears_down_is_counted_back() {
        static SHARED: std::sync::OnceLock<Shared> = std::sync::OnceLock::new();
        static SEEN: AtomicUsize = AtomicUsize::new(usize::MAX);
        struct HeldUntilExit(std::cell::RefCell<Option<Permit>>);
        impl Drop for HeldUntilExit {
            fn drop(&mut self) {
                SEEN.store(thread_number(), Ordering::SeqCst);
                drop(self.0.borrow_mut().take());
            }
        }
        thread_local! {
            static HELD: HeldUntilExit = const { HeldUntilExit(std::cell::RefCell::new(None)) };
        }
        let shared = SHARED.get_or_init(|| Shared::build(64, reject_mode(), stripe_count(), true));
        let (number, slot) = thread::spawn(|| {
            // Registered before the number guard: where destructors run last registered
            // first (glibc), the permit is dropped after the thread gave its number back.
            HELD.with(|_| ());
            let permit = shared.try_acquire().unwrap();
            let slot = static_slot(&permit);
            HELD.with(|held| *held.0.borrow_mut() = Some(permit));
            (thread_number(), slot)
        })
        .join()
        .unwrap();
        let seen = SEEN.load(Ordering::SeqCst);
        assert!(
            seen == number || seen == crate::stripe::EXITED,
            "{seen} vs {number}"
        );
        if seen == crate::stripe::EXITED {
            // A non-owner's release: the slot may already belong to another thread.
            assert!(slot.returned_remote.load(Ordering::SeqCst) >= 1);
        }
        assert_eq!(shared.in_flight(), 0);
    }
}
