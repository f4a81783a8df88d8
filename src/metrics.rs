//! The [event stream](crate::events) as [`metrics`](https://docs.rs/metrics) counters, a gauge
//! and a histogram, for any exporter of the `metrics` facade (Prometheus, StatsD, OpenTelemetry,
//! ...). Feature `metrics`, off by default.
//!
//! [`record`] subscribes to an [`EventBus`] and returns a future that records every event it
//! receives with the recorder installed where it runs; spawn it once. Layers keep publishing
//! to the bus as they always do, so the calls stay free of metrics work: the happy path
//! publishes nothing (only rejections, retries and state changes do), and publishing is one
//! send on a broadcast channel that never waits for the recording, whatever the recorder
//! costs (about 80 ns added to a rejection on the development VM).
//!
//! # Metrics
//!
//! Every metric but the last carries the labels `layer` (`"circuit_breaker"`, `"bulkhead"`,
//! `"retry"`, `"rate_limit"`: [`Event::layer`]) and `name` (the source's name given to
//! [`EventBus::source`]).
//!
//! | metric | kind | extra labels | recorded on |
//! |---|---|---|---|
//! | `seawall_calls_rejected_total` | counter | | a layer refused a call (open circuit, full bulkhead, rate limit reached) |
//! | `seawall_retries_total` | counter | | the retry layer is about to retry |
//! | `seawall_retry_delay_seconds` | histogram | | the wait before that retry |
//! | `seawall_retry_budget_exhausted_total` | counter | | a retry was wanted, but the budget was empty |
//! | `seawall_circuit_state` | gauge | | a breaker changed state: `0` closed, `1` half-open, `2` open, `3` forced open, `-1` disabled |
//! | `seawall_circuit_transitions_total` | counter | `from`, `to` (`closed`, `open`, `half_open`, `forced_open`, `disabled`) | a breaker changed state |
//! | `seawall_events_lagged_total` | counter | none | events the recording fell too far behind to see (the bus's capacity was exceeded) |
//!
//! The names are also constants in this module ([`CALLS_REJECTED`], ...). What the events do
//! not carry is not here: calls that went through, calls in flight, a breaker's failure rate.
//! Those are in each layer's handle (`metrics()` snapshots), to read when you scrape.
//!
//! A breaker's gauge appears with its first state change; until then the breaker is closed.
//! A recording that falls more than the bus's capacity behind misses the oldest events and
//! counts them in `seawall_events_lagged_total`: give the bus room for the bursts you expect
//! (rejections come in bursts).
//!
//! # Why a facade
//!
//! `metrics` is to metrics what `log` is to logs: a library records, the application picks
//! the exporter. Recording from the event stream rather than inside the layers keeps the
//! recorder's work (a label lookup, an allocation for the `name` label) out of the calls; a
//! layer that recorded every call itself would pay it on the happy path.
//!
//! # Example
//!
//! ```
//! # #[cfg(feature = "rate-limit")]
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! use std::time::Duration;
//! use seawall::events::EventBus;
//! use seawall::rate_limit::RateLimitLayer;
//! use tower::{service_fn, BoxError, Layer, ServiceExt};
//!
//! // Install an exporter first (`metrics_exporter_prometheus::PrometheusBuilder`, ...).
//! let bus = EventBus::new(1024);
//! tokio::spawn(seawall::metrics::record(&bus));
//!
//! let limit = RateLimitLayer::builder()
//!     .rate(1, Duration::from_secs(1))
//!     .events(bus.source("api"))
//!     .build()?;
//! let svc = limit.layer(service_fn(|_: ()| async { Ok::<_, BoxError>(()) }));
//! svc.clone().oneshot(()).await?;
//! // Refused: seawall_calls_rejected_total{layer="rate_limit",name="api"} goes up by one.
//! assert!(svc.oneshot(()).await.is_err());
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "rate-limit"))]
//! # fn main() {}
//! ```

use std::future::Future;

use ::metrics::{Label, Unit};
use tokio::sync::broadcast::error::RecvError;

use crate::events::{Event, EventBus, EventKind};

/// Counter: calls a layer refused. Labels `layer`, `name`.
pub const CALLS_REJECTED: &str = "seawall_calls_rejected_total";
/// Counter: retries the retry layer made. Labels `layer`, `name`.
pub const RETRIES: &str = "seawall_retries_total";
/// Histogram: the wait before each retry, in seconds. Labels `layer`, `name`.
pub const RETRY_DELAY: &str = "seawall_retry_delay_seconds";
/// Counter: retries not made because the budget was empty. Labels `layer`, `name`.
pub const RETRY_BUDGET_EXHAUSTED: &str = "seawall_retry_budget_exhausted_total";
/// Gauge: a breaker's state, `0` closed, `1` half-open, `2` open, `3` forced open, `-1`
/// disabled. Labels `layer`, `name`.
pub const CIRCUIT_STATE: &str = "seawall_circuit_state";
/// Counter: a breaker's state changes. Labels `layer`, `name`, `from`, `to`.
pub const CIRCUIT_TRANSITIONS: &str = "seawall_circuit_transitions_total";
/// Counter: events the recording missed because it fell behind. No labels.
pub const EVENTS_LAGGED: &str = "seawall_events_lagged_total";

