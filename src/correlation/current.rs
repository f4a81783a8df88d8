//! The task's current id: a per-thread slot that a future fills with its id while it is polled,
//! as `tokio::task_local!` does, but with the id kept in the future itself rather than in a
//! wrapping `TaskLocalFuture`, which saves the server layer a move of the whole inner future
//! and a borrow flag per poll.

use std::cell::Cell;
use std::mem::ManuallyDrop;

use super::CorrelationId;

thread_local! {
    // `ManuallyDrop`: a thread local without drop glue needs no destructor registered nor a
    // liveness check on each access (guarded by `benches/correlation.rs`). Nothing leaks: the
    // slot is empty whenever no guard is alive, as at the thread's exit.
    static CURRENT: ManuallyDrop<Cell<Option<CorrelationId>>> =
        const { ManuallyDrop::new(Cell::new(None)) };
}

/// Calls `f` with the current id, if there is one.
#[inline]
pub(crate) fn with<R>(f: impl FnOnce(&CorrelationId) -> R) -> Option<R> {
    CURRENT
        .try_with(|current| {
            let id = current.take();
            let out = id.as_ref().map(f);
            current.set(id);
            out
        })
        .ok()
        .flatten()
}

/// Makes the id in `slot`, if there is one, the current id until the guard drops; the guard
/// then puts it back in `slot` and the previous current id back in place, also when the
/// poll it wraps panics. `None` (and no change) when `slot` is empty. (The thread local has
/// no destructor, so it is reachable even while the thread's other locals are torn down.)
#[inline]
pub(crate) fn enter(slot: &mut Option<CorrelationId>) -> Option<Entered<'_>> {
    if slot.is_none() {
        return None;
    }
    exchange(slot);
    Some(Entered { slot })
}

/// Exchanges the id in `slot` with the current one. `replace` rather than `Cell::swap`, which
/// also checks that the two do not overlap.
#[inline]
fn exchange(slot: &mut Option<CorrelationId>) {
    // Cannot fail: the thread local has no destructor.
    let _ = CURRENT.try_with(|current| *slot = current.replace(slot.take()));
}

/// Keeps an id current: see [`enter`].
pub(crate) struct Entered<'a> {
    slot: &'a mut Option<CorrelationId>,
}

impl Drop for Entered<'_> {
    #[inline]
    fn drop(&mut self) {
        exchange(self.slot);
    }
}
