//! The bulkhead's shared state: striped permits, the FIFO waiter queue and the counters.
//!
//! Both modes split the permits over stripes, one small allocation (and cache line) each. A
//! thread works on its own stripe, so two threads sharing one bulkhead write different cache
//! lines on the happy path and do not slow each other down the way a single shared counter
//! does. A response future keeps its stripe alive with an `Arc<Stripe>`; that clone is one
//! atomic operation on the stripe's own line.
//!
//! # Reject mode: the `Arc` count is the permit count
//!
//! Each stripe has a `share` of the capacity (shares sum to the capacity). The permit is the
//! clone of the stripe's `Arc`, and the strong count less the bulkhead's own reference is the
//! stripe's calls in flight. A call clones the `Arc` and is admitted if the count is within
//! the share; releasing is dropping the clone. That is two atomic operations per call, the
//! least a `'static` future that touches shared state on drop can do in safe Rust. A caller
//! whose stripe is at its share tries the other stripes; only when every stripe is at its
//! share is the bulkhead full. Shares change only on a resize: raising adds to them; shrinking
//! zeroes them all ("draining") until in flight is below the new capacity, then deals each
//! stripe its calls in flight plus a part of the room left.
//!
//! # Wait mode: permits move through pools
//!
//! A release must hand its permit to the first waiter, which needs code to run after the
//! permit is given back, so wait mode counts permits explicitly. Each permit is, at any
//! instant, free in the central pool (`Core::global`), free in one stripe's cache
//! (`Stripe::free`), or held by a call (a [`Permit`], or granted to a waiter). Every move is one
//! atomic operation, so `in flight = capacity - global - sum(stripe.free)`.
//!
//! Waiting callers queue behind a mutex, touched only when the bulkhead is full or someone
//! waits. While anyone waits, new calls go to the back of the queue and released permits are
//! handed to the front waiter, so nobody barges past a fair waiter. The race between a releaser
//! putting a permit in its stripe and a caller starting to wait is closed Dekker-style: the
//! releaser increments the stripe, then reads `waiting`; the waiter increments `waiting`, then
//! scans the stripes (all `SeqCst`). At least one sees the other. Shrinking below the permits
//! in flight leaves a debt (`global < 0`) that releases pay back before anything is admitted.

use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;
use std::time::Duration;

use crate::error::BulkheadFull;

const TARGET: &str = "seawall::bulkhead";

/// The largest capacity a bulkhead accepts (the central pool is a signed counter).
pub(crate) const MAX_CAPACITY: usize = (isize::MAX as usize) / 4;

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
}

/// State shared by every stripe: the central pool, the queue and the counters.
pub(crate) struct Core {
    config: Config,
    /// Reject mode: a stripe's calls in flight are its `Arc`'s strong count (see the module
    /// docs). Wait mode: permits move through `global` and the stripes' `free` counters.
    counted: bool,
    /// Reject mode, after a shrink: every stripe's share is zero until in flight is below the
    /// new capacity, when the shares are dealt again.
    draining: AtomicBool,
    capacity: AtomicUsize,
    /// Free permits not cached in any stripe; negative after a shrink below in flight (a debt).
    global: AtomicIsize,
    /// How many callers are queued (read on every call and release; written only by waiters).
    waiting: AtomicUsize,
    queue: Mutex<VecDeque<Arc<Node>>>,
    rejected: AtomicU64,
    expired: AtomicU64,
}

/// One stripe of the permit pool, in its own allocation and cache line.
#[repr(align(128))]
pub(crate) struct Stripe {
    /// Wait mode: free permits cached here.
    free: AtomicUsize,
    /// Reject mode: this stripe's share of the capacity.
    share: AtomicUsize,
    core: Arc<Core>,
}

/// What a layer value, its services and its handle share.
pub(crate) struct Shared {
    core: Arc<Core>,
    stripes: Box<[Arc<Stripe>]>,
    mask: usize,
}

