//! One event stream for every layer: state changes, rejections and retries as one typed enum.
//!
//! An [`EventBus`] is a broadcast channel of [`Event`]s. Give each layer a named
//! [`EventSource`] from it (`.events(bus.source("payments"))` on the layer's builder), and
//! subscribe once: alerting, metrics or logs hang off one place instead of one handle per
//! layer. Publishing costs nothing on the happy path: only state changes, rejections and
//! retries publish, and only while someone is subscribed.
//!
//! A subscriber that falls more than the bus's capacity behind misses the oldest events and is
//! told how many ([`RecvError::Lagged`](tokio::sync::broadcast::error::RecvError::Lagged)).
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "circuit-breaker")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! use seawall::circuit_breaker::CircuitBreakerLayer;
//! use seawall::events::{Event, EventBus, EventKind};
//!
//! let bus = EventBus::new(1024);
//! let mut events = bus.subscribe();
//! let breaker = CircuitBreakerLayer::consecutive_failures(3)
//!     .events(bus.source("payments"))
//!     .build()?;
//! breaker.handle().force_open();
//!
//! let event: Event = events.recv().await?;
//! assert_eq!(event.source(), "payments");
//! assert!(matches!(event.kind(), EventKind::StateChanged { to: "FORCED_OPEN", .. }));
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "circuit-breaker"))]
//! # fn main() {}
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast;

/// One thing that happened in a layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    source: Arc<str>,
    layer: &'static str,
    kind: EventKind,
}

impl Event {
    /// The name the layer was given with [`EventBus::source`].
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The kind of layer: `"circuit_breaker"`, `"bulkhead"`, `"retry"` or `"rate_limit"`, as in
    /// the `tracing` targets `seawall::<layer>`.
    pub fn layer(&self) -> &'static str {
        self.layer
    }

    /// What happened.
    pub fn kind(&self) -> &EventKind {
        &self.kind
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: ", self.layer, self.source)?;
        match &self.kind {
            EventKind::StateChanged { from, to, .. } => write!(f, "{from} -> {to}"),
            EventKind::Rejected { retry_after } => match retry_after {
                Some(d) => write!(f, "rejected a call; retry after {d:?}"),
                None => f.write_str("rejected a call"),
            },
            EventKind::Retrying { attempt, delay } => {
                write!(f, "attempt {attempt} failed; retrying after {delay:?}")
            }
            EventKind::RetryBudgetExhausted => {
                f.write_str("retry budget empty; returning the last result")
            }
            EventKind::CallPermitted => f.write_str("call permitted"),
            EventKind::CallFinished => f.write_str("call finished"),
            EventKind::FailureRateExceeded {
                failure_rate,
                slow_call_rate,
            } => write!(
                f,
                "failure rate {failure_rate:.3}, slow-call rate {slow_call_rate:.3}: a threshold was reached"
            ),
        }
    }
}

/// What happened, by kind.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EventKind {
    /// A circuit breaker changed state (`from` and `to` are the states' names, such as
    /// `"CLOSED"`, `"OPEN"`, `"HALF_OPEN"`, `"FORCED_OPEN"`, `"DISABLED"`).
    StateChanged {
        /// The state before.
        from: &'static str,
        /// The state after.
        to: &'static str,
        /// When the breaker opened: how long it stays open.
        open_for: Option<Duration>,
    },
    /// The layer refused a call (open circuit, full bulkhead, rate limit reached).
    Rejected {
        /// When the call may be tried again, where the layer knows.
        retry_after: Option<Duration>,
    },
    /// The retry layer starts attempt `attempt + 1`, having waited `delay` since attempt
    /// `attempt` failed. Published when the retry starts, not when it is scheduled: a call
    /// dropped during its backoff, or refused by the budget when the backoff ends, publishes
    /// none.
    Retrying {
        /// The attempt that failed, from 1.
        attempt: u32,
        /// How long the layer waited before this attempt.
        delay: Duration,
    },
    /// The retry layer wanted to retry but its budget was empty.
    RetryBudgetExhausted,
    /// A bulkhead admitted a call (with [`call_events`](crate::bulkhead::BulkheadBuilder::call_events)
    /// on).
    CallPermitted,
    /// A call a bulkhead admitted finished, completed, failed, panicked or dropped, and gave
    /// its permit back (with [`call_events`](crate::bulkhead::BulkheadBuilder::call_events)
    /// on).
    CallFinished,
    /// A circuit breaker's window reached its failure-rate or slow-call-rate threshold (the
    /// rates of the window, `0.0..=1.0`): published before the trip's `StateChanged`, and in
    /// [metrics-only](crate::circuit_breaker::Builder::metrics_only) mode the way to see what a
    /// threshold would do (Resilience4j's `FailureRateExceeded` / `SlowCallRateExceeded`).
    FailureRateExceeded {
        /// The window's failure rate.
        failure_rate: f64,
        /// The window's slow-call rate.
        slow_call_rate: f64,
    },
}

