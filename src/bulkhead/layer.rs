use std::sync::Arc;
use std::time::Duration;

use tower_layer::Layer;

use super::handle::BulkheadHandle;
use super::service::Bulkhead;
use super::state::{Config, Shared, MAX_CAPACITY};
use crate::error::{check, ConfigError};
use crate::events::EventSource;

const LAYER: &str = "bulkhead";

/// Caps how many calls are in flight through the services it builds: see [`crate::bulkhead`].
///
/// Built with [`BulkheadLayer::builder`].
///
/// # Clone
/// Every clone of a layer value, every service it builds and every clone of those share one
/// bulkhead: one capacity, one queue, one set of counters. A second, independent bulkhead is a
/// second layer value.
#[derive(Debug, Clone)]
pub struct BulkheadLayer {
    shared: Arc<Shared>,
}

impl BulkheadLayer {
    /// A builder with the defaults (see [`BulkheadBuilder`]).
    pub fn builder() -> BulkheadBuilder {
        BulkheadBuilder::default()
    }

    /// A bulkhead that admits `max_concurrent` calls at once and rejects the rest at once.
    ///
    /// # Errors
    /// A [`ConfigError`] when `max_concurrent` is zero or absurdly large.
    pub fn new(max_concurrent: usize) -> Result<Self, ConfigError> {
        Self::builder().max_concurrent(max_concurrent).build()
    }

    /// A handle on this bulkhead, for metrics and runtime control.
    pub fn handle(&self) -> BulkheadHandle {
        BulkheadHandle::new(Arc::clone(&self.shared))
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = Bulkhead<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Bulkhead::new(inner, self)
    }
}

/// Builds a [`BulkheadLayer`]; every setting is checked by [`build`](Self::build).
///
/// The defaults follow resilience4j's `BulkheadConfig` (the reference semaphore bulkhead):
///
/// | setting | default | anchor |
/// |---|---|---|
/// | [`max_concurrent`](Self::max_concurrent) | 25 | resilience4j `maxConcurrentCalls` = 25 |
/// | [`max_wait`](Self::max_wait) | 0 (reject at once) | resilience4j `maxWaitDuration` = 0 |
/// | [`max_waiting`](Self::max_waiting) | unbounded | resilience4j has no bound (threads block) |
/// | [`retry_after`](Self::retry_after) | none | a bulkhead cannot know when a call ends |
/// | [`call_events`](Self::call_events) | off | resilience4j publishes `CallPermitted` / `CallFinished` to consumers only |
#[derive(Debug, Clone)]
pub struct BulkheadBuilder {
    max_concurrent: usize,
    max_wait: Duration,
    max_waiting: Option<usize>,
    retry_after: Option<Duration>,
    events: Option<EventSource>,
    call_events: bool,
}

impl Default for BulkheadBuilder {
    fn default() -> Self {
        Self {
            max_concurrent: 25,
            max_wait: Duration::ZERO,
            max_waiting: None,
            retry_after: None,
            events: None,
            call_events: false,
        }
    }
}

impl BulkheadBuilder {
    /// How many calls may be in flight at once. Default 25; must be at least 1.
    pub fn max_concurrent(mut self, n: usize) -> Self {
        self.max_concurrent = n;
        self
    }

    /// How long a call may wait for a permit when the bulkhead is full before it is rejected
    /// with [`BulkheadFull`](crate::error::BulkheadFull). Waiting is first come, first served,
    /// and happens inside the response future.
    ///
    /// Default zero: reject at once (reject mode, the fastest path). At most a day
    /// ([`MAX_DELAY`](crate::error::MAX_DELAY)).
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// The most calls that may wait at once; one more is rejected at once. Default unbounded.
    /// Needs a non-zero [`max_wait`](Self::max_wait); must be at least 1.
    pub fn max_waiting(mut self, n: usize) -> Self {
        self.max_waiting = Some(n);
        self
    }

    /// A `retry_after` hint to put on every rejection (and so a `Retry-After` header with the
    /// HTTP face), typically your calls' usual duration. Default none: a bulkhead frees a permit
    /// when some call ends, which it cannot foresee, so it does not guess. `0s < x <= 1 day`
    /// ([`MAX_DELAY`](crate::error::MAX_DELAY)).
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    /// Also publish rejections to an [`EventBus`](crate::events::EventBus), as events of
    /// `source` (one stream for every layer; see [`crate::events`]).
    pub fn events(mut self, source: EventSource) -> Self {
        self.events = Some(source);
        self
    }

    /// Also publish an event when a call is admitted
    /// ([`CallPermitted`](crate::events::EventKind::CallPermitted)) and when it finishes,
    /// completed, failed, panicked or dropped
    /// ([`CallFinished`](crate::events::EventKind::CallFinished)), to the
    /// [`events`](Self::events) source if one is set, and as `TRACE` events under the target
    /// `seawall::bulkhead`. Rejections are published whatever this says.
    ///
    /// Default off: an event per call costs far more than the bulkhead itself (a broadcast
    /// send takes the channel's lock), and a call off this switch pays one branch on a flag
    /// for it. A waiting call is admitted when it gets its permit, not when it is queued.
    ///
    /// # Example
    ///
    /// ```
    /// use seawall::bulkhead::BulkheadLayer;
    /// use seawall::events::{EventBus, EventKind};
    /// use tower::{service_fn, BoxError, Layer, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), BoxError> {
    /// let bus = EventBus::new(16);
    /// let mut events = bus.subscribe();
    /// let layer = BulkheadLayer::builder()
    ///     .events(bus.source("db"))
    ///     .call_events(true)
    ///     .build()?;
    /// let svc = layer.layer(service_fn(|n: u32| async move { Ok::<_, BoxError>(n) }));
    /// svc.oneshot(7).await?;
    /// assert_eq!(*events.recv().await?.kind(), EventKind::CallPermitted);
    /// assert_eq!(*events.recv().await?.kind(), EventKind::CallFinished);
    /// # Ok(())
    /// # }
    /// ```
    pub fn call_events(mut self, on: bool) -> Self {
        self.call_events = on;
        self
    }

    /// Checks the settings and builds the layer.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field when `max_concurrent` is zero or above
    /// `isize::MAX / 4`, when `max_wait` is longer than a day, when `retry_after` is zero or
    /// longer than a day, when `max_waiting` is zero, or when `max_waiting` is set without a
    /// `max_wait`.
    pub fn build(self) -> Result<BulkheadLayer, ConfigError> {
        check::count(LAYER, "max_concurrent", self.max_concurrent, MAX_CAPACITY)?;
        if !self.max_wait.is_zero() {
            check::delay(LAYER, "max_wait", self.max_wait)?;
        }
        if let Some(retry_after) = self.retry_after {
            check::delay(LAYER, "retry_after", retry_after)?;
        }
        if let Some(n) = self.max_waiting {
            check::count(LAYER, "max_waiting", n, usize::MAX)?;
            if self.max_wait.is_zero() {
                return Err(ConfigError::new(
                    LAYER,
                    "max_waiting",
                    n,
                    "only with a non-zero `max_wait` (callers wait only then)",
                ));
            }
        }
        let config = Config {
            max_wait: (!self.max_wait.is_zero()).then_some(self.max_wait),
            max_waiting: self.max_waiting,
            retry_after: self.retry_after,
            events: self.events,
            call_events: self.call_events,
        };
        Ok(BulkheadLayer {
            shared: Arc::new(Shared::new(self.max_concurrent, config)),
        })
    }
}