/// Subscribes to `bus` now and returns a future that records every event from then on with
/// [`record_event`]. Spawn it.
///
/// The future ends when the bus and every source of it are gone; as a retry layer keeps its
/// state (and so its source) for the life of the program, expect it to run as long. It also
/// describes the metrics ([`describe`]) to the recorder installed when it is called.
pub fn record(bus: &EventBus) -> impl Future<Output = ()> + Send + 'static {
    describe();
    let mut events = bus.subscribe();
    async move {
        loop {
            match events.recv().await {
                Ok(event) => record_event(&event),
                Err(RecvError::Lagged(missed)) => {
                    ::metrics::counter!(EVENTS_LAGGED).increment(missed)
                }
                Err(RecvError::Closed) => return,
            }
        }
    }
}

/// Records one event, for a subscriber loop of your own.
pub fn record_event(event: &Event) {
    if matches!(
        event.kind(),
        EventKind::CallPermitted | EventKind::CallFinished
    ) {
        // Per-call events: a handle's `in_flight` is the figure to export, not a counter here.
        return;
    }
    let labels = vec![
        Label::new("layer", event.layer()),
        Label::new("name", event.source().to_owned()),
    ];
    match *event.kind() {
        EventKind::Rejected { .. } => ::metrics::counter!(CALLS_REJECTED, labels).increment(1),
        EventKind::Retrying { delay, .. } => {
            ::metrics::counter!(RETRIES, labels.iter()).increment(1);
            ::metrics::histogram!(RETRY_DELAY, labels).record(delay);
        }
        EventKind::RetryBudgetExhausted => {
            ::metrics::counter!(RETRY_BUDGET_EXHAUSTED, labels).increment(1);
        }
        // The state change that follows is what is exported.
        EventKind::CallPermitted
        | EventKind::CallFinished
        | EventKind::FailureRateExceeded { .. } => {}
        EventKind::StateChanged { from, to, .. } => {
            ::metrics::gauge!(CIRCUIT_STATE, labels.iter()).set(state_value(to));
            let mut labels = labels;
            labels.push(Label::new("from", state_label(from)));
            labels.push(Label::new("to", state_label(to)));
            ::metrics::counter!(CIRCUIT_TRANSITIONS, labels).increment(1);
        }
    }
}

/// Describes every metric above (unit and help text) to the recorder installed now;
/// [`record`] does it for you.
pub fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        CALLS_REJECTED,
        Unit::Count,
        "Calls a seawall layer refused (open circuit, full bulkhead, rate limit reached)."
    );
    describe_counter!(RETRIES, Unit::Count, "Retries a seawall retry layer made.");
    describe_histogram!(
        RETRY_DELAY,
        Unit::Seconds,
        "The wait before each retry of a seawall retry layer."
    );
    describe_counter!(
        RETRY_BUDGET_EXHAUSTED,
        Unit::Count,
        "Retries a seawall retry layer did not make because its budget was empty."
    );
    describe_gauge!(
        CIRCUIT_STATE,
        "A seawall circuit breaker's state: 0 closed, 1 half-open, 2 open, 3 forced open, -1 disabled."
    );
    describe_counter!(
        CIRCUIT_TRANSITIONS,
        Unit::Count,
        "State changes of a seawall circuit breaker."
    );
    describe_counter!(
        EVENTS_LAGGED,
        Unit::Count,
        "seawall events the metrics recording missed because it fell behind the event bus."
    );
}

/// The gauge's value for a state name as the breaker publishes it.
fn state_value(state: &str) -> f64 {
    match state {
        "CLOSED" => 0.0,
        "HALF_OPEN" => 1.0,
        "OPEN" => 2.0,
        "FORCED_OPEN" => 3.0,
        // DISABLED, and any state a later version adds: not tracking.
        _ => -1.0,
    }
}

/// A state name in the lower case label values usually have.
fn state_label(state: &'static str) -> &'static str {
    match state {
        "CLOSED" => "closed",
        "HALF_OPEN" => "half_open",
        "OPEN" => "open",
        "FORCED_OPEN" => "forced_open",
        "DISABLED" => "disabled",
        other => other,
    }
}