/// The most events a channel keeps for its slowest subscriber: an [`EventBus`]'s capacity is
/// cut to it, and a circuit breaker's `event_capacity` above it is refused. The channel's
/// buffer is allocated whole when it is made (rounded up to a power of two), so the bound also
/// bounds that allocation; a subscriber that falls thousands of events behind has stopped
/// reading, and more room would not save it.
pub const MAX_CAPACITY: usize = 4096;

/// A broadcast channel of [`Event`]s that layers publish to.
///
/// # Clone
/// Clones publish to and subscribe from the same channel.
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
}

impl EventBus {
    /// A bus that keeps up to `capacity` events for its slowest subscriber, at least 1 and at
    /// most [`MAX_CAPACITY`] (a value outside is taken as the nearest bound).
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.clamp(1, MAX_CAPACITY));
        Self { tx }
    }

    /// Receives every event published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }

    /// A named source for one layer to publish through (give it to the layer's builder's
    /// `.events(...)`).
    pub fn source(&self, name: impl Into<Arc<str>>) -> EventSource {
        EventSource {
            name: name.into(),
            tx: self.tx.clone(),
        }
    }
}

impl Default for EventBus {
    /// A bus with room for 1024 events.
    fn default() -> Self {
        Self::new(1024)
    }
}

/// A named publisher on an [`EventBus`], given to one layer.
#[derive(Debug, Clone)]
pub struct EventSource {
    name: Arc<str>,
    tx: broadcast::Sender<Event>,
}

impl EventSource {
    /// The name events from this source carry.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Publishes `kind` from `layer`, if anyone is listening.
    #[allow(dead_code)]
    pub(crate) fn publish(&self, layer: &'static str, kind: EventKind) {
        if self.tx.receiver_count() == 0 {
            return;
        }
        // No receiver left between the check and the send is fine: the event had no reader.
        let _ = self.tx.send(Event {
            source: Arc::clone(&self.name),
            layer,
            kind,
        });
    }
}

impl PartialEq for EventSource {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && self.tx.same_channel(&other.tx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_carry_source_and_layer() {
        let bus = EventBus::new(8);
        let mut rx = bus.subscribe();
        let source = bus.source("search");
        source.publish(
            "bulkhead",
            EventKind::Rejected {
                retry_after: Some(Duration::from_secs(1)),
            },
        );
        let e = rx.recv().await.unwrap();
        assert_eq!(e.source(), "search");
        assert_eq!(e.layer(), "bulkhead");
        assert_eq!(
            e.to_string(),
            "bulkhead search: rejected a call; retry after 1s"
        );
    }

    #[test]
    fn capacity_is_cut_to_its_bounds() {
        use tokio::sync::broadcast::error::TryRecvError;
        for (asked, kept) in [
            (0, 1),
            (1, 1),
            (usize::MAX, MAX_CAPACITY),
            (1 << 62, MAX_CAPACITY),
        ] {
            let bus = EventBus::new(asked);
            let mut rx = bus.subscribe();
            let source = bus.source("x");
            for _ in 0..=kept {
                source.publish("retry", EventKind::RetryBudgetExhausted);
            }
            // One more than the capacity: the oldest is lost, the rest are kept.
            assert!(
                matches!(rx.try_recv(), Err(TryRecvError::Lagged(1))),
                "{asked}"
            );
            for _ in 0..kept {
                rx.try_recv().unwrap();
            }
            assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)), "{asked}");
        }
    }

    #[test]
    fn publishing_without_subscribers_is_a_no_op() {
        let bus = EventBus::new(1);
        let source = bus.source("x");
        source.publish("retry", EventKind::RetryBudgetExhausted);
        // A subscriber that arrives later sees nothing from before.
        let mut rx = bus.subscribe();
        assert!(rx.try_recv().is_err());
    }
}