/// A queued waiter. `granted` is set, under the queue lock, when a permit is handed to it.
#[derive(Debug, Default)]
pub(crate) struct Node {
    granted: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

/// A permit held by a call in flight; dropping it gives the permit back.
pub(crate) struct Permit {
    stripe: Arc<Stripe>,
    /// Wait mode: give the permit back to a pool (or a waiter) on drop. Reject mode: dropping
    /// the `Arc` is the release.
    pooled: bool,
}

/// What became of a caller that found the bulkhead full in wait mode.
pub(crate) enum Enqueued {
    /// A permit was free after all: the caller holds it.
    Granted(Permit),
    /// The caller waits in the queue.
    Waiting(Arc<Node>),
    /// The queue is at its bound.
    QueueFull,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No code panics while holding these locks, but a waker might; keep going regardless.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static THREAD_INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// A small number for the current thread, handed out in order of first use, so that threads
/// started together land on different stripes.
#[inline]
fn thread_index() -> usize {
    THREAD_INDEX
        .try_with(|cell| {
            let i = cell.get();
            if i != usize::MAX {
                return i;
            }
            let i = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
            cell.set(i);
            i
        })
        .unwrap_or(0)
}

/// Stripe `i`'s part when `total` is dealt over `n` stripes as evenly as can be.
fn deal(total: usize, n: usize, i: usize) -> usize {
    total / n + usize::from(i < total % n)
}

fn stripe_count() -> usize {
    let cores = std::thread::available_parallelism().map_or(4, |n| n.get());
    (cores * 2).next_power_of_two().clamp(4, 64)
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

impl Core {
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
        self.waiting.fetch_sub(1, Ordering::SeqCst);
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

    /// A rejection, counted and traced.
    #[cold]
    pub(crate) fn reject(&self, why: &'static str) -> BulkheadFull {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            target: TARGET,
            capacity = self.capacity.load(Ordering::Relaxed),
            waiting = self.waiting.load(Ordering::Relaxed),
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

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }
}

impl Stripe {
    /// The happy path: one permit from this thread's stripe, unless someone is queued (wait
    /// mode: no barging) or a shrink left a debt.
    #[inline]
    pub(crate) fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        let core = &*self.core;
        if core.counted {
            return self.try_acquire_counted();
        }
        if core.waiting.load(Ordering::Relaxed) != 0 || core.global.load(Ordering::Relaxed) < 0 {
            return None;
        }
        take_one(&self.free, Ordering::Acquire).then(|| Permit {
            stripe: Arc::clone(self),
            pooled: true,
        })
    }

    /// Reject mode: the clone of the stripe's `Arc` is the permit, and the strong count, less
    /// the one reference the bulkhead keeps, is the stripe's calls in flight (this one
    /// included). Every increment and decrement of one counter is totally ordered, and a load
    /// after one's own increment sees at least every permit still held that was taken before,
    /// so the last of any set of concurrent callers to increment sees them all: admitted
    /// calls never exceed the share. A failed attempt only inflates the count for an instant,
    /// which can make a racing caller refuse when the stripe is at its share (never admit).
    #[inline]
    fn try_acquire_counted(self: &Arc<Self>) -> Option<Permit> {
        let share = self.share.load(Ordering::Relaxed);
        if share == 0 {
            return None;
        }
        let stripe = Arc::clone(self);
        if Arc::strong_count(&stripe) - 1 <= share {
            return Some(Permit {
                stripe,
                pooled: false,
            });
        }
        None
    }

    /// Reject mode: calls in flight on this stripe.
    fn counted_in_flight(self: &Arc<Self>) -> usize {
        Arc::strong_count(self) - 1
    }

    /// Gives one permit back: to a shrink's debt, to the first waiter, or to this stripe.
    #[inline]
    fn release(&self) {
        let core = &*self.core;
        if core.global.load(Ordering::Relaxed) < 0 && core.pay_debt() {
            return;
        }
        if core.waiting.load(Ordering::SeqCst) != 0 {
            self.release_slow();
            return;
        }
        self.free.fetch_add(1, Ordering::SeqCst);
        if core.waiting.load(Ordering::SeqCst) != 0 {
            self.rescue();
        }
    }

    #[cold]
    #[inline(never)]
    fn release_slow(&self) {
        let mut queue = lock(&self.core.queue);
        self.core.release_locked(&mut queue);
    }

    /// A caller started waiting while this release put its permit in the stripe: hand free
    /// permits to the queue so that none sits idle while someone waits.
    #[cold]
    #[inline(never)]
    fn rescue(&self) {
        let core = &*self.core;
        let mut queue = lock(&core.queue);
        // A shrink that raced with this release swept the stripes under this same lock; its
        // debt comes first.
        while !queue.is_empty()
            && core.global.load(Ordering::SeqCst) >= 0
            && (take_one(&self.free, Ordering::SeqCst) || core.take_global())
        {
            let node = queue.pop_front().expect("queue is not empty");
            core.grant(node);
        }
    }
}

impl Permit {
    fn pooled(stripe: Arc<Stripe>) -> Self {
        Self {
            stripe,
            pooled: true,
        }
    }
}

impl Drop for Permit {
    #[inline]
    fn drop(&mut self) {
        if self.pooled {
            self.stripe.release();
        }
        // Reject mode: dropping `self.stripe` releases the permit.
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").finish_non_exhaustive()
    }
}

impl Node {
    pub(crate) fn is_granted(&self) -> bool {
        self.granted.load(Ordering::Acquire)
    }

