//! State shared by every clone of every service one layer value builds.

use super::backoff::{Backoff, Jitter, SeedSource};
use super::budget::RetryBudget;
use super::handle::{Metrics, RetryEvent};
use crate::leak::{LeakBudget, Leaked, STATIC_BUILDS};
use std::fmt;
use std::sync::atomic::AtomicU64;
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

/// A core that no call uses: what a service's success-path field points at when its layer is
/// never on the success path (see `LocalCount` in the service), so that the field needs no
/// `Option` and the success path no test of it.
pub(crate) static PLACEHOLDER: Core = Core {
    config: Config {
        max_attempts: 1,
        backoff: Backoff {
            initial: Duration::ZERO,
            multiplier: 1.0,
            step: Duration::ZERO,
            max: Duration::ZERO,
            jitter: Jitter::None,
        },
        max_retry_after: Duration::ZERO,
        attempt_timeout: None,
        deadline: None,
        timed: false,
    },
    budget: None,
    metrics: Metrics {
        calls: AtomicU64::new(0),
        retries: AtomicU64::new(0),
        budget_rejections: AtomicU64::new(0),
        exhausted: AtomicU64::new(0),
        succeeded_after_retry: AtomicU64::new(0),
    },
    seeds: SeedSource::new(0),
    on_retry: None,
    events: None,
};

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

/// A reference to the shared [`Core`] that costs nothing to copy for the first
/// [`STATIC_BUILDS`](crate::leak::STATIC_BUILDS) retry layers built in a process, and a
/// reference count afterwards (see [`crate::leak`]): every response future must reach the
/// shared state in case it has to retry.
pub(crate) type CoreRef = Leaked<Core>;

static LEAKS: LeakBudget = LeakBudget::new();

/// The reference a newly built layer keeps its core behind.
pub(crate) fn core_ref(core: Core) -> CoreRef {
    Leaked::new(core, &LEAKS, || {
        tracing::debug!(
            target: "seawall::retry",
            "more than {STATIC_BUILDS} retry layers built; later ones are reference-counted"
        )
    })
}

/// A reference-counted core whatever the budget, for tests of that path.
#[cfg(test)]
pub(crate) fn counted_core_ref(core: Core) -> CoreRef {
    Leaked::Counted(Arc::new(core))
}
