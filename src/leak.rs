//! Shared state that response futures reach without an `Arc` clone per call.
//!
//! A `'static` response future that must touch its layer's shared state would clone an `Arc`
//! per call: two atomic read-modify-writes (about 20 ns on the 2-core VM the benches run on),
//! written to one cache line from every thread. The bulkhead and retry layers instead leak the
//! state of their first [`STATIC_BUILDS`] builds in a process, so a future copies a
//! `&'static`; a program that builds layers over and over (one per request, say) falls back to
//! an `Arc` past that number, which bounds the memory kept. Each layer counts its own builds
//! with a [`LeakBudget`].

use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// How many builds of one layer keep their state for the life of the program.
pub(crate) const STATIC_BUILDS: usize = 256;

/// A `&'static T` (leaked) for the first builds of a layer, an `Arc<T>` afterwards.
pub(crate) enum Leaked<T: 'static> {
    Static(&'static T),
    Counted(Arc<T>),
}

#[cfg(feature = "retry")]
impl<T> Leaked<T> {
    /// Leaks `value` if `budget` allows, else puts it behind an `Arc` (see [`LeakBudget::take`]
    /// for `ran_out`).
    pub(crate) fn new(value: T, budget: &LeakBudget, ran_out: impl FnOnce()) -> Self {
        if budget.take(ran_out) {
            Leaked::Static(Box::leak(Box::new(value)))
        } else {
            Leaked::Counted(Arc::new(value))
        }
    }
}

impl<T> Clone for Leaked<T> {
    #[inline]
    fn clone(&self) -> Self {
        match self {
            Leaked::Static(r) => Leaked::Static(r),
            Leaked::Counted(a) => Leaked::Counted(Arc::clone(a)),
        }
    }
}

impl<T> Deref for Leaked<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        match self {
            Leaked::Static(r) => r,
            Leaked::Counted(a) => a,
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Leaked<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}

/// One layer's count of leaked builds, at most [`STATIC_BUILDS`].
pub(crate) struct LeakBudget {
    used: AtomicUsize,
}

impl LeakBudget {
    pub(crate) const fn new() -> Self {
        Self {
            used: AtomicUsize::new(0),
        }
    }

    /// Whether this build may be leaked (one of the first [`STATIC_BUILDS`]). `ran_out` runs
    /// once, on the first build refused (the layer's own trace event, under its own target).
    pub(crate) fn take(&self, ran_out: impl FnOnce()) -> bool {
        let n = self.used.fetch_add(1, Ordering::Relaxed);
        if n < STATIC_BUILDS {
            return true;
        }
        if n == STATIC_BUILDS {
            ran_out();
        }
        // Keep the counter from ever wrapping.
        self.used.store(STATIC_BUILDS + 1, Ordering::Relaxed);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_builds_may_be_leaked_then_none() {
        let budget = LeakBudget::new();
        let mut ran_out = 0;
        for _ in 0..STATIC_BUILDS {
            assert!(budget.take(|| ran_out += 1));
        }
        assert_eq!(ran_out, 0);
        assert!(!budget.take(|| ran_out += 1));
        assert!(!budget.take(|| ran_out += 1));
        assert_eq!(ran_out, 1, "told once, on the first build refused");
    }
}
