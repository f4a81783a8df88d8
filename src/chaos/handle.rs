use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::faults::Faults;
use super::state::Shared;
use crate::error::ConfigError;

/// Runtime control of one chaos layer, from [`ChaosLayer::handle`] or [`Chaos::handle`]:
/// switch it on and off, change the fault mix, restart the random stream, read the counters.
///
/// [`ChaosLayer::handle`]: super::ChaosLayer::handle
/// [`Chaos::handle`]: super::Chaos::handle
#[derive(Debug, Clone)]
pub struct ChaosHandle {
    shared: Arc<Shared>,
}

/// What a chaos layer has drawn and injected since it was built, from
/// [`ChaosHandle::metrics`]. Calls made while the layer was off are not counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ChaosMetrics {
    /// Calls the layer drew a fate for (made while it was on).
    pub drawn: u64,
    /// Of those, calls delayed.
    pub delayed: u64,
    /// Calls failed with an injected error.
    pub errors: u64,
    /// Calls answered with an injected status.
    pub statuses: u64,
    /// Calls left hanging.
    pub hangs: u64,
    /// Calls failed as dropped connections.
    pub disconnects: u64,
}

impl ChaosHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Starts injecting faults. A fault mix set before is seen by every call that sees the
    /// layer on.
    pub fn enable(&self) {
        self.shared.set_enabled(true);
        tracing::info!(target: "seawall::chaos", "chaos enabled");
    }

    /// Stops injecting faults: calls pass through, nothing is drawn or counted. Calls already
    /// delayed or hanging stay so.
    pub fn disable(&self) {
        self.shared.set_enabled(false);
        tracing::info!(target: "seawall::chaos", "chaos disabled");
    }

    /// Whether the layer injects faults now.
    pub fn is_enabled(&self) -> bool {
        self.shared.is_enabled()
    }

    /// The fault mix in force.
    pub fn faults(&self) -> Faults {
        self.shared.faults()
    }

    /// Replaces the fault mix, at once. A call that races with the change may draw against a
    /// mix of the old and new settings.
    ///
    /// # Errors
    /// A [`ConfigError`], as [`ChaosBuilder::build`](super::ChaosBuilder::build) gives, when
    /// the mix is invalid for this layer; the mix in force is then left as it was.
    pub fn set_faults(&self, faults: Faults) -> Result<(), ConfigError> {
        faults.validate(self.shared.http)?;
        self.shared.set_faults(faults);
        tracing::info!(target: "seawall::chaos", ?faults, "chaos faults set");
        Ok(())
    }

    /// Restarts the random stream from `seed`: calls made in the same order from here draw
    /// what a layer built with this seed would.
    pub fn reseed(&self, seed: u64) {
        self.shared.reseed(seed);
    }

    /// The counters.
    pub fn metrics(&self) -> ChaosMetrics {
        let c = &self.shared.counters;
        ChaosMetrics {
            drawn: c.drawn.load(Relaxed),
            delayed: c.delayed.load(Relaxed),
            errors: c.errors.load(Relaxed),
            statuses: c.statuses.load(Relaxed),
            hangs: c.hangs.load(Relaxed),
            disconnects: c.disconnects.load(Relaxed),
        }
    }
}
