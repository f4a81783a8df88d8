//! The atomics and locks of every lock-free protocol in the crate, from `std` or, in a build
//! with `RUSTFLAGS="--cfg seawall_loom"`, from [loom](https://docs.rs/loom), which runs the
//! models under `src/loom_models/` through every interleaving (as tokio's `src/loom` shim does).
//!
//! A custom cfg name rather than `loom`: tokio reads `cfg(loom)` too and does not build as a
//! dependency under it. Statics keep `std` types (loom's have no `const fn new`); a protocol
//! that a model checks keeps its state in fields built inside the model.

// Each layer uses a part of this module; a build with some of them leaves the rest unused.
#![cfg_attr(
    not(all(
        feature = "circuit-breaker",
        feature = "bulkhead",
        feature = "rate-limit",
        feature = "retry"
    )),
    allow(dead_code)
)]

// Not every layer that needs the shim needs all of it (a retry-only build uses no atomics here).
#[cfg(not(seawall_loom))]
#[allow(unused_imports)]
pub(crate) use std::sync::{atomic, Mutex, MutexGuard};

#[cfg(seawall_loom)]
#[allow(unused_imports)]
pub(crate) use loom::sync::{atomic, Mutex, MutexGuard};

/// Locks `m`, ignoring poison: no code in this crate panics while it holds a lock, and a
/// waker or a subscriber that did must not wedge the layer.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Lets another thread run while this one waits for a short, bounded step of another (a
/// bucket being rolled over). Under loom, a yield point of the model.
#[inline]
pub(crate) fn spin() {
    #[cfg(not(seawall_loom))]
    std::thread::yield_now();
    #[cfg(seawall_loom)]
    loom::thread::yield_now();
}