    pub(crate) fn set_waker(&self, waker: &Waker) {
        let mut slot = lock(&self.waker);
        match &*slot {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }
}

impl Shared {
    pub(crate) fn new(capacity: usize, config: Config) -> Self {
        let counted = config.max_wait.is_none();
        let core = Arc::new(Core {
            config,
            counted,
            draining: AtomicBool::new(false),
            capacity: AtomicUsize::new(capacity),
            global: AtomicIsize::new(if counted { 0 } else { capacity as isize }),
            waiting: AtomicUsize::new(0),
            queue: Mutex::new(VecDeque::new()),
            rejected: AtomicU64::new(0),
            expired: AtomicU64::new(0),
        });
        let n = stripe_count();
        let stripes = (0..n)
            .map(|i| {
                Arc::new(Stripe {
                    free: AtomicUsize::new(0),
                    share: AtomicUsize::new(if counted { deal(capacity, n, i) } else { 0 }),
                    core: Arc::clone(&core),
                })
            })
            .collect();
        Self {
            core,
            stripes,
            mask: n - 1,
        }
    }

    pub(crate) fn core(&self) -> &Core {
        &self.core
    }

    /// This thread's stripe.
    #[inline]
    pub(crate) fn local_stripe(&self) -> &Arc<Stripe> {
        &self.stripes[thread_index() & self.mask]
    }

    /// A permit from anywhere: the central pool, then every stripe. Moves stripes' free permits
    /// to the central pool first when a shrink left a debt.
    fn take_any(&self) -> bool {
        if self.core.global.load(Ordering::SeqCst) < 0 {
            self.sweep();
        }
        if self.core.take_global() {
            return true;
        }
        let start = thread_index();
        (0..self.stripes.len()).any(|i| {
            let stripe = &self.stripes[(start + i) & self.mask];
            take_one(&stripe.free, Ordering::SeqCst)
        })
    }

    /// Moves every stripe's free permits to the central pool (to pay a debt).
    fn sweep(&self) {
        for stripe in self.stripes.iter() {
            let f = stripe.free.swap(0, Ordering::SeqCst);
            if f > 0 {
                self.core.global.fetch_add(f as isize, Ordering::SeqCst);
            }
        }
    }

    /// The slow path of a call whose stripe was empty: a permit from anywhere, unless callers
    /// are queued (then the caller must queue too).
    #[cold]
    #[inline(never)]
    pub(crate) fn try_acquire_slow(&self) -> Option<Permit> {
        if self.core.counted {
            return self.try_acquire_counted_anywhere();
        }
        let waiting = self.core.waiting.load(Ordering::SeqCst) != 0;
        if waiting && self.core.config.max_wait.is_some() {
            return None;
        }
        // Reject mode never queues; a second look narrows the window in which permits released
        // during the first scan are missed.
        if self.take_any() || (self.core.config.max_wait.is_none() && self.take_any()) {
            return Some(Permit::pooled(Arc::clone(self.local_stripe())));
        }
        None
    }

    /// Reject mode: a permit from any stripe with room, after dealing the shares again if a
    /// shrink has drained enough. Two rounds narrow the window in which a permit released
    /// during the first is missed.
    fn try_acquire_counted_anywhere(&self) -> Option<Permit> {
        if self.core.draining.load(Ordering::Acquire) {
            let _guard = lock(&self.core.queue);
            self.try_redeal();
        }
        let start = thread_index();
        (0..2 * self.stripes.len())
            .find_map(|i| self.stripes[(start + i) & self.mask].try_acquire_counted())
    }

    /// Reject mode, with the resize lock held: once in flight is below the capacity, deal each
    /// stripe its calls in flight plus a part of the room left, so that every stripe's in
    /// flight is within its share and the shares sum to the capacity.
    fn try_redeal(&self) {
        let core = &*self.core;
        if !core.draining.load(Ordering::Acquire) {
            return;
        }
        let capacity = core.capacity.load(Ordering::SeqCst);
        let in_flight: Vec<usize> = self.stripes.iter().map(Stripe::counted_in_flight).collect();
        let total: usize = in_flight.iter().sum();
        if total >= capacity {
            return;
        }
        let room = capacity - total;
        let n = self.stripes.len();
        for (i, (stripe, busy)) in self.stripes.iter().zip(in_flight).enumerate() {
            stripe
                .share
                .store(busy + deal(room, n, i), Ordering::SeqCst);
        }
        core.draining.store(false, Ordering::Release);
    }

    /// Hands free permits to the front of the queue, in order, while any are free.
    fn grant_from_pools(&self, queue: &mut VecDeque<Arc<Node>>) {
        while !queue.is_empty() && self.take_any() {
            let node = queue.pop_front().expect("queue is not empty");
            self.core.grant(node);
        }
    }

