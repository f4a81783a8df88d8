//! State shared by every clone of every service one layer value builds.

use super::backoff::{Backoff, SeedSource};
use super::budget::RetryBudget;
use super::handle::{Metrics, RetryEvent};
use std::fmt;
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The validated configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    pub(crate) max_attempts: u32,
    pub(crate) backoff: Backoff,
    pub(crate) max_retry_after: Duration,
    pub(crate) attempt_timeout: Option<Duration>,
    pub(crate) deadline: Option<Duration>,
    /// Whether a call needs a timer from its start: a per-attempt timeout or a deadline is
    /// set. Kept apart so that the success path reads one byte.
    pub(crate) timed: bool,
}

pub(crate) type OnRetry = Arc<dyn Fn(&RetryEvent<'_>) + Send + Sync>;

/// Everything a retry needs besides the policy.
pub(crate) struct Core {
    pub(crate) config: Config,
    pub(crate) budget: Option<RetryBudget>,
    pub(crate) metrics: Metrics,
    pub(crate) seeds: SeedSource,
    pub(crate) on_retry: Option<OnRetry>,
    pub(crate) events: Option<crate::events::EventSource>,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("config", &self.config)
            .field("budget", &self.budget)
            .field("metrics", &self.metrics)
            .field("on_retry", &self.on_retry.is_some())
            .finish()
    }
}

/// How many layer builds keep their state for the life of the program (see [`CoreRef`]).
const STATIC_BUILDS: usize = 256;
static STATIC_USED: AtomicUsize = AtomicUsize::new(0);

/// A reference to the shared [`Core`] that costs nothing to copy for the first 256 layer
/// builds of a process, and a reference count afterwards.
///
/// Every response future must reach the shared state in case it has to retry. An `Arc` clone
/// and drop per call are two atomic read-modify-writes (about 20 ns on the 2-core VM the
/// benches run on, four bare calls), and they write one cache line from every thread. So the
/// first `STATIC_BUILDS` cores are leaked (a few hundred bytes each, for the life of the
/// program): copying a `&'static` is free. A program that builds layers over and over (one per
/// request, say) falls back to an `Arc` past that number, which bounds the memory kept.
#[derive(Clone)]
pub(crate) enum CoreRef {
    Static(&'static Core),
    Counted(Arc<Core>),
}

impl CoreRef {
    pub(crate) fn new(core: Core) -> Self {
        let n = STATIC_USED.fetch_add(1, Ordering::Relaxed);
        if n < STATIC_BUILDS {
            return CoreRef::Static(Box::leak(Box::new(core)));
        }
        if n == STATIC_BUILDS {
            tracing::debug!(
                target: "seawall::retry",
                "more than {STATIC_BUILDS} retry layers built; later ones are reference-counted"
            );
        }
        // Keep the counter from ever wrapping.
        STATIC_USED.store(STATIC_BUILDS + 1, Ordering::Relaxed);
        CoreRef::Counted(Arc::new(core))
    }

    #[cfg(test)]
    pub(crate) fn counted(core: Core) -> Self {
        CoreRef::Counted(Arc::new(core))
    }
}

impl Deref for CoreRef {
    type Target = Core;

    #[inline]
    fn deref(&self) -> &Core {
        match self {
            CoreRef::Static(core) => core,
            CoreRef::Counted(core) => core,
        }
    }
}

impl fmt::Debug for CoreRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
    }
}