    /// Queues a caller that found no free permit (wait mode).
    #[cold]
    pub(crate) fn enqueue(&self) -> Enqueued {
        let core = &*self.core;
        let mut queue = lock(&core.queue);
        if let Some(max) = core.config.max_waiting {
            if queue.len() >= max {
                return Enqueued::QueueFull;
            }
        }
        // Announce first, then look at the pools (the Dekker handshake with `Stripe::release`).
        core.waiting.fetch_add(1, Ordering::SeqCst);
        let node = Arc::new(Node::default());
        queue.push_back(Arc::clone(&node));
        self.grant_from_pools(&mut queue);
        drop(queue);
        if node.is_granted() {
            Enqueued::Granted(Permit::pooled(Arc::clone(self.local_stripe())))
        } else {
            Enqueued::Waiting(node)
        }
    }

    /// A permit for a waiter that has been granted one.
    pub(crate) fn granted_permit(&self) -> Permit {
        Permit::pooled(Arc::clone(self.local_stripe()))
    }

    /// The waiter's maximum wait is over. Returns `true` if a permit was granted in the
    /// meantime (the waiter keeps it); otherwise the waiter leaves the queue.
    pub(crate) fn expire(&self, node: &Arc<Node>) -> bool {
        let mut queue = lock(&self.core.queue);
        if node.is_granted() {
            return true;
        }
        self.remove(&mut queue, node);
        self.core.expired.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// The waiter's future was dropped: it leaves the queue, or gives back the permit it was
    /// granted and never used.
    pub(crate) fn abandon(&self, node: &Arc<Node>) {
        let mut queue = lock(&self.core.queue);
        if node.is_granted() {
            self.core.release_locked(&mut queue);
        } else {
            self.remove(&mut queue, node);
        }
    }

    fn remove(&self, queue: &mut VecDeque<Arc<Node>>, node: &Arc<Node>) {
        if let Some(pos) = queue.iter().position(|n| Arc::ptr_eq(n, node)) {
            queue.remove(pos);
            self.core.waiting.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Changes the capacity, keeping in-flight calls counted.
    pub(crate) fn set_capacity(&self, capacity: usize) {
        let core = &*self.core;
        let mut queue = lock(&core.queue);
        let old = core.capacity.swap(capacity, Ordering::SeqCst);
        if core.counted {
            if capacity < old || core.draining.load(Ordering::Acquire) {
                // Admit nothing until in flight is below the new capacity, then deal again.
                for stripe in self.stripes.iter() {
                    stripe.share.store(0, Ordering::SeqCst);
                }
                core.draining.store(true, Ordering::Release);
                self.try_redeal();
            } else if capacity > old {
                let n = self.stripes.len();
                for (i, stripe) in self.stripes.iter().enumerate() {
                    stripe
                        .share
                        .fetch_add(deal(capacity - old, n, i), Ordering::SeqCst);
                }
            }
        } else if capacity > old {
            core.global
                .fetch_add((capacity - old) as isize, Ordering::SeqCst);
            self.grant_from_pools(&mut queue);
        } else if capacity < old {
            core.global
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

    pub(crate) fn capacity(&self) -> usize {
        self.core.capacity.load(Ordering::SeqCst)
    }

    /// Free permits (may be negative while a shrink's debt is unpaid).
    fn free(&self) -> isize {
        let striped: usize = self
            .stripes
            .iter()
            .map(|s| s.free.load(Ordering::SeqCst))
            .sum();
        self.core.global.load(Ordering::SeqCst) + striped as isize
    }

    pub(crate) fn in_flight(&self) -> usize {
        if self.core.counted {
            return self.stripes.iter().map(Stripe::counted_in_flight).sum();
        }
        let in_flight = self.capacity() as isize - self.free();
        in_flight.max(0) as usize
    }

    pub(crate) fn available(&self) -> usize {
        if self.core.counted {
            return self.capacity().saturating_sub(self.in_flight());
        }
        self.free().max(0) as usize
    }

    pub(crate) fn waiting(&self) -> usize {
        self.core.waiting.load(Ordering::SeqCst)
    }

    pub(crate) fn rejected(&self) -> u64 {
        self.core.rejected.load(Ordering::Relaxed)
    }

    pub(crate) fn expired(&self) -> u64 {
        self.core.expired.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulkhead")
            .field("capacity", &self.capacity())
            .field("in_flight", &self.in_flight())
            .field("waiting", &self.waiting())
            .field("max_wait", &self.core.config.max_wait)
            .field("max_waiting", &self.core.config.max_waiting)
            .finish()
    }
}
